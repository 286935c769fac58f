"""A small forward (and backward, where built) per mask type, for compute-sanitizer runs."""
import math
import sys

import torch

sys.path.insert(0, "python")
import flash_sigmoid  # noqa: E402

torch.manual_seed(0)
for causal, window, alibi in ((False, (-1, -1), False), (True, (-1, -1), False), (False, (9, 4), True)):
    q = torch.randn(2, 77, 4, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 131, 2, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, 131, 2, 64, device="cuda", dtype=torch.bfloat16)
    slopes = torch.rand(4, device="cuda") if alibi else None
    flash_sigmoid.forward(q, k, v, sigmoid_bias=-math.log(131), causal=causal, window_size=window, alibi_slopes=slopes)
torch.cuda.synchronize()
print("sanitize case done")

"""A small forward and backward per mask type and head dim 64 / 128 through the Python package, for
compute-sanitizer. (The C++ GPU test covers the forward without torch; this adds the backward
kernels: on an H100 the sm90 family in the default mode, the sm80 family in the deterministic mode
and by name.)"""
import math
import sys

import torch

sys.path.insert(0, "python")
import flash_sigmoid  # noqa: E402

torch.manual_seed(0)
for d in (64, 128):
    for causal, window, alibi in ((False, (-1, -1), False), (True, (-1, -1), False), (False, (9, 4), True)):
        q = torch.randn(2, 77, 4, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, 131, 2, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(2, 131, 2, d, device="cuda", dtype=torch.bfloat16)
        slopes = torch.rand(4, device="cuda") if alibi else None
        kw = dict(sigmoid_bias=-math.log(131), causal=causal, window_size=window, alibi_slopes=slopes)
        flash_sigmoid.forward(q, k, v, **kw)
        if torch.cuda.get_device_capability() == (9, 0):
            for variant in ("cp_async", "ws_lockstep", "ws_wide", "ws_deep", "ws_persistent", "ws_relu"):  # the sm90 forward's variants, where built
                if f"sm90a_fwd_{variant}_bf16_hdim{d}_mask_none" in flash_sigmoid.build_info():
                    flash_sigmoid.forward(q, k, v, kernel_arch=90, kernel_variant=variant, **kw)
        for deterministic, arch in ((False, 0), (True, 0), (False, 80)):
            if f"_bwd_bf16_hdim{d}_" not in flash_sigmoid.build_info():  # a forward-only build
                continue
            flash_sigmoid.backward(torch.randn_like(q), q, k, v, deterministic=deterministic, kernel_arch=arch, **kw)
torch.cuda.synchronize()
print("sanitize case done")

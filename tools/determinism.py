"""Runs the same forward 50 times on fixed inputs and reports whether every output is bitwise equal."""
import sys

import torch

sys.path.insert(0, "python")
import flash_sigmoid  # noqa: E402

torch.manual_seed(0)
q = torch.randn(2, 1023, 8, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(2, 1025, 2, 128, device="cuda", dtype=torch.bfloat16)
v = torch.randn(2, 1025, 2, 128, device="cuda", dtype=torch.bfloat16)
first = flash_sigmoid.forward(q, k, v, causal=True, sigmoid_bias=-7.0)
same = all(torch.equal(first, flash_sigmoid.forward(q, k, v, causal=True, sigmoid_bias=-7.0)) for _ in range(50))
print(f"forward bitwise identical over 50 runs: {same}")
sys.exit(0 if same else 1)

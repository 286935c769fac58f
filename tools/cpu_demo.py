"""The main job without a GPU: the CPU implementation on a small problem, checked against fp64."""
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "gpu"))
import flash_sigmoid  # noqa: E402
from reference import attention_reference  # noqa: E402

print("No CUDA GPU here: running FlashSigmoid's CPU implementation instead of the GPU benchmark.")
b, s, h, d = 2, 512, 8, 64
torch.manual_seed(0)
q, k, v = (torch.randn(b, s, h, d, dtype=torch.bfloat16) for _ in range(3))
bias = -math.log(s)
for causal in (False, True):
    t0 = time.perf_counter()
    out = flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal)
    ms = (time.perf_counter() - t0) * 1e3
    ref = attention_reference(q, k, v, sigmoid_bias=bias, causal=causal)
    same = attention_reference(q, k, v, sigmoid_bias=bias, causal=causal, dtype=torch.bfloat16)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    err_torch = ((same.double() - ref).norm() / ref.norm()).item()
    flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
    print(f"B={b} S={s} H={h} D={d} bf16 causal={causal}: {ms:.1f} ms ({flops / ms / 1e9:.3f} TFLOP/s on "
          f"{os.cpu_count()} cores), rel. error vs fp64 {err:.2e} (eager torch bf16: {err_torch:.2e})")
    assert err <= 2 * err_torch + 1e-6, "CPU implementation disagrees with the fp64 reference"
print("CPU implementation OK.")

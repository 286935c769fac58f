"""GPU tier: a trainable per-head / 0-dim sigmoid_bias and return_attn_probs on CUDA tensors (fp16,
bf16) agree with the CPU implementation's results (tests/python/test_bias_tensor_cpu.py checks those
against fp64 autograd): out, dq, dk, dv, dbias and S_dmask, with GQA, masks and ALiBi."""
import math

import pytest
import torch

from flash_sigmoid import flash_attn_func
from kernels import skip_unless_built

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d,kind", [(64, "heads"), (128, "scalar"), (40, "heads")])
def test_trainable_bias_matches_the_cpu_path(dtype, d, kind):
    skip_unless_built("fwd", dtype, d + 2)
    skip_unless_built("bwd", dtype, d + 2)
    g = torch.Generator().manual_seed(d)
    q, k, v = (torch.randn(2, s, h, d, generator=g).to(dtype) for s, h in ((77, 8), (130, 2), (130, 2)))
    slopes = torch.rand(8, generator=g) * 0.2
    init = torch.full((8,), -math.log(130)) + torch.linspace(-1, 1, 8) if kind == "heads" else torch.tensor(-math.log(130))
    dout = torch.randn(2, 77, 8, d, generator=g).to(dtype)
    results = {}
    for device in ("cpu", "cuda"):
        bias = init.clone().to(device).requires_grad_()
        qs, ks, vs = (t.to(device).requires_grad_() for t in (q, k, v))
        out, _, probs = flash_attn_func(qs, ks, vs, causal=True, window_size=(40, -1), alibi_slopes=slopes.to(device),
                                        sigmoid_bias=bias, return_attn_probs=True)
        grads = torch.autograd.grad(out, (qs, ks, vs, bias), dout.to(device))
        results[device] = [t.detach().double().cpu() for t in (out, probs, *grads)]
    for name, a, b in zip(("out", "probs", "dq", "dk", "dv", "dbias"), results["cpu"], results["cuda"]):
        err = (a - b).abs().max().item()
        assert err <= 3e-2 * max(1.0, a.abs().max().item()), f"{name}: {err}"

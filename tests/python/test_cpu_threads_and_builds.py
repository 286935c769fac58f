"""CPU tier: the CPU ops follow torch.get_num_threads() without changing a bit of their results, and
both CPU kernel builds (FLASH_SIGMOID_CPU_KERNELS=portable, and the best this CPU runs) match the
fp64 reference at sizes that span several tiles, forward and backward. Runs everywhere, no GPU."""
import math

import pytest
import torch

import flash_sigmoid
from reference import attention_reference


def _problem(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 203, 4, 40, generator=g).to(dtype)
    k = torch.randn(1, 113, 2, 40, generator=g).to(dtype)
    v = torch.randn(1, 113, 2, 40, generator=g).to(dtype)
    dout = torch.randn(1, 203, 4, 40, generator=g).to(dtype)
    return q, k, v, dout


def _grads(q, k, v, dout, **kw):
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out = flash_sigmoid.forward(q, k, v, **kw)
    out.backward(dout)
    return out.detach(), q.grad, k.grad, v.grad


def test_results_do_not_depend_on_torch_thread_count():
    q, k, v, dout = _problem()
    kw = dict(sigmoid_bias=-math.log(113), causal=True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(q, k, v, dout, **kw)
        torch.set_num_threads(3)
        three = _grads(q, k, v, dout, **kw)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, three):
        assert torch.equal(a, b)


@pytest.mark.parametrize("build", ["portable", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_kernel_builds_match_fp64_reference(build, dtype, monkeypatch):
    monkeypatch.setenv("FLASH_SIGMOID_CPU_KERNELS", build)
    q, k, v, dout = _problem(dtype)
    slopes = torch.rand(4, generator=torch.Generator().manual_seed(2))
    kw = dict(sigmoid_bias=0.0, window_size=(30, 7), alibi_slopes=slopes)
    got = _grads(q, k, v, dout, **kw)
    q64, k64, v64 = (t.double().requires_grad_(True) for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, **kw)
    ref.backward(dout.double())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, (ref.detach(), q64.grad, k64.grad, v64.grad)):
        err = (a.double() - b).norm() / b.norm()
        assert err < tol, f"{build} {name}: relative error {err:.2e}"

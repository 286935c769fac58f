"""CPU tier: flash_sigmoid.forward/backward (the library's own conventions, through the ops) on CPU
tensors against the fp64 reference and torch autograd; argument errors. Runs everywhere, no GPU."""
import math

import pytest
import torch

import flash_sigmoid
from reference import attention_reference

CASES = [
    # b, sq, sk, hq, hkv, d, causal, window, alibi, bias
    (2, 17, 17, 4, 4, 32, False, (-1, -1), False, 0.0),
    (1, 13, 40, 6, 2, 59, True, (-1, -1), True, -math.log(40)),
    (2, 40, 13, 3, 1, 24, False, (5, 2), False, -3.0),
    (1, 1, 1, 2, 1, 8, True, (-1, -1), True, 1.5),
    (2, 33, 65, 4, 2, 64, True, (7, -1), False, -math.log(65)),
]


def _inputs(b, sq, sk, hq, hkv, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, sq, hq, d, generator=g).to(dtype)
    k = torch.randn(b, sk, hkv, d, generator=g).to(dtype)
    v = torch.randn(b, sk, hkv, d, generator=g).to(dtype)
    return q, k, v


def _slopes(b, hq, use):
    return torch.rand(b, hq, generator=torch.Generator().manual_seed(1)) if use else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cpu_forward_matches_fp64_reference(case, dtype):
    b, sq, sk, hq, hkv, d, causal, window, alibi, bias = case
    q, k, v = _inputs(b, sq, sk, hq, hkv, d, dtype)
    kw = dict(sigmoid_bias=bias, causal=causal, window_size=window, alibi_slopes=_slopes(b, hq, alibi))
    out = flash_sigmoid.forward(q, k, v, **kw)
    ref = attention_reference(q, k, v, **kw)
    err = (out.double() - ref).abs().max().item()
    if dtype == torch.float32:
        assert err <= 1e-5 * max(1.0, ref.abs().max().item())
    else:
        same = attention_reference(q, k, v, dtype=dtype, **kw)
        assert err <= 2 * (same.double() - ref).abs().max().item() + 1e-5


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cpu_backward_matches_autograd_of_fp64_reference(case):
    b, sq, sk, hq, hkv, d, causal, window, alibi, bias = case
    q, k, v = _inputs(b, sq, sk, hq, hkv, d, torch.float32, seed=2)
    kw = dict(sigmoid_bias=bias, causal=causal, window_size=window, alibi_slopes=_slopes(b, hq, alibi))
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    dq, dk, dv = flash_sigmoid.backward(dout, q, k, v, **kw)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, **kw)
    ref.backward(dout.double())
    for name, got, want in (("dq", dq, q64.grad), ("dk", dk, k64.grad), ("dv", dv, v64.grad)):
        err = (got.double() - want).abs().max().item()
        assert err <= 1e-4 * max(1.0, want.abs().max().item()), f"{name}: max error {err:.2e}"


def test_cpu_forward_strided_inputs():
    qkv = torch.randn(2, 21, 3, 4, 16)
    q, k, v = qkv.unbind(2)  # non-contiguous views of a packed tensor
    out = flash_sigmoid.forward(q, k, v, causal=True)
    ref = attention_reference(q, k, v, causal=True)
    assert (out.double() - ref).abs().max() < 1e-5


def test_errors_name_the_argument():
    q, k, v = _inputs(1, 4, 4, 2, 2, 8, torch.float32)
    with pytest.raises(TypeError, match="q: expected dtype"):
        flash_sigmoid.forward(q.to(torch.float64), k.double(), v.double())
    with pytest.raises(ValueError, match="v: expected the shape of k"):
        flash_sigmoid.forward(q, k, v[:, :3])
    with pytest.raises(ValueError, match=r"k: expected heads \(3\)"):
        flash_sigmoid.forward(torch.randn(1, 4, 2, 8), torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))
    with pytest.raises(ValueError, match=r"window_size: expected each bound >= -1"):
        flash_sigmoid.forward(q, k, v, window_size=(-2, -1))
    with pytest.raises(ValueError, match=r"window_size: expected a right bound of -1 or 0 with causal=True"):
        flash_sigmoid.forward(q, k, v, causal=True, window_size=(-1, 3))
    with pytest.raises(ValueError, match="score_function: expected one of"):
        flash_sigmoid.forward(q, k, v, score_function="softmax")
    with pytest.raises(TypeError, match="alibi_slopes: expected dtype float32"):
        flash_sigmoid.forward(q, k, v, alibi_slopes=torch.ones(2, dtype=torch.float64))


def test_forward_into_out_and_its_errors():
    q, k, v = _inputs(2, 9, 11, 4, 2, 16, torch.float32)
    buf = torch.full((2, 9, 4, 24), float("nan"))
    out = buf[..., :16]  # a strided view: written in place, nothing outside it
    assert flash_sigmoid.forward(q, k, v, causal=True, out=out) is out
    assert (out.double() - attention_reference(q, k, v, causal=True)).abs().max() < 1e-5
    assert torch.isnan(buf[..., 16:]).all()
    with pytest.raises(ValueError, match="out: expected shape"):
        flash_sigmoid.forward(q, k, v, out=torch.empty(2, 9, 4, 8))
    with pytest.raises(ValueError, match="out: not supported when q, k or v requires grad"):
        flash_sigmoid.forward(q.requires_grad_(), k, v, out=torch.empty_like(q))


def test_forward_is_differentiable():
    q, k, v = (t.requires_grad_() for t in _inputs(1, 7, 9, 2, 1, 8, torch.float32, seed=4))
    flash_sigmoid.forward(q, k, v, sigmoid_bias=-1.0, window_size=(2, 3)).square().sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attention_reference(q64, k64, v64, sigmoid_bias=-1.0, window_size=(2, 3)).square().sum().backward()
    for got, want in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert (got.double() - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


def test_build_info_lists_kernels():
    info = flash_sigmoid.build_info()
    assert info.startswith("flash_sigmoid ")
    assert "kernels:" in info

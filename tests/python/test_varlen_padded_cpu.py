"""CPU tier: the padded dense path that serves packed sequences on the GPU (varlen_padded.py), run
here on CPU tensors against the per-sequence fp64 reference of test_varlen_cpu.py, forward and
gradients, every case there (lengths with 0 and 1, Sq != Sk, causal, windows, ALiBi [Hq] / [B, Hq],
GQA/MQA, bias float / "auto" / [B] tensor)."""
import pytest
import torch

from flash_sigmoid import ops as _ops
from flash_sigmoid import flash_attn_interface as _dense
from flash_sigmoid.varlen_padded import varlen_padded
from varlen_cases import CASES, IDS, bias_arg, cu, make, per_sequence_reference, slopes


def run_padded(q, k, v, lq, lk, causal, window, alibi, bias_kind):
    bias = bias_arg(bias_kind, lk)
    scalar, per_batch, auto = 0.0, None, False
    if bias == "auto":
        auto = True
    elif isinstance(bias, torch.Tensor):
        per_batch = bias.float()
    else:
        scalar = float(bias)
    left, right = _dense._flash_window(window, causal, max(lk))
    return varlen_padded(q, k, v, cu(lq), cu(lk), max(lq), max(lk), q.shape[-1] ** -0.5, scalar, per_batch, auto,
                         causal, left, right, alibi, False)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_padded_path_matches_per_sequence_fp64(case, dtype):
    lq, lk, hq, hkv, d, causal, window, alibi_kind, bias_kind = case
    q, k, v = make(lq, lk, hq, hkv, d, dtype)
    alibi = slopes(alibi_kind, len(lq), hq)
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = run_padded(qs, ks, vs, lq, lk, causal, window, alibi, bias_kind)
    assert out.shape == q.shape and out.dtype == dtype
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = per_sequence_reference(q64, k64, v64, lq, lk, causal, window, alibi, bias_kind)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert (out.double() - ref).abs().max().item() <= tol * max(1.0, ref.abs().max().item())
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    got = torch.autograd.grad(out, (qs, ks, vs), g, allow_unused=True)
    want = torch.autograd.grad(ref, (q64, k64, v64), g.double(), allow_unused=True)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        a = torch.zeros_like(b) if a is None else a.double()
        b = torch.zeros_like(a) if b is None else b
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item()), name


def test_padded_path_equals_the_native_cpu_op():
    lq, lk, hq, hkv, d, causal, window, alibi_kind, bias_kind = CASES[1]
    q, k, v = make(lq, lk, hq, hkv, d, torch.float32, seed=9)
    alibi = slopes(alibi_kind, len(lq), hq)
    from flash_sigmoid import flash_attn_varlen_func
    native = flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), max(lq), max(lk), causal=causal, window_size=window,
                                    alibi_slopes=alibi, sigmoid_bias=bias_arg(bias_kind, lk))
    padded = run_padded(q, k, v, lq, lk, causal, window, alibi, bias_kind)
    assert (native - padded).abs().max().item() <= 1e-5

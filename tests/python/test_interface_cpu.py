"""CPU tier: the flash-attn-compatible interface (flash_attn_func and the packed variants) on CPU
tensors, against the fp64 reference (tests/gpu/reference.py) and autograd of it; flash-attn's
conventions; argument errors (dropout_p's included; dropout itself is test_dropout_cpu.py's); the
returned probabilities; and the calls as Apple's FlashSigmoid README and tests make them."""
import math

import pytest
import torch

from flash_sigmoid import flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func
from reference import attention_reference

CASES = [
    # b, sq, sk, hq, hkv, d, causal, window, alibi, bias
    (2, 17, 17, 4, 4, 32, False, (-1, -1), None, 0.0),
    (1, 13, 40, 6, 2, 59, True, (-1, -1), "heads", -math.log(40)),
    (2, 40, 13, 3, 1, 24, False, (5, 2), "batch_heads", -3.0),
    (1, 1, 1, 2, 1, 8, True, (-1, -1), "heads", 1.5),
    (2, 33, 65, 4, 2, 64, True, (7, -1), None, -math.log(65)),
    (1, 29, 29, 2, 2, 3, False, (4, 4), "batch_heads", -1.0),
]
IDS = [f"case{i}" for i in range(len(CASES))]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def inputs(b, sq, sk, hq, hkv, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, sq, hq, d, generator=g).to(dtype), torch.randn(b, sk, hkv, d, generator=g).to(dtype),
            torch.randn(b, sk, hkv, d, generator=g).to(dtype))


def slopes(kind, b, hq):
    g = torch.Generator().manual_seed(1)
    if kind is None:
        return None
    return torch.rand(hq, generator=g) if kind == "heads" else torch.rand(b, hq, generator=g)


def reference_window(causal, window):
    """The library-level window of a flash-attn call whose bounds need no clamping."""
    return (window[0], 0) if causal else window


def assert_close_to_reference(out, q, k, v, dtype, **kw):
    ref = attention_reference(q, k, v, **kw)
    err = (out.double() - ref).abs().max().item()
    if dtype == torch.float32:
        assert err <= 1e-5 * max(1.0, ref.abs().max().item()), err
    else:
        same = attention_reference(q, k, v, dtype=dtype, **kw)
        assert err <= 2 * (same.double() - ref).abs().max().item() + 1e-5, err


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flash_attn_func_matches_fp64_reference(case, dtype):
    b, sq, sk, hq, hkv, d, causal, window, alibi, bias = case
    q, k, v = inputs(b, sq, sk, hq, hkv, d, dtype)
    s = slopes(alibi, b, hq)
    out = flash_attn_func(q, k, v, causal=causal, window_size=window, alibi_slopes=s, sigmoid_bias=bias)
    assert out.shape == q.shape and out.dtype == dtype
    assert_close_to_reference(out, q, k, v, dtype, sigmoid_bias=bias, causal=causal,
                              window_size=reference_window(causal, window), alibi_slopes=s)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flash_attn_func_gradients_match_autograd_of_fp64_reference(case):
    b, sq, sk, hq, hkv, d, causal, window, alibi, bias = case
    q, k, v = (t.requires_grad_() for t in inputs(b, sq, sk, hq, hkv, d, torch.float32, seed=2))
    s = slopes(alibi, b, hq)
    scale = 0.7 / math.sqrt(d)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    out = flash_attn_func(q, k, v, 0.0, scale, causal, window, s, False, False, bias)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, scale=scale, sigmoid_bias=bias, causal=causal,
                              window_size=reference_window(causal, window), alibi_slopes=s)
    want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    for name, got, w in zip(("dq", "dk", "dv"), (dq, dk, dv), want):
        err = (got.double() - w).abs().max().item()
        assert err <= 1e-4 * max(1.0, w.abs().max().item()), f"{name}: max error {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_half_precision_gradients_follow_the_tolerance_rule(dtype):
    # DESIGN §7: |grad - ref64| <= 3 |grad_torch_same_dtype - ref64| + floor.
    q, k, v = (t.requires_grad_() for t in inputs(2, 31, 45, 4, 2, 40, dtype, seed=5))
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    kw = dict(sigmoid_bias=-math.log(45), causal=True)
    grads = torch.autograd.grad(flash_attn_func(q, k, v, **kw), (q, k, v), dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = torch.autograd.grad(attention_reference(q64, k64, v64, **kw), (q64, k64, v64), dout.double())
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    same = torch.autograd.grad(attention_reference(qs, ks, vs, dtype=dtype, **kw), (qs, ks, vs), dout)
    for got, r, t in zip(grads, ref, same):
        assert (got.double() - r).abs().max() <= 3 * (t.double() - r).abs().max() + 1e-5


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp16", "bf16"])
def test_packed_variants_match_unpacked(dtype):
    g = torch.Generator().manual_seed(8)
    qkv = torch.randn(2, 23, 3, 4, 16, generator=g).to(dtype).requires_grad_()
    kw = dict(causal=True, sigmoid_bias=-2.0, alibi_slopes=slopes("heads", 2, 4))
    out = flash_attn_qkvpacked_func(qkv, **kw)
    q, k, v = qkv.detach().unbind(2)
    assert_close_to_reference(out, q, k, v, dtype, sigmoid_bias=-2.0, causal=True, alibi_slopes=kw["alibi_slopes"])
    assert torch.equal(out, flash_attn_func(q, k, v, **kw))
    (dqkv,) = torch.autograd.grad(out.float().square().sum(), qkv)
    assert dqkv.shape == qkv.shape

    q = torch.randn(2, 11, 6, 16, generator=g).to(dtype).requires_grad_()
    kv = torch.randn(2, 23, 2, 2, 16, generator=g).to(dtype).requires_grad_()
    out = flash_attn_kvpacked_func(q, kv, 0.0, None, False, (3, 5), None, False, False, -1.0)
    k, v = kv.detach().unbind(2)
    assert torch.equal(out, flash_attn_func(q.detach(), k, v, window_size=(3, 5), sigmoid_bias=-1.0))
    dq, dkv = torch.autograd.grad(out.float().sum(), (q, kv))
    assert dq.shape == q.shape and dkv.shape == kv.shape


def test_any_strides_with_contiguous_or_not_head_dim():
    g = torch.Generator().manual_seed(9)
    base = torch.randn(2, 16, 19, 3, generator=g)  # [b, d, s, h]: head dim not contiguous
    q = base.permute(0, 2, 3, 1)
    k = torch.randn(2, 50, 3, 16, generator=g)[:, ::2]  # every other row
    v = torch.randn(1, 25, 3, 16, generator=g).expand(2, 25, 3, 16)  # stride 0 over the batch
    assert q.stride(-1) != 1 and k.stride(1) == 96 and v.stride(0) == 0
    out = flash_attn_func(q, k, v, causal=True)
    assert_close_to_reference(out, q, k, v, torch.float32, causal=True)
    # Backward with an expanded (stride-0) output gradient, as out.sum().backward() makes.
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    flash_attn_func(qr, kr, vr, causal=True).sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    attention_reference(q64, k64, v64, causal=True).sum().backward()
    assert (qr.grad.double() - q64.grad).abs().max() < 1e-4


def test_causal_forces_the_right_window_bound_to_zero():
    q, k, v = inputs(1, 20, 30, 2, 2, 8, torch.float32)
    out = flash_attn_func(q, k, v, causal=True, window_size=(6, 4))  # flash-attn: right becomes 0
    assert_close_to_reference(out, q, k, v, torch.float32, causal=True, window_size=(6, 0))
    ref = attention_reference(q, k, v, window_size=(6, 4))
    assert (out.double() - ref).abs().max() > 1e-2  # a right bound of 4 would differ


def test_causal_is_bottom_right_aligned():
    # flash-attn >= 2.1: with seqlen_q = 2, seqlen_k = 5 the mask is 1 1 1 1 0 / 1 1 1 1 1.
    q, k, _ = inputs(1, 2, 5, 1, 1, 8, torch.float32)
    v = torch.eye(5).reshape(1, 5, 1, 5)[..., :5]
    v = torch.nn.functional.pad(v, (0, 3))  # head_dim 8, v_j = e_j: out row i shows P[i, :]
    p = flash_attn_func(q, k, v, causal=True)[0, :, 0, :5]
    assert (p[0, :4] > 0).all() and p[0, 4] == 0 and (p[1] > 0).all()


def test_window_bounds_at_or_beyond_seqlen_k_are_unbounded():
    # flash-attn 2.5.6 (mha_fwd): window_size[i] >= seqlen_k means unbounded. With Sq > Sk a right
    # bound of 13 would otherwise hide every key from the first rows.
    q, k, v = inputs(1, 40, 13, 2, 1, 8, torch.float32)
    out = flash_attn_func(q, k, v, window_size=(5, 13))
    assert_close_to_reference(out, q, k, v, torch.float32, window_size=(5, -1))
    out = flash_attn_func(q, k, v, window_size=(-7, 20))
    assert_close_to_reference(out, q, k, v, torch.float32)


def test_alibi_subtracts_slope_times_distance():
    q, k, v = inputs(2, 9, 14, 3, 3, 8, torch.float32)
    s = torch.tensor([[0.5, 0.25, 0.0], [1.0, 0.0, 0.125]])
    out = flash_attn_func(q, k, v, alibi_slopes=s, sigmoid_bias=0.5)
    i = torch.arange(9)[:, None]
    j = torch.arange(14)[None, :]
    z = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / math.sqrt(8) + 0.5
    z = z - s.double()[:, :, None, None] * (i + 14 - 9 - j).abs()
    ref = torch.einsum("bhij,bjhd->bihd", torch.sigmoid(z), v.double())
    assert (out.double() - ref).abs().max() < 1e-5


def test_empty_problems():
    q, k, v = inputs(2, 5, 0, 2, 2, 8, torch.float32)
    assert (flash_attn_func(q, k, v) == 0).all()  # no keys: O = 0
    q, k, v = (t.requires_grad_() for t in inputs(2, 0, 7, 2, 2, 8, torch.float32))
    out = flash_attn_func(q, k, v)
    assert out.shape == (2, 0, 2, 8)
    dk, dv = torch.autograd.grad(out.sum(), (k, v), allow_unused=True)
    assert (dk == 0).all() and (dv == 0).all()
    q, k, v = inputs(0, 5, 7, 2, 2, 8, torch.float32)
    assert flash_attn_func(q, k, v).shape == (0, 5, 2, 8)


def test_called_as_apples_tests_do():
    # Apple's flash_sigmoid/tests/test_flash_attn.py::test_flash_attn_output (mha_type "gqa",
    # local, alibi): dropout_p positional, window_size a tensor from torch.randint, sigmoid_bias a
    # Python float. Apple's also passes return_attn_probs=True and unpacks `out, S_dmask` (S_dmask
    # is None there); here it returns flash-attn 2.5.6's triple (out, None, S_dmask), S_dmask = P.
    torch.random.manual_seed(0)
    batch_size, nheads, nheads_k, seqlen_q, seqlen_k, d = 2, 9, 3, 13, 21, 40
    dropout_p, causal, deterministic = 0.0, True, False
    window_size = torch.randint(0, seqlen_k, (2,))
    q = torch.randn(batch_size, seqlen_q, nheads, d, requires_grad=True)
    k = torch.randn(batch_size, seqlen_k, nheads_k, d, requires_grad=True)
    v = torch.randn(batch_size, seqlen_k, nheads_k, d, requires_grad=True)
    alibi_slopes = torch.rand(batch_size, nheads, dtype=torch.float32) * 0.3
    sigmoid_bias = torch.Tensor(1, ).to(q).uniform_(-10., 2.).float()
    out_p, lse, s_dmask = flash_attn_func(q, k, v, dropout_p, causal=causal, window_size=window_size,
                                          alibi_slopes=alibi_slopes, deterministic=deterministic,
                                          return_attn_probs=True, sigmoid_bias=sigmoid_bias.cpu().item())
    assert lse is None and s_dmask.shape == (batch_size, nheads, seqlen_q, seqlen_k)
    out = flash_attn_func(
        q,
        k,
        v,
        dropout_p,
        causal=causal,
        window_size=window_size,
        alibi_slopes=alibi_slopes,
        deterministic=deterministic,
        sigmoid_bias=sigmoid_bias.cpu().item(),
    )
    assert torch.equal(out_p, out)
    left = int(window_size[0])
    assert_close_to_reference(out.detach(), q.detach(), k.detach(), v.detach(), torch.float32,
                              sigmoid_bias=sigmoid_bias.item(), causal=True, window_size=(left, 0),
                              alibi_slopes=alibi_slopes)
    g = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), g)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape

    kv = torch.stack([k.detach(), v.detach()], dim=2).requires_grad_()
    out_kv = flash_attn_kvpacked_func(q, kv, dropout_p, causal=causal, window_size=window_size,
                                      alibi_slopes=alibi_slopes, deterministic=deterministic,
                                      sigmoid_bias=sigmoid_bias.cpu().item())
    assert torch.equal(out_kv, out)


def test_apples_readme_example():
    # Apple's README documents `sigmoid_bias` as the extra trailing argument and shows this call:
    #   out = flash_sigmoid_func(q, k, v, softmax_scale, dropout_p, window_size, alibi_slopes, causal, sigmoid_bias)
    # Its positional order does not match the signature (flash-attn 2.5.6's, dropout_p fourth),
    # so taken literally it would pass softmax_scale as dropout_p: that raises here instead of
    # computing something else (with a number in the first slot, the arguments after it shift onto
    # the wrong names, and the bool reaching alibi_slopes is rejected). Spelled with keywords it runs
    # as the README describes.
    from flash_sigmoid import flash_attn_func as flash_sigmoid_func
    q, k, v = inputs(2, 16, 16, 4, 2, 32, torch.bfloat16)
    softmax_scale, dropout_p, window_size, causal, sigmoid_bias = None, 0.0, (-1, -1), True, -math.log(16)
    alibi_slopes = torch.rand(4) * 0.3
    out = flash_sigmoid_func(q, k, v, softmax_scale=softmax_scale, dropout_p=dropout_p, window_size=window_size,
                             alibi_slopes=alibi_slopes, causal=causal, sigmoid_bias=sigmoid_bias)
    assert_close_to_reference(out, q, k, v, torch.bfloat16, sigmoid_bias=sigmoid_bias, causal=True,
                              alibi_slopes=alibi_slopes)
    with pytest.raises(TypeError, match="dropout_p: expected a float, got NoneType"):
        flash_sigmoid_func(q, k, v, softmax_scale, dropout_p, window_size, alibi_slopes, causal, sigmoid_bias)
    with pytest.raises(TypeError, match="alibi_slopes: expected a torch.Tensor or None, got bool"):
        flash_sigmoid_func(q, k, v, 0.125, dropout_p, window_size, alibi_slopes, causal, sigmoid_bias)


def test_dropout_and_probabilities_in_all_three_forms():
    # dropout_p and return_attn_probs work in all three functions, positionally or by keyword: the
    # same torch.manual_seed gives the same draw, so the three forms give the same result; a bad
    # dropout_p raises naming the argument, before the generator is touched.
    q, k, v = inputs(1, 4, 4, 1, 1, 8, torch.float32)
    kv = torch.stack([k, v], dim=2)
    qkv = torch.stack([q, k, v], dim=2)
    calls = {
        "flash_attn_func": lambda *a, **kw: flash_attn_func(q, k, v, *a, **kw),
        "flash_attn_kvpacked_func": lambda *a, **kw: flash_attn_kvpacked_func(q, kv, *a, **kw),
        "flash_attn_qkvpacked_func": lambda *a, **kw: flash_attn_qkvpacked_func(qkv, *a, **kw),
    }
    torch.manual_seed(7)
    dropped = flash_attn_func(q, k, v, 0.5)
    assert not torch.equal(dropped, flash_attn_func(q, k, v))
    for name, call in calls.items():
        out, lse, probs = call(return_attn_probs=True)
        assert lse is None and probs.shape == (1, 1, 4, 4) and torch.equal(out, call()), name
        torch.manual_seed(7)
        assert torch.equal(call(0.5), dropped), name
        torch.manual_seed(7)
        assert torch.equal(call(dropout_p=0.5, return_attn_probs=True)[0], dropped), name
        for bad, error, text in ((1.0, ValueError, r"expected a probability in \[0, 1\), got 1.0"),
                                 (-0.1, ValueError, r"expected a probability in \[0, 1\), got -0.1"),
                                 (float("nan"), ValueError, "expected a probability"),
                                 ("0.1", TypeError, "expected a float, got str"),
                                 (None, TypeError, "expected a float, got NoneType"),
                                 (True, TypeError, "expected a float, got bool")):
            state = torch.get_rng_state()
            with pytest.raises(error, match="dropout_p: " + text):
                call(dropout_p=bad)
            assert torch.equal(torch.get_rng_state(), state), name
        assert call(return_attn_probs=False).shape == q.shape, name
    positional = (0.0, None, False, (-1, -1), None, False, True)  # dropout_p .. return_attn_probs
    for result in (flash_attn_func(q, k, v, *positional), flash_attn_kvpacked_func(q, kv, *positional),
                   flash_attn_qkvpacked_func(qkv, *positional)):
        assert len(result) == 3 and result[1] is None


def test_bad_inputs_raise_errors_naming_the_argument():
    q, k, v = inputs(1, 4, 6, 6, 3, 8, torch.float32)
    cases = [
        (TypeError, "q: expected a torch.Tensor", lambda: flash_attn_func(q.numpy(), k, v)),
        (ValueError, r"q: expected 4 dims", lambda: flash_attn_func(q[0], k, v)),
        (TypeError, "k: expected dtype torch.float32 like q", lambda: flash_attn_func(q, k.half(), v)),
        (TypeError, "q: expected dtype float16, bfloat16 or float32 on cpu", lambda: flash_attn_func(
            q.double(), k.double(), v.double())),
        (ValueError, "k: expected device cpu like q", lambda: flash_attn_func(q, k.to("meta"), v)),
        (ValueError, "v: expected the shape of k", lambda: flash_attn_func(q, k, v[:, :5])),
        (ValueError, r"k: expected batch 1 and head_dim 8 like q", lambda: flash_attn_func(q, k[..., :4], v[..., :4])),
        (ValueError, r"k: expected heads \(4\) to divide the query heads \(6\)", lambda: flash_attn_func(
            q, torch.randn(1, 6, 4, 8), torch.randn(1, 6, 4, 8))),
        (ValueError, "q: expected head_dim 1..256", lambda: flash_attn_func(
            torch.randn(1, 2, 1, 264), torch.randn(1, 2, 1, 264), torch.randn(1, 2, 1, 264))),
        (TypeError, "alibi_slopes: expected dtype float32", lambda: flash_attn_func(
            q, k, v, alibi_slopes=torch.ones(6, dtype=torch.float64))),
        (ValueError, r"alibi_slopes: expected shape \(6,\) or \(1, 6\)", lambda: flash_attn_func(
            q, k, v, alibi_slopes=torch.ones(3))),
        (ValueError, "alibi_slopes: expected device cpu", lambda: flash_attn_func(
            q, k, v, alibi_slopes=torch.ones(6, device="meta"))),
        (ValueError, "window_size: expected a pair of ints", lambda: flash_attn_func(q, k, v, window_size=3)),
        (ValueError, "softmax_scale: expected a finite number", lambda: flash_attn_func(
            q, k, v, softmax_scale=float("nan"))),
        (ValueError, "sigmoid_bias: expected a finite number", lambda: flash_attn_func(q, k, v, sigmoid_bias="auto")),
        (ValueError, r"qkv: expected shape \[batch, seqlen, 3, heads, head_dim\]", lambda: flash_attn_qkvpacked_func(
            torch.randn(1, 4, 2, 2, 8))),
        (ValueError, r"kv: expected shape \[batch, seqlen, 2, heads_kv, head_dim\]", lambda: flash_attn_kvpacked_func(
            q, torch.randn(1, 4, 3, 3, 8))),
        (ValueError, r"kv\[:, :, 0\]: expected heads \(4\) to divide", lambda: flash_attn_kvpacked_func(
            q, torch.randn(1, 4, 2, 4, 8))),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()

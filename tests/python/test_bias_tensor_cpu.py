"""CPU tier: a tensor sigmoid_bias (0-dim or per query head, trainable) and return_attn_probs through
the flash-attn interface, against an fp64 autograd reference written here (issue 20): out, dq, dk,
dv and dbias, with GQA, masks and ALiBi; the probabilities (out, None, S_dmask) equal P; errors name
the argument."""
import math

import pytest
import torch

from flash_sigmoid import flash_attn_func


def reference(q, k, v, bias_h, scale, causal=False, window=(-1, -1), slopes=None):
    """fp64 sigmoid attention with a per-head bias [Hq]; returns (out, P); differentiable."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    kd, vd = (t.repeat_interleave(hq // hkv, dim=2) for t in (k, v))
    z = torch.einsum("bihd,bjhd->bhij", q, kd) * scale + bias_h.view(1, hq, 1, 1)
    i = torch.arange(sq).view(sq, 1)
    j = torch.arange(sk).view(1, sk)
    diag = i + sk - sq
    if slopes is not None:
        z = z - slopes.double().view(1, hq, 1, 1) * (diag - j).abs().double()
    visible = torch.ones(sq, sk, dtype=torch.bool)
    right = 0 if causal else window[1]
    if right >= 0:
        visible &= j <= diag + right
    if window[0] >= 0:
        visible &= j >= diag - window[0]
    p = torch.where(visible, torch.sigmoid(z), torch.zeros((), dtype=z.dtype))
    return torch.einsum("bhij,bjhd->bihd", p, vd), p


CASES = [
    # b, sq, sk, hq, hkv, d, causal, window, alibi, bias kind
    (2, 13, 21, 4, 2, 16, True, (-1, -1), False, "heads"),
    (1, 17, 9, 3, 1, 40, False, (4, 2), True, "heads"),
    (2, 8, 8, 2, 2, 8, True, (3, -1), False, "scalar"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_trainable_bias_matches_fp64_autograd(case, dtype):
    b, sq, sk, hq, hkv, d, causal, window, alibi, kind = case
    g = torch.Generator().manual_seed(sq * 31 + d)
    q, k, v = (torch.randn(b, s, h, d, generator=g).to(dtype) for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))
    slopes = torch.rand(hq, generator=g) * 0.3 if alibi else None
    init = torch.full((hq,), -math.log(sk)) + torch.linspace(-1.0, 1.0, hq) if kind == "heads" else \
        torch.tensor(-math.log(sk))
    bias = init.clone().requires_grad_()
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = flash_attn_func(qs, ks, vs, causal=causal, window_size=window, alibi_slopes=slopes, sigmoid_bias=bias)
    dout = torch.randn(out.shape, generator=g).to(dtype)
    dq, dk, dv, dbias = torch.autograd.grad(out, (qs, ks, vs, bias), dout)

    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    b64 = init.double().requires_grad_()
    ref, _ = reference(q64, k64, v64, b64.expand(hq), d ** -0.5, causal, window, slopes)
    rq, rk, rv, rb = torch.autograd.grad(ref, (q64, k64, v64, b64), dout.double())
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    for name, got, want in (("out", out, ref), ("dq", dq, rq), ("dk", dk, rk), ("dv", dv, rv), ("dbias", dbias, rb)):
        err = (got.double() - want).abs().max().item()
        assert err <= tol * max(1.0, want.abs().max().item()), f"{name}: max error {err}"
    assert dbias.shape == bias.shape and dbias.dtype == torch.float32


def test_bias_rides_in_bf16_without_losing_precision():
    # b / scale is about -61 at D = 64 and S = 2048: one bf16 channel would round the bias by ~0.03
    # (a 3% error in every probability); the (hi, lo) pair keeps the output as accurate as with a float.
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 64, 2, 64, generator=g).bfloat16() for _ in range(3))
    bias = -math.log(2048) + 0.0123
    ref, _ = reference(q.double(), k.double(), v.double(), torch.full((2,), bias, dtype=torch.float64), 0.125)
    as_float = flash_attn_func(q, k, v, sigmoid_bias=bias)
    as_tensor = flash_attn_func(q, k, v, sigmoid_bias=torch.full((2,), bias))
    err_float = (as_float.double() - ref).abs().max().item()
    err_tensor = (as_tensor.double() - ref).abs().max().item()
    assert err_tensor <= 1.5 * err_float + 1e-6, (err_tensor, err_float)


def test_constant_bias_tensor_is_a_number_and_per_head_constants_work():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 9, 3, 16, generator=g) for _ in range(3))
    assert torch.equal(flash_attn_func(q, k, v, sigmoid_bias=torch.tensor(-2.0)), flash_attn_func(q, k, v, sigmoid_bias=-2.0))
    heads = torch.tensor([-1.0, -2.0, -3.0])
    out = flash_attn_func(q, k, v, sigmoid_bias=heads)
    for h in range(3):
        alone = flash_attn_func(q[:, :, h:h + 1], k[:, :, h:h + 1], v[:, :, h:h + 1], sigmoid_bias=float(heads[h]))
        assert (out[:, :, h:h + 1] - alone).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_return_attn_probs_is_p(dtype):
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, s, h, 24, generator=g).to(dtype) for s, h in ((11, 4), (19, 2), (19, 2)))
    slopes = torch.rand(2, 4, generator=g) * 0.3
    bias = torch.tensor([-1.0, -2.0, -3.0, -4.0])
    out, lse, probs = flash_attn_func(q, k, v, causal=True, window_size=(6, -1), alibi_slopes=slopes,
                                      sigmoid_bias=bias, return_attn_probs=True)
    assert lse is None and probs.dtype == dtype and probs.shape == (2, 4, 11, 19)
    # P by hand in fp64, with [B, Hq] slopes (reference() above takes [Hq] ones).
    i = torch.arange(11).view(11, 1)
    j = torch.arange(19).view(1, 19)
    z = torch.einsum("bihd,bjhd->bhij", q.double(), k.double().repeat_interleave(2, dim=2)) * 24 ** -0.5
    z = z + bias.double().view(1, 4, 1, 1) - slopes.double().view(2, 4, 1, 1) * (i + 8 - j).abs().double()
    visible = (j <= i + 8) & (j >= i + 8 - 6)
    zz = torch.where(visible, torch.sigmoid(z), torch.zeros((), dtype=torch.float64))
    tol = 1e-6 if dtype == torch.float32 else 4e-3
    assert (probs.double() - zz).abs().max().item() <= tol
    assert (probs[:, :, ~visible] == 0).all()
    assert torch.equal(out, flash_attn_func(q, k, v, causal=True, window_size=(6, -1), alibi_slopes=slopes,
                                            sigmoid_bias=bias))


def test_bias_errors_name_the_argument():
    q, k, v = (torch.randn(1, 4, 3, 8) for _ in range(3))
    with pytest.raises(ValueError, match=r"sigmoid_bias: expected a number, a 0-dim tensor or a \[3\] tensor"):
        flash_attn_func(q, k, v, sigmoid_bias=torch.zeros(4))
    with pytest.raises(ValueError, match=r"sigmoid_bias: expected a number, a 0-dim tensor or a \[3\] tensor"):
        flash_attn_func(q, k, v, sigmoid_bias=torch.zeros(1, 3))
    with pytest.raises(TypeError, match=r"sigmoid_bias: expected a floating-point tensor"):
        flash_attn_func(q, k, v, sigmoid_bias=torch.zeros(3, dtype=torch.int32))


def test_module_learnable_bias_trains_per_head():
    from flash_sigmoid import SigmoidSelfAttention
    layer = SigmoidSelfAttention(32, 4, causal=True, learnable_bias=True, bias_init_seqlen=100)
    assert layer.learned_bias.dtype == torch.float32
    assert torch.allclose(layer.learned_bias, torch.full((4,), -math.log(100)))
    x = torch.randn(2, 10, 32)
    layer(x).square().sum().backward()
    assert layer.learned_bias.grad is not None and layer.learned_bias.grad.shape == (4,)
    assert (layer.learned_bias.grad != 0).all()
    fixed = SigmoidSelfAttention(32, 4, causal=True, sigmoid_bias=-math.log(100))
    fixed.load_state_dict({n: p for n, p in layer.state_dict().items() if n != "learned_bias"})
    assert torch.allclose(layer(x), fixed(x), atol=1e-5)  # same bias at initialisation: same output
    assert SigmoidSelfAttention(32, 4, learnable_bias=True, sigmoid_bias=-2.0).learned_bias[0].item() == -2.0
    with pytest.raises(ValueError, match="bias_init_seqlen"):
        SigmoidSelfAttention(32, 4, learnable_bias=True)


def test_tensor_bias_needs_two_spare_head_dim_channels():
    q = torch.randn(1, 4, 2, 256)
    with pytest.raises(ValueError, match=r"sigmoid_bias: .* head_dim may be at most 254, got 256"):
        flash_attn_func(q, q, q, sigmoid_bias=torch.zeros(2))
    assert flash_attn_func(q, q, q, sigmoid_bias=-1.0).shape == q.shape  # a number needs none

"""CPU tier: the SigmoidSelfAttention layer — forward and gradients against the same layer with the
fp64 reference attention, rotary embedding on the right axes, ALiBi slopes, GQA, the "auto" bias,
argument errors, torch.compile, and the docstring example."""
import doctest
import math

import pytest
import torch

import flash_sigmoid
from flash_sigmoid import SigmoidSelfAttention, alibi_slopes, apply_rotary
from reference import attention_reference

CONFIGS = {
    "plain": dict(),
    "gqa_causal_rotary_rmsnorm": dict(num_kv_heads=2, causal=True, rotary=True, qk_norm=True),
    "mqa_window_alibi_layernorm": dict(num_kv_heads=1, window_size=(5, 2), alibi=True, qk_norm="layer"),
    "partial_rotary_fixed_bias_head_dim": dict(head_dim=12, rotary=True, rotary_dim=8, sigmoid_bias=-2.5, bias=True),
}


def reference_forward(layer, x):
    """The layer with attention computed by the fp64 reference (then cast back like the kernel)."""
    b, s, _ = x.shape
    q, k, v = layer.project_qkv(x)
    causal = layer.causal
    left, right = layer.window_size
    window = (left, 0) if causal else (left, right)
    slopes = alibi_slopes(layer.num_heads) if layer.alibi else None
    o = attention_reference(q, k, v, scale=layer.softmax_scale, sigmoid_bias=layer.resolved_sigmoid_bias(s),
                            causal=causal, window_size=window, alibi_slopes=slopes)
    return layer.out(o.to(x.dtype).reshape(b, s, -1))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_forward_and_gradients_match_reference_attention(config):
    torch.manual_seed(0)
    layer = SigmoidSelfAttention(48, 6, **config)
    x = torch.randn(2, 21, 48, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    (y * torch.linspace(-1, 1, 48)).sum().backward()
    got = {n: p.grad.clone() for n, p in layer.named_parameters()}
    gx = x.grad.clone()
    layer.zero_grad()
    x.grad = None
    y_ref = reference_forward(layer, x)
    assert (y - y_ref).abs().max() < 1e-5
    (y_ref * torch.linspace(-1, 1, 48)).sum().backward()
    for name, p in layer.named_parameters():
        assert (got[name] - p.grad).abs().max() <= 1e-4 * max(1.0, p.grad.abs().max().item()), name
    assert (gx - x.grad).abs().max() < 1e-4


def test_auto_bias_is_minus_log_seqlen():
    layer = SigmoidSelfAttention(16, 2)
    assert layer.resolved_sigmoid_bias(100) == -math.log(100)
    assert SigmoidSelfAttention(16, 2, sigmoid_bias=-3).resolved_sigmoid_bias(100) == -3.0


def _rotate_independently(x, base, rotary_dim):
    """RoPE written in [batch, heads, seqlen, head_dim] with complex numbers, then moved back."""
    xt = x.transpose(1, 2).double()  # (b, h, s, d)
    s = xt.shape[2]
    half = rotary_dim // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float64) * 2 / rotary_dim)
    angle = torch.arange(s, dtype=torch.float64)[:, None] * freqs[None, :]  # (s, half)
    z = torch.complex(xt[..., :half], xt[..., half:rotary_dim]) * torch.polar(torch.ones_like(angle), angle)
    out = torch.cat((z.real, z.imag, xt[..., rotary_dim:]), dim=-1)
    return out.transpose(1, 2)


def test_rotary_rotates_along_the_sequence_axis():
    torch.manual_seed(1)
    layer = SigmoidSelfAttention(40, 4, rotary=True, rotary_dim=6, rotary_base=500.0)
    x = torch.randn(2, 11, 5, 10)  # [b, s, h, d]: seqlen and heads differ, so a wrong axis shows
    cos, sin = layer.rotary_cos_sin(11, x.device)
    got = apply_rotary(x, cos, sin)
    assert (got.double() - _rotate_independently(x, 500.0, 6)).abs().max() < 1e-5
    # Relative positions only: <R_i q, R_j k> is unchanged when both positions shift together.
    q = torch.randn(10).expand(1, 11, 1, 10)
    k = torch.randn(10).expand(1, 11, 1, 10)
    rq, rk = apply_rotary(q, cos, sin)[0, :, 0], apply_rotary(k, cos, sin)[0, :, 0]
    assert abs(rq[2] @ rk[7] - rq[5] @ rk[10]) < 1e-4
    assert abs(rq[2] @ rk[7] - rq[2] @ rk[8]) > 1e-3


def test_alibi_slopes_are_the_papers():
    assert torch.equal(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # 6 heads: the 4-head slopes, then every other slope of 8 heads.
    want = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    assert torch.allclose(alibi_slopes(6), torch.tensor(want))
    assert alibi_slopes(12).dtype == torch.float32 and alibi_slopes(12).shape == (12,)


def test_half_precision_module():
    torch.manual_seed(2)
    layer = SigmoidSelfAttention(32, 4, num_kv_heads=2, alibi=True, rotary=True, causal=True).to(torch.bfloat16)
    x = torch.randn(1, 17, 32, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)  # the ALiBi slopes stay fp32 although the module is bf16
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad is not None
    assert (y.float() - reference_forward(layer, x).float()).abs().max() < 5e-2


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="num_kv_heads: expected a divisor of num_heads"):
        SigmoidSelfAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="rotary_dim: expected an even number"):
        SigmoidSelfAttention(32, 4, rotary=True, rotary_dim=5)
    with pytest.raises(ValueError, match="qk_norm: expected"):
        SigmoidSelfAttention(32, 4, qk_norm="batch")
    with pytest.raises(ValueError, match="sigmoid_bias: expected 'auto' or a float"):
        SigmoidSelfAttention(32, 4, sigmoid_bias="log")
    with pytest.raises(ValueError, match=r"x: expected shape \[batch, seqlen, 32\]"):
        SigmoidSelfAttention(32, 4)(torch.randn(2, 5, 16))


def test_compile_fullgraph():
    torch.manual_seed(3)
    layer = SigmoidSelfAttention(32, 4, num_kv_heads=2, causal=True, rotary=True, qk_norm=True, alibi=True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 13, 32, requires_grad=True)
    y = compiled(x)
    (gx,) = torch.autograd.grad(y.sum(), x)
    x2 = x.detach().clone().requires_grad_()
    (gx2,) = torch.autograd.grad(layer(x2).sum(), x2)
    assert torch.allclose(y, layer(x), atol=1e-5) and torch.allclose(gx, gx2, atol=1e-5)


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(flash_sigmoid.SigmoidSelfAttention, "SigmoidSelfAttention"):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 4

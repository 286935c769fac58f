"""CPU tier: attention dropout (docs/dropout.md) through the Python package on CPU tensors.

- the same torch.manual_seed gives bitwise the same output and gradients (and another seed another
  result), for any torch thread count;
- out, dq, dk, dv equal an fp64 autograd reference whose P is multiplied by the mask that
  return_attn_probs returns (S_dmask, dropped entries negated) and the rescale, over masks, GQA,
  ALiBi, odd sizes and every CPU dtype; a learnable (tensor) bias gets the reference dbias;
- the kept fraction is within 5 binomial sigma of the rounded keep rate (p = 0.1, 0.5), and the mean
  over many draws approaches the undropped output;
- varlen equals the per-sequence dense calls with matching sequence indices: sequence b of a packed
  call is dropped as batch entry b of a dense call with the same lengths and the same seed, so the
  dense reference is a batch of b + 1 entries whose entry b is the sequence;
- the low-level forward/backward with an explicit seed tensor, the mask op, the module's training
  flag, and argument errors naming dropout_p / dropout_seed.
"""
import math

import pytest
import torch

import flash_sigmoid
from flash_sigmoid import SigmoidSelfAttention, flash_attn_func, flash_attn_varlen_func
from flash_sigmoid import ops as fs_ops
from reference import attention_reference, dropout_factor

TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}  # relative Frobenius error


def _qkv(b, sq, sk, hq, hkv, d, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, s, h, d, generator=g).to(dtype).requires_grad_()
                 for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))


def _rel(got, want):
    got, want = got.double(), want.double()
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def _run(q, k, v, dout, p, seed, **kw):
    torch.manual_seed(seed)
    out, _, s_dmask = flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True, **kw)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    return out, s_dmask, grads


CASES = [
    # b, sq, sk, hq, hkv, d, kwargs
    (2, 37, 53, 4, 4, 24, {}),
    (1, 113, 203, 6, 2, 40, dict(causal=True, sigmoid_bias=-math.log(203))),
    (2, 40, 13, 3, 1, 17, dict(window_size=(5, 2), sigmoid_bias=-1.0)),
    (1, 70, 70, 4, 2, 64, dict(window_size=(20, 0), alibi_slopes="heads")),
    (2, 17, 33, 2, 1, 8, dict(causal=True, alibi_slopes="batch_heads", softmax_scale=0.7)),
]


def _kwargs(case):
    b, _, _, hq, _, _, kw = case
    kw = dict(kw)
    if kw.get("alibi_slopes") == "heads":
        kw["alibi_slopes"] = torch.rand(hq) * 0.5
    elif kw.get("alibi_slopes") == "batch_heads":
        kw["alibi_slopes"] = torch.rand(b, hq) * 0.5
    return kw


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_fp64_reference_built_from_the_returned_mask(case, dtype):
    b, sq, sk, hq, hkv, d, _ = case
    kw = _kwargs(case)
    q, k, v = _qkv(b, sq, sk, hq, hkv, d, dtype, seed=sq)
    dout = torch.randn(q.shape).to(dtype)
    p = 0.25 if sq % 2 else 0.1
    out, s_dmask, (dq, dk, dv) = _run(q, k, v, dout, p, seed=3, **kw)
    assert torch.signbit(s_dmask).any() and not torch.signbit(s_dmask).all()
    factor = dropout_factor(s_dmask, fs_ops.dropout_rescale(p))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref_kw = {name: value for name, value in kw.items() if name != "softmax_scale"}
    ref = attention_reference(q64, k64, v64, scale=kw.get("softmax_scale"), dropout=factor, **ref_kw)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    for name, got, want in (("out", out, ref), ("dq", dq, ref_grads[0]), ("dk", dk, ref_grads[1]),
                            ("dv", dv, ref_grads[2])):
        assert _rel(got, want) < TOL[dtype], name
    # The undropped reference is far off: the mask is really applied.
    plain = attention_reference(q64, k64, v64, scale=kw.get("softmax_scale"), **ref_kw)
    assert _rel(out, plain) > 10 * TOL[dtype]


def test_same_manual_seed_same_results_any_thread_count():
    q, k, v = _qkv(2, 75, 130, 4, 2, 24, torch.bfloat16)
    dout = torch.randn(q.shape).to(torch.bfloat16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = _run(q, k, v, dout, 0.3, seed=11, causal=True)
        torch.set_num_threads(2)
        again = _run(q, k, v, dout, 0.3, seed=11, causal=True)
        other = _run(q, k, v, dout, 0.3, seed=12, causal=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for a, b in zip(first[2], again[2]):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(torch.signbit(first[1]), torch.signbit(other[1]))
    for a, b in zip(first[2], other[2]):
        assert not torch.equal(a, b)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_fraction_within_binomial_error(p):
    # The rounded rate: t = round(256 p) of the 256 byte values drop (26 and 128).
    q, k, v = _qkv(2, 64, 96, 4, 4, 8)
    torch.manual_seed(5)
    _, _, s_dmask = flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    dropped = torch.signbit(s_dmask).double().mean().item()
    rate = round(256 * p) / 256
    n = s_dmask.numel()
    assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / n), (dropped, rate)


def test_mean_over_seeds_approaches_the_undropped_output():
    q, k, v = (t.detach() for t in _qkv(1, 12, 20, 2, 1, 8))
    draws = 400
    outs = torch.stack([flash_attn_func(q, k, v, dropout_p=0.5, causal=True).double() for _ in range(draws)])
    plain = flash_attn_func(q, k, v, causal=True).double()
    mean, std = outs.mean(0), outs.std(0)
    # Each element's mean is within 5 standard errors of the undropped value (E[P'] = P exactly);
    # without the rescale it would sit at half of it, hundreds of standard errors away.
    assert ((mean - plain).abs() <= 5 * std / math.sqrt(draws) + 1e-6).all()
    assert ((0.5 * mean - plain).abs() > 5 * std / math.sqrt(draws)).any()


def test_varlen_equals_dense_calls_with_matching_sequence_indices():
    lq, lk = [5, 0, 33, 1, 17], [9, 3, 40, 0, 17]
    hq, hkv, d, p = 4, 2, 16, 0.3
    cu_q = torch.tensor([0] + list(torch.tensor(lq).cumsum(0)), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lk).cumsum(0)), dtype=torch.int32)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(sum(lq), hq, d, generator=g).requires_grad_()
    k = torch.randn(sum(lk), hkv, d, generator=g).requires_grad_()
    v = torch.randn(sum(lk), hkv, d, generator=g).requires_grad_()
    dout = torch.randn(q.shape, generator=g)
    torch.manual_seed(9)
    out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lq), max(lk), dropout_p=p, causal=True, sigmoid_bias=-1.0)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    for b in range(len(lq)):
        rq, rk = slice(int(cu_q[b]), int(cu_q[b + 1])), slice(int(cu_k[b]), int(cu_k[b + 1]))

        def entry_b(t, rows):  # a dense batch of b + 1 entries whose entry b is the sequence's rows
            dense = torch.zeros((b + 1, rows.stop - rows.start) + tuple(t.shape[1:]), dtype=t.dtype)
            dense[b] = t.detach()[rows]
            return dense.requires_grad_()

        qb, kb, vb, dob = entry_b(q, rq), entry_b(k, rk), entry_b(v, rk), entry_b(dout, rq)
        torch.manual_seed(9)  # the same draw: the same seed tensor
        ob = flash_attn_func(qb, kb, vb, dropout_p=p, causal=True, sigmoid_bias=-1.0)
        gq, gk, gv = torch.autograd.grad(ob, (qb, kb, vb), dob.detach())
        assert torch.equal(out[rq], ob[b]) and torch.equal(dq[rq], gq[b]), b
        assert torch.equal(dk[rk], gk[b]) and torch.equal(dv[rk], gv[b]), b
        if lq[b] > 1 and lk[b] > 1 and b > 0:  # the index matters: as batch entry 0 it drops other entries
            torch.manual_seed(9)
            o0 = flash_attn_func(qb[b:b + 1].detach(), kb[b:b + 1].detach(), vb[b:b + 1].detach(), dropout_p=p,
                                 causal=True, sigmoid_bias=-1.0)
            assert not torch.equal(out[rq], o0[0]), b


def test_learnable_bias_with_dropout_gives_the_reference_dbias():
    q, k, v = _qkv(2, 29, 45, 4, 2, 16)
    bias = torch.tensor([-1.0, -2.5, 0.5, -4.0], requires_grad=True)
    dout = torch.randn(q.shape)
    torch.manual_seed(4)
    out, _, s_dmask = flash_attn_func(q, k, v, dropout_p=0.2, causal=True, sigmoid_bias=bias,
                                      return_attn_probs=True)
    grads = torch.autograd.grad(out, (q, k, v, bias), dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    b64 = bias.detach().double().requires_grad_()
    ref = attention_reference(q64, k64, v64, sigmoid_bias=b64, causal=True,
                              dropout=dropout_factor(s_dmask, fs_ops.dropout_rescale(0.2)))
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64, b64), dout.double())
    assert _rel(out, ref) < 1e-5
    for name, got, want in zip(("dq", "dk", "dv", "dbias"), grads, ref_grads):
        assert _rel(got, want) < 1e-4, name


def test_low_level_forward_and_backward_take_the_seed_tensor():
    q, k, v = _qkv(1, 21, 34, 2, 2, 8)
    dout = torch.randn(q.shape)
    seed = fs_ops.new_dropout_seed(q.device)
    assert seed.dtype == torch.int64 and seed.shape == (2,)
    out = flash_sigmoid.forward(q, k, v, causal=True, dropout_p=0.4, dropout_seed=seed)
    auto = torch.autograd.grad(out, (q, k, v), dout)
    manual = flash_sigmoid.backward(dout, q.detach(), k.detach(), v.detach(), causal=True, dropout_p=0.4,
                                    dropout_seed=seed)
    for a, b in zip(auto, manual):
        assert torch.equal(a, b)
    into = torch.empty(q.shape)
    flash_sigmoid.forward(q.detach(), k.detach(), v.detach(), causal=True, dropout_p=0.4, dropout_seed=seed, out=into)
    assert torch.equal(into, out)
    # The mask op gives the mask the call applied.
    keep = fs_ops.dropout_mask(seed, 0.4, 1, 2, 21, 34)
    ref = attention_reference(q.detach().double(), k.detach().double(), v.detach().double(), causal=True,
                              dropout=keep * fs_ops.dropout_rescale(0.4))
    assert _rel(out, ref) < 1e-5
    with pytest.raises(ValueError, match=r"dropout_seed: expected an int64 tensor of shape \(2,\)"):
        flash_sigmoid.forward(q, k, v, dropout_p=0.4)
    with pytest.raises(ValueError, match=r"dropout_seed: expected an int64 tensor of shape \(2,\), got torch.int32"):
        flash_sigmoid.forward(q, k, v, dropout_p=0.4, dropout_seed=seed.int())
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\)"):
        flash_sigmoid.backward(dout, q, k, v, dropout_p=1.5, dropout_seed=seed)


def test_mask_op_batch_index_and_errors():
    seed = torch.tensor([123456789, 42], dtype=torch.int64)
    whole = fs_ops.dropout_mask(seed, 0.3, 4, 3, 19, 37)
    assert whole.dtype == torch.bool and whole.shape == (4, 3, 19, 37)
    assert torch.equal(fs_ops.dropout_mask(seed, 0.3, 2, 3, 19, 37, batch_index=2), whole[2:])
    assert torch.equal(fs_ops.dropout_mask(seed, 0.3, 1, 3, 10, 20), whole[:1, :, :10, :20])  # positions only
    assert fs_ops.dropout_mask(seed, 0.0, 1, 2, 5, 5).all()
    assert not torch.equal(fs_ops.dropout_mask(seed + torch.tensor([0, 1]), 0.3, 4, 3, 19, 37), whole)
    ops = torch.ops.flash_sigmoid
    with pytest.raises(RuntimeError, match="dropout_seed: expected dtype int64"):
        ops.dropout_mask(seed.int(), 0.3, 0, 1, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"dropout_seed: expected shape \[2\]"):
        ops.dropout_mask(seed[:1], 0.3, 0, 1, 1, 4, 4)
    with pytest.raises(RuntimeError, match="batch_index: expected >= 0"):
        ops.dropout_mask(seed, 0.3, -1, 1, 1, 4, 4)
    with pytest.raises(RuntimeError, match=r"dropout_p: expected a probability in \[0, 1\)"):
        ops.dropout_mask(seed, 1.0, 0, 1, 1, 4, 4)
    q, k, v = _qkv(1, 4, 4, 1, 1, 8)
    with pytest.raises(RuntimeError, match="dropout_seed: expected an int64 tensor of shape"):
        ops.fwd(q, k, v, 0.3, 0.0, False, -1, -1, None, 0, 0, "", False, 0.5, None)
    with pytest.raises(RuntimeError, match="dropout_seed: expected dtype int64"):
        ops.fwd(q, k, v, 0.3, 0.0, False, -1, -1, None, 0, 0, "", False, 0.5, seed.float())


def test_module_drops_in_training_mode_only():
    torch.manual_seed(0)
    layer = SigmoidSelfAttention(32, num_heads=4, num_kv_heads=2, causal=True, dropout=0.25)
    plain = SigmoidSelfAttention(32, num_heads=4, num_kv_heads=2, causal=True)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 19, 32)
    layer.train()
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)  # a new draw per call
    torch.manual_seed(1)
    a1 = layer(x)
    torch.manual_seed(1)
    assert torch.equal(layer(x), a1)
    layer.eval()
    assert torch.equal(layer(x), plain(x))
    assert "dropout=0.25" in repr(layer)
    with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\)"):
        SigmoidSelfAttention(32, num_heads=4, dropout=1.0)

"""CPU tier: flash_attn_varlen_func and its packed variants on CPU tensors against a per-sequence
fp64 reference (tests/gpu/reference.py), forward and gradients; zero-length sequences; per-sequence
bias ("auto", [B] tensor); every argument error names its argument. The interface runs the native
varlen ops (flash_sigmoid::varlen_fwd/varlen_bwd, one call per batch): opcheck, a single node under
torch.compile(fullgraph=True), and the offsets checked by the op where Python does not read them."""
import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

import flash_sigmoid.flash_attn_interface as dense_interface

from flash_sigmoid import (flash_attn_func, flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                           flash_attn_varlen_qkvpacked_func)
from reference import attention_reference
from varlen_cases import CASES, IDS, bias_arg, bias_of, cu, make, per_sequence_reference, slopes

@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_and_gradients_against_per_sequence_fp64(case, dtype):
    lq, lk, hq, hkv, d, causal, window, alibi_kind, bias_kind = case
    q, k, v = make(lq, lk, hq, hkv, d, dtype)
    alibi = slopes(alibi_kind, len(lq), hq)
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = flash_attn_varlen_func(qs, ks, vs, cu(lq), cu(lk), max(lq), max(lk), causal=causal, window_size=window,
                                 alibi_slopes=alibi, sigmoid_bias=bias_arg(bias_kind, lk))
    assert out.shape == q.shape and out.dtype == dtype
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = per_sequence_reference(q64, k64, v64, lq, lk, causal, window, alibi, bias_kind)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    scale = max(1.0, ref.abs().max().item())
    assert (out.double() - ref).abs().max().item() <= tol * scale
    # Rows of a sequence without keys are exactly zero.
    oq = 0
    for b in range(len(lq)):
        if lk[b] == 0:
            assert torch.all(out[oq:oq + lq[b]] == 0)
        oq += lq[b]
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    out.backward(dout)
    ref.backward(dout.double())
    for got, want in ((qs.grad, q64.grad), (ks.grad, k64.grad), (vs.grad, v64.grad)):
        gscale = max(1.0, want.abs().max().item())
        assert (got.double() - want).abs().max().item() <= 3 * tol * gscale


def test_matches_dense_call_for_equal_lengths():
    b, s, h, d = 3, 19, 2, 16
    q, k, v = make([s] * b, [s] * b, h, h, d, torch.float32)
    out = flash_attn_varlen_func(q, k, v, cu([s] * b), cu([s] * b), s, s, causal=True, sigmoid_bias=-2.0)
    dense = flash_attn_func(q.view(b, s, h, d), k.view(b, s, h, d), v.view(b, s, h, d), causal=True,
                            sigmoid_bias=-2.0)
    torch.testing.assert_close(out, dense.reshape(b * s, h, d), rtol=0, atol=1e-6)


def test_packed_variants_equal_unpacked():
    lq = [7, 0, 12]
    q, k, v = make(lq, lq, 2, 2, 16, torch.float32)
    c = cu(lq)
    ref = flash_attn_varlen_func(q, k, v, c, c, 12, 12, causal=True, sigmoid_bias="auto")
    qkv = torch.stack([q, k, v], dim=1)
    torch.testing.assert_close(flash_attn_varlen_qkvpacked_func(qkv, c, 12, causal=True, sigmoid_bias="auto"),
                               ref, rtol=0, atol=0)
    kv = torch.stack([k, v], dim=1)
    torch.testing.assert_close(flash_attn_varlen_kvpacked_func(q, kv, c, c, 12, 12, causal=True,
                                                               sigmoid_bias="auto"), ref, rtol=0, atol=0)


def test_causal_is_bottom_right_per_sequence():
    # One query against 5 keys: bottom-right causal sees every key, so it equals non-causal.
    q, k, v = make([1, 1], [5, 3], 2, 2, 8, torch.float32)
    args = (q, k, v, cu([1, 1]), cu([5, 3]), 1, 5)
    torch.testing.assert_close(flash_attn_varlen_func(*args, causal=True), flash_attn_varlen_func(*args),
                               rtol=0, atol=0)


def _base():
    q, k, v = make([3, 4], [5, 2], 2, 2, 8, torch.float32)
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu([3, 4]), cu_seqlens_k=cu([5, 2]), max_seqlen_q=4, max_seqlen_k=5)


@pytest.mark.parametrize("change, error, pattern", [
    (dict(cu_seqlens_q=torch.tensor([0, 3, 7], dtype=torch.int64)), TypeError, "cu_seqlens_q: expected dtype torch.int32"),
    (dict(cu_seqlens_k=[0, 5, 7]), TypeError, "cu_seqlens_k: expected a torch.Tensor"),
    (dict(cu_seqlens_q=torch.tensor([[0, 3, 7]], dtype=torch.int32)), ValueError, r"cu_seqlens_q: expected shape \[batch \+ 1\]"),
    (dict(cu_seqlens_q=torch.tensor([1, 3, 7], dtype=torch.int32)), ValueError, "cu_seqlens_q: expected the first entry to be 0"),
    (dict(cu_seqlens_k=torch.tensor([0, 5, 4, 7], dtype=torch.int32)), ValueError, "cu_seqlens_k: expected non-decreasing"),
    (dict(cu_seqlens_q=torch.tensor([0, 3, 6], dtype=torch.int32)), ValueError, r"cu_seqlens_q: expected the last entry to equal q.shape\[0\] \(7\)"),
    (dict(cu_seqlens_k=torch.tensor([0, 7], dtype=torch.int32)), ValueError, r"cu_seqlens_k: expected shape \(3,\) like cu_seqlens_q"),
    (dict(max_seqlen_q=3), ValueError, r"max_seqlen_q: expected at least the longest sequence of cu_seqlens_q \(4\)"),
    (dict(max_seqlen_k=2.0), TypeError, "max_seqlen_k: expected an int"),
    (dict(q=torch.zeros(1, 7, 2, 8)), ValueError, r"q: expected 3 dims \[total_tokens, heads, head_dim\]"),
])
def test_argument_errors_name_the_argument(change, error, pattern):
    kw = _base()
    kw.update(change)
    with pytest.raises(error, match=pattern):
        flash_attn_varlen_func(**kw)


def test_bias_errors_name_the_argument():
    kw = _base()
    with pytest.raises(ValueError, match=r"sigmoid_bias: expected shape \(2,\) \(one per sequence\)"):
        flash_attn_varlen_func(**kw, sigmoid_bias=torch.zeros(3))
    with pytest.raises(ValueError, match="sigmoid_bias: expected a number, \"auto\""):
        flash_attn_varlen_func(**kw, sigmoid_bias="log")
    with pytest.raises(ValueError, match=r"alibi_slopes: expected shape \(2,\) or \(2, 2\)"):
        flash_attn_varlen_func(**kw, alibi_slopes=torch.zeros(3, 2))


def test_bad_dropout_raises_like_the_dense_interface():
    # Dropout itself is tested in test_dropout_cpu.py.
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\), got 1.0"):
        flash_attn_varlen_func(**_base(), dropout_p=1.0)
    with pytest.raises(TypeError, match="dropout_p: expected a float, got str"):
        flash_attn_varlen_func(**_base(), dropout_p="0.1")


def test_torch_compile_gives_the_eager_result():
    # The CPU path reads the offsets on the host (a graph break under torch.compile, not an error).
    lq, lk = [5, 0, 9], [7, 2, 9]
    q, k, v = make(lq, lk, 2, 1, 16, torch.float32)
    cq, ck = cu(lq), cu(lk)

    def f(q, k, v):
        return flash_attn_varlen_func(q, k, v, cq, ck, 9, 9, causal=True, sigmoid_bias="auto")

    torch.testing.assert_close(torch.compile(f, backend="eager")(q, k, v), f(q, k, v), rtol=0, atol=0)


def test_runs_the_native_op_not_the_dense_path_per_sequence(monkeypatch):
    # Step 1 ran the dense op once per sequence through flash_attn_interface._attention; the native
    # path must not touch it (nor the dense ops), for the forward or the backward.
    def forbidden(*args, **kwargs):
        raise AssertionError("the dense path was called")
    monkeypatch.setattr(dense_interface, "_attention", forbidden)
    lq, lk = [5, 0, 9], [7, 2, 0]
    q, k, v = (t.requires_grad_() for t in make(lq, lk, 2, 1, 16, torch.float32))
    out = flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), 9, 7, causal=True, sigmoid_bias="auto")
    out.sum().backward()
    assert torch.all(out[5:] == 0) and torch.all(q.grad[5:] == 0)


def test_window_bounds_are_clamped_by_max_seqlen_k_like_flash_attn():
    # Right bound 3 >= Sk_0 = 2 but < max_seqlen_k = 8: not unbounded (flash-attn clamps with
    # max_seqlen_k), so rows 0..4 of sequence 0 (10 queries, 2 keys) see no key: j <= i - 8 + 3.
    lq, lk = [10, 4], [2, 8]
    q, k, v = make(lq, lk, 2, 2, 8, torch.float32)
    out = flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), 10, 8, window_size=(-1, 3))
    ref = per_sequence_reference(*(t.double() for t in (q, k, v)), lq, lk, False, (-1, 3), None, 0.0)
    assert (out.double() - ref).abs().max().item() <= 1e-5
    assert torch.all(out[:5] == 0) and torch.all(out[5:10] != 0)
    # A bound >= max_seqlen_k is unbounded.
    wide = flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), 10, 8, window_size=(-1, 8))
    torch.testing.assert_close(wide, flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), 10, 8), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_opcheck(dtype):
    lq, lk = [5, 0, 17, 1], [9, 3, 17, 0]
    q, k, v = (t.requires_grad_() for t in make(lq, lk, 4, 2, 16, dtype))
    slopes = torch.rand(4, 4)
    biases = torch.linspace(-3.0, 0.5, 4)
    varlen = (cu(lq), cu(lk), 17, 17)
    ops = torch.ops.flash_sigmoid
    seed = torch.tensor([-0x1234_5678_9ABC_DEF0, 11], dtype=torch.int64)
    for bias, dropout in (((-1.0, None, False), ()), ((0.0, biases, False), (0.0, None)),
                          ((0.0, None, True), (0.2, seed))):
        params = (*varlen, 0.25, *bias, True, 5, 0, slopes, 0, 0, "", False, *dropout)
        torch.library.opcheck(ops.varlen_fwd.default, (q, k, v, *params))
        dout = torch.randn(q.shape).to(dtype)
        torch.library.opcheck(ops.varlen_bwd.default, (dout, *(t.detach() for t in (q, k, v)), *params))


def test_torch_compile_fullgraph_is_one_node_forward_and_backward():
    lq, lk = [5, 0, 40, 1], [7, 2, 33, 0]
    cq, ck = cu(lq), cu(lk)
    biases = torch.linspace(-2.0, 0.5, 4)
    for bias in ("auto", biases, -0.5):
        def f(q, k, v):
            return flash_attn_varlen_func(q, k, v, cq, ck, 40, 33, causal=True, window_size=(9, -1),
                                          sigmoid_bias=bias)
        q, k, v = (t.requires_grad_() for t in make(lq, lk, 4, 2, 16, torch.float32))
        torch._dynamo.reset()  # each bias kind compiles afresh, once
        counter = CompileCounterWithBackend("aot_eager")
        out = torch.compile(f, backend=counter, fullgraph=True)(q, k, v)
        out.backward(torch.ones_like(out))
        assert counter.frame_count == 1
        names = [str(n.target) for g in counter.graphs for n in g.graph.nodes if n.op == "call_function"]
        assert sum("varlen_fwd" in n for n in names) == 1, names
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        want = f(q2, k2, v2)
        want.backward(torch.ones_like(want))
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        for got, ref in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize("cu_q, cu_k, max_q, pattern", [
    ([1, 3, 7], [0, 5, 7], 4, "cu_seqlens_q: expected the first entry to be 0, got 1"),
    ([0, 3, 7], [0, 5, 4], 4, "cu_seqlens_k: expected non-decreasing entries, got 5 then 4 at index 1"),
    ([0, 3, 6], [0, 5, 7], 4, r"cu_seqlens_q: expected the last entry to equal problem.seqlen_q \(7, the total rows\)"),
    ([0, 3, 7], [0, 5, 7], 3, r"max_seqlen_q: expected at least the longest sequence of cu_seqlens_q \(4\), got 3"),
])
def test_under_compile_the_op_checks_the_offsets(cu_q, cu_k, max_q, pattern):
    # Traced code does not read tensor values; the op (the C++ CPU path) checks them and names them.
    kw = _base()
    kw.update(cu_seqlens_q=torch.tensor(cu_q, dtype=torch.int32), cu_seqlens_k=torch.tensor(cu_k, dtype=torch.int32),
              max_seqlen_q=max_q)
    torch._dynamo.reset()
    with pytest.raises(RuntimeError, match=pattern):
        torch.compile(lambda **a: flash_attn_varlen_func(**a), backend="aot_eager", fullgraph=True)(**kw)


def test_the_op_rejects_a_bias_tensor_of_the_wrong_batch():
    kw = _base()
    ops = torch.ops.flash_sigmoid
    with pytest.raises(RuntimeError, match=r"sigmoid_bias_per_batch: expected shape \[2\] \(one per sequence\)"):
        ops.varlen_fwd(kw["q"], kw["k"], kw["v"], kw["cu_seqlens_q"], kw["cu_seqlens_k"], 4, 5, 0.3, 0.0,
                       torch.zeros(3), False, False, -1, -1, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match="cu_seqlens_q: expected dtype int32"):
        ops.varlen_fwd(kw["q"], kw["k"], kw["v"], kw["cu_seqlens_q"].long(), kw["cu_seqlens_k"], 4, 5, 0.3, 0.0,
                       None, False, False, -1, -1, None, 0, 0, "", False)

"""CPU tier: the ops registered in C++ (torch.ops.flash_sigmoid.*) — torch.library.opcheck (schema,
fake functions, autograd registration, AOT dispatch with dynamic shapes), the errors they raise, and
torch.compile(fullgraph=True) of models that call the interface, with no graph breaks."""
import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.fx.experimental.proxy_tensor import make_fx

import flash_sigmoid
from flash_sigmoid import flash_attn_func
from reference import attention_reference

ops = torch.ops.flash_sigmoid


def _qkv(b, sq, sk, hq, hkv, d, dtype=torch.float32, requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, s, h, d, generator=g).to(dtype).requires_grad_(requires_grad)
                 for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))


OPCHECK_CASES = [
    # b, sq, sk, hq, hkv, d, scale, bias, causal, left, right, alibi shape
    (2, 13, 17, 6, 2, 16, 0.25, -1.0, True, 3, 0, (2, 6)),
    (1, 9, 9, 2, 2, 8, 0.35, 0.0, False, -1, -1, None),
    (2, 20, 7, 3, 1, 12, 0.5, -2.0, False, 4, 2, (3,)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=["gqa_causal_window", "plain", "mqa_band"])
def test_opcheck(case, dtype):
    b, sq, sk, hq, hkv, d, scale, bias, causal, left, right, alibi = case
    q, k, v = _qkv(b, sq, sk, hq, hkv, d, dtype, requires_grad=True)
    slopes = None if alibi is None else torch.rand(alibi)
    params = (scale, bias, causal, left, right, slopes, 0, 0, "")
    dout = torch.randn(q.shape).to(dtype)
    plain = tuple(t.detach() for t in (q, k, v))
    seed = torch.tensor([0x1234_5678_9ABC_DEF0, 3], dtype=torch.int64)
    # Without dropout (the schema's defaults, and spelled out), and with p = 0.3 and a seed tensor.
    # The ALiBi shift last (alibi_offset, a piece of a longer sequence's distances).
    for dropout in ((), (0.0, None), (0.3, seed), (0.0, None, -7)):
        torch.library.opcheck(ops.fwd.default, (q, k, v, *params, False, *dropout))
        torch.library.opcheck(ops.bwd.default, (dout, *plain, *params, False, *dropout))
        torch.library.opcheck(ops.fwd_out.default, (*plain, *params, torch.empty(q.shape, dtype=dtype), *dropout))
    b, hq, sq, sk = q.shape[0], q.shape[2], q.shape[1], k.shape[1]
    torch.library.opcheck(ops.dropout_mask.default, (seed, 0.3, 1, b, hq, sq, sk))


def test_ops_compute_what_the_reference_does():
    q, k, v = _qkv(2, 11, 15, 4, 2, 24)
    out = ops.fwd(q, k, v, 0.3, -1.5, True, 4, 0, None, 0, 0, "", False)
    ref = attention_reference(q, k, v, scale=0.3, sigmoid_bias=-1.5, causal=True, window_size=(4, 0))
    assert (out.double() - ref).abs().max() < 1e-5 and out.is_contiguous()
    dout = torch.randn(q.shape)
    dq, dk, dv = ops.bwd(dout, q, k, v, 0.3, -1.5, True, 4, 0, None, 0, 0, "", True)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, scale=0.3, sigmoid_bias=-1.5, causal=True, window_size=(4, 0))
    ref.backward(dout.double())
    for got, want in ((dq, q64.grad), (dk, k64.grad), (dv, v64.grad)):
        assert (got.double() - want).abs().max() < 1e-4


def test_op_errors_carry_the_library_message():
    q, k, v = _qkv(1, 4, 4, 2, 2, 8)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: cpu::forward: problem.window_left: expected >= -1 "
                                           r"\(-1: unbounded\), got -2 \[invalid argument\]"):
        ops.fwd(q, k, v, 0.3, 0.0, False, -2, -1, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::bwd: cpu::backward: problem.heads_q: expected a multiple "
                                           r"of problem.heads_kv \(3\), got 2"):
        k3, v3 = torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8)
        ops.bwd(q, q, k3, v3, 0.3, 0.0, False, -1, -1, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: cpu::forward: problem.window_right: expected -1 or 0"):
        ops.fwd(q, k, v, 0.3, 0.0, True, -1, 2, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: v: expected the shape of k"):
        ops.fwd(q, k, v[:, :2], 0.3, 0.0, False, -1, -1, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: q: expected dtype float16, bfloat16 or float32 on "
                                           r"cpu, got float64"):
        ops.fwd(q.double(), k.double(), v.double(), 0.3, 0.0, False, -1, -1, None, 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: alibi_slopes: expected shape \[2\] or \[1, 2\]"):
        ops.fwd(q, k, v, 0.3, 0.0, False, -1, -1, torch.ones(3), 0, 0, "", False)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::fwd: score_function: expected 0"):
        ops.fwd(q, k, v, 0.3, 0.0, False, -1, -1, None, 7, 0, "", False)


def test_strided_alibi_slopes_are_read_correctly():
    q, k, v = _qkv(3, 6, 6, 2, 2, 8)
    wide = torch.rand(3, 5)
    slopes = wide[:, 1:3]  # batch stride 5 >= heads 2: read in place
    transposed = torch.rand(2, 3).t()  # head dim not contiguous: copied
    for s in (slopes, transposed):
        out = ops.fwd(q, k, v, 0.3, 0.0, False, -1, -1, s, 0, 0, "", False)
        ref = attention_reference(q, k, v, scale=0.3, alibi_slopes=s.contiguous())
        assert (out.double() - ref).abs().max() < 1e-5


def test_build_info_is_an_op():
    assert ops.build_info() == flash_sigmoid.build_info()
    assert flash_sigmoid.library_path.name == "libflash_sigmoid_torch.so"


class TinyModel(torch.nn.Module):
    def __init__(self, width=32, heads=4, kv_heads=2, bias=None):
        super().__init__()
        self.bias = bias  # None: -log(seqlen), which specialises a dynamic seqlen
        self.heads, self.kv_heads, self.d = heads, kv_heads, width // heads
        self.qkv = torch.nn.Linear(width, (heads + 2 * kv_heads) * self.d)
        self.out = torch.nn.Linear(heads * self.d, width)

    def forward(self, x, slopes):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, -1, self.d).split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        o = flash_attn_func(q, k, v, causal=True, window_size=(8, -1), alibi_slopes=slopes,
                            sigmoid_bias=-math.log(s) if self.bias is None else self.bias)
        return self.out(o.reshape(b, s, -1))


def _compile_and_compare(backend, dynamic=None, seqlens=(19,), bias=None):
    torch.manual_seed(0)
    model = TinyModel(bias=bias)
    slopes = torch.rand(4)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=dynamic)
    frames = []
    for s in seqlens:
        x = torch.randn(2, s, 32, requires_grad=True)
        y = compiled(x, slopes)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        x2 = x.detach().clone().requires_grad_()
        y2 = model(x2, slopes)
        (gx2,) = torch.autograd.grad(y2.square().sum(), x2)
        assert torch.allclose(y, y2, atol=1e-5) and torch.allclose(gx, gx2, atol=1e-4)
        frames.append(counter.frame_count)
    return frames


def test_compile_fullgraph_aot_eager_forward_and_backward():
    assert _compile_and_compare("aot_eager") == [1]  # one graph: no breaks


def test_compile_dynamic_shapes_one_graph():
    frames = _compile_and_compare("aot_eager", dynamic=True, seqlens=(19, 33, 40), bias=-3.0)
    assert frames[0] == frames[-1], frames  # no recompilation for new sequence lengths


def test_compile_fullgraph_inductor_forward_and_backward():
    assert _compile_and_compare("inductor") == [1]


def test_compile_sees_the_op_as_one_node():
    q, k, v = _qkv(1, 8, 8, 2, 2, 16)
    gm = make_fx(
        lambda q, k, v: flash_attn_func(q, k, v, causal=True), tracing_mode="fake")(q, k, v)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets == [ops.fwd.default]


def test_kernel_variant_is_checked_and_the_cpu_ignores_it():
    # kernel_variant picks a GPU mainloop by name; the CPU implementation has one path.
    q, k, v = _qkv(1, 5, 7, 2, 1, 8)
    assert torch.equal(flash_sigmoid.forward(q, k, v, kernel_variant="any_name"), flash_sigmoid.forward(q, k, v))
    with pytest.raises(ValueError, match=r"kernel_variant: expected a str"):
        flash_sigmoid.forward(q, k, v, kernel_variant=3)
    with pytest.raises(ValueError, match=r"kernel_variant: expected a str"):
        flash_sigmoid.backward(q, q, k, v, kernel_variant=None)


@pytest.mark.parametrize("causal", [False, True])
def test_alibi_offset_shifts_only_the_alibi_distances(causal):
    """Queries [q0, q0 + m) and keys [k0, k0 + n) of a longer sequence, with alibi_offset =
    (q0 - k0) - (n - m): out and dq, dk, dv equal an fp64 reference whose ALiBi term is
    -slope |(q0 + i) - (k0 + j)| and whose mask (causal here) stays the pieces' own, bottom-right
    aligned; a wrong shift, or a shifted mask, fails."""
    g = torch.Generator().manual_seed(21)
    b, h, d, m, n, q0, k0 = 2, 3, 16, 9, 14, 30, 4
    q, k, v, dout = (torch.randn(b, s, h, d, generator=g) for s in (m, n, n, m))
    slopes = torch.rand(b, h, generator=g)
    shift = (q0 - k0) - (n - m)
    kw = dict(scale=0.4, sigmoid_bias=-1.0, causal=causal, alibi_slopes=slopes)
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = flash_sigmoid.forward(qs, ks, vs, alibi_offset=shift, **kw)
    out.backward(dout)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    z = 0.4 * torch.einsum("bihd,bjhd->bhij", q64, k64) - 1.0
    dist = ((q0 + torch.arange(m))[:, None] - (k0 + torch.arange(n))[None, :]).abs().double()
    z = z - slopes.double()[:, :, None, None] * dist
    p = torch.sigmoid(z)
    if causal:  # key j visible from query i iff j <= i + (n - m): the pieces' own alignment
        p = p * (torch.arange(n)[None, :] <= torch.arange(m)[:, None] + (n - m)).double()
    ref = torch.einsum("bhij,bjhd->bihd", p, v64)
    ref.backward(dout.double())
    for name, got, want in (("out", out, ref), ("dq", qs.grad, q64.grad), ("dk", ks.grad, k64.grad),
                            ("dv", vs.grad, v64.grad)):
        assert (got.double() - want).abs().max().item() < 2e-5 * max(1.0, want.abs().max().item()), name
    plain = flash_sigmoid.forward(q, k, v, **kw)
    assert (plain.double() - ref).abs().max().item() > 1e-3, "the shift must change the result"
    with pytest.raises(ValueError, match="alibi_offset"):
        flash_sigmoid.forward(q, k, v, alibi_offset=1 << 30, **kw)
    with pytest.raises(TypeError, match="alibi_offset"):
        flash_sigmoid.backward(dout, q, k, v, alibi_offset=1.5, **kw)

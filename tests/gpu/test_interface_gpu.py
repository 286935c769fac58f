"""GPU tier: the flash-attn-compatible interface on CUDA tensors through the C++ ops — the interface
grid against the fp64 reference (DESIGN §7 tolerance rule: 2x the same-dtype torch error for
outputs, 3x for gradients), packed variants, padded head dims, strides and alignment the kernels
cannot read directly, bad inputs, torch's current stream, torch.compile and CUDA graphs.

Gradient tests need a GPU backward kernel. While build_info() lists none they are
xfail(strict=True, raises=RuntimeError): they must fail with the library's clear Unsupported error;
once one is built they run as ordinary tests. Skipped where no CUDA device is present.
"""
import itertools
import math

import pytest
import torch

from flash_sigmoid import build_info, flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func
from kernels import skip_unless_built
from reference import attention_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HAS_GPU_BACKWARD = any("_bwd_" in line for line in build_info().splitlines())
needs_gpu_backward = pytest.mark.xfail(
    not HAS_GPU_BACKWARD, raises=RuntimeError, strict=True,
    reason="no GPU backward kernel is built yet: flash_sigmoid::bwd reports Unsupported")

HEAD_DIMS = [40, 59, 64, 111, 128, 256]
SEQLENS = [(1, 1), (17, 17), (113, 203), (1024, 1023)]
MASKS = [(False, (-1, -1)), (True, (-1, -1)), (False, (37, 11)), (True, (64, -1))]
HEADS = [(4, 4), (6, 2), (3, 1)]
ALIBI = [None, "heads", "batch_heads"]


def make(b, sq, sk, hq, hkv, d, dtype, seed, requires_grad=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=g).requires_grad_(requires_grad)
                 for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))


def slopes_for(kind, b, hq):
    if kind is None:
        return None
    base = torch.tensor([2 ** (-8 * (h + 1) / hq) for h in range(hq)], device="cuda")
    return base if kind == "heads" else base[None] * torch.linspace(0.5, 1.5, b, device="cuda")[:, None]


def library_window(causal, window, sk):
    """flash-attn's window rules, written independently of the interface."""
    left, right = (-1 if w < 0 or w >= sk else w for w in window)
    return (left, 0) if causal else (left, right)


def check_output(out, q, k, v, **kw):
    ref = attention_reference(q, k, v, **kw)
    same = attention_reference(q, k, v, dtype=q.dtype, **kw)
    err = (out.double() - ref).abs().max().item()
    err_torch = (same.double() - ref).abs().max().item()
    assert not torch.isnan(out).any()
    assert err <= 2 * err_torch + 1e-5, f"max error {err:.3e} > 2 x torch {q.dtype} error {err_torch:.3e} + 1e-5"


def check_gradients(grads, q, k, v, dout, **kw):
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = torch.autograd.grad(attention_reference(q64, k64, v64, **kw), (q64, k64, v64), dout.double())
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    same = torch.autograd.grad(attention_reference(qs, ks, vs, dtype=q.dtype, **kw), (qs, ks, vs), dout)
    for name, got, r, s in zip(("dq", "dk", "dv"), grads, ref, same):
        err = (got.double() - r).abs().max().item()
        err_torch = (s.double() - r).abs().max().item()
        assert err <= 3 * err_torch + 1e-5, f"{name}: max error {err:.3e} > 3 x torch error {err_torch:.3e} + 1e-5"


def grid():
    cases = []
    for n, (d, (sq, sk), dtype) in enumerate(itertools.product(HEAD_DIMS, SEQLENS, [torch.float16, torch.bfloat16])):
        causal, window = MASKS[n % len(MASKS)]
        hq, hkv = HEADS[(n // 2) % len(HEADS)]
        alibi = ALIBI[(n // 3) % len(ALIBI)]
        bias = -math.log(sk) if n % 2 else 0.0
        b = 1 if sq * sk > 10 ** 6 else 2
        name = f"d{d}-{sq}x{sk}-{'fp16' if dtype == torch.float16 else 'bf16'}-c{int(causal)}w{window}-h{hq}_{hkv}-{alibi}"
        cases.append(pytest.param(b, sq, sk, hq, hkv, d, dtype, causal, window, alibi, bias, id=name))
    return cases


@pytest.mark.parametrize("b,sq,sk,hq,hkv,d,dtype,causal,window,alibi,bias", grid())
def test_interface_forward_grid(b, sq, sk, hq, hkv, d, dtype, causal, window, alibi, bias):
    skip_unless_built("fwd", dtype, d)
    q, k, v = make(b, sq, sk, hq, hkv, d, dtype, seed=sq + d)
    s = slopes_for(alibi, b, hq)
    out = flash_attn_func(q, k, v, 0.0, None, causal, window, s, False, False, bias)
    assert out.shape == q.shape and out.dtype == dtype
    check_output(out, q, k, v, sigmoid_bias=bias, causal=causal, window_size=library_window(causal, window, sk),
                 alibi_slopes=s)


@needs_gpu_backward
@pytest.mark.parametrize("d", [59, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_interface_gradients(d, dtype):
    q, k, v = make(2, 113, 203, 6, 2, d, dtype, seed=d, requires_grad=True)
    s = slopes_for("heads", 2, 6)
    kw = dict(sigmoid_bias=-math.log(203), causal=True, alibi_slopes=s)
    out = flash_attn_func(q, k, v, **kw)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    check_gradients(grads, q, k, v, dout, **kw)


@pytest.mark.skipif(HAS_GPU_BACKWARD, reason="a GPU backward kernel is built")
def test_gpu_backward_reports_unsupported_clearly():
    q, k, v = make(1, 17, 17, 2, 2, 64, torch.bfloat16, seed=1, requires_grad=True)
    out = flash_attn_func(q, k, v, causal=True)
    with pytest.raises(RuntimeError, match=r"flash_sigmoid::bwd: backward: .*\[unsupported\]"):
        out.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_packed_variants(dtype):
    g = torch.Generator(device="cuda").manual_seed(3)
    qkv = torch.randn(2, 77, 3, 4, 64, device="cuda", dtype=dtype, generator=g)
    out = flash_attn_qkvpacked_func(qkv, causal=True, sigmoid_bias=-2.0)
    q, k, v = qkv.unbind(2)
    check_output(out, q, k, v, causal=True, sigmoid_bias=-2.0)
    q = torch.randn(2, 50, 6, 59, device="cuda", dtype=dtype, generator=g)
    kv = torch.randn(2, 90, 2, 3, 59, device="cuda", dtype=dtype, generator=g)
    out = flash_attn_kvpacked_func(q, kv, 0.0, 0.2, False, (10, 3), None, False, False, -1.0)
    k, v = kv.unbind(2)
    check_output(out, q, k, v, scale=0.2, window_size=(10, 3), sigmoid_bias=-1.0)


@needs_gpu_backward
def test_packed_gradients():
    qkv = torch.randn(2, 77, 3, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = flash_attn_qkvpacked_func(qkv, causal=True)
    dout = torch.randn_like(out)
    (dqkv,) = torch.autograd.grad(out, qkv, dout)
    check_gradients(dqkv.unbind(2), *qkv.detach().unbind(2), dout, causal=True)


@pytest.mark.parametrize("d", [1, 3, 20, 59, 111, 250])
def test_padded_head_dims(d):
    skip_unless_built("fwd", torch.bfloat16, d)
    q, k, v = make(2, 33, 47, 4, 2, d, torch.bfloat16, seed=d)
    out = flash_attn_func(q, k, v, causal=True, sigmoid_bias=-math.log(47))
    assert out.shape == q.shape
    check_output(out, q, k, v, causal=True, sigmoid_bias=-math.log(47))


def test_strides_and_alignment_the_kernels_cannot_read():
    g = torch.Generator(device="cuda").manual_seed(5)
    b, s, h, d = 2, 65, 4, 64
    q = torch.randn(b, s, h, 66, device="cuda", dtype=torch.float16, generator=g)[..., :d]  # head stride 66
    flat = torch.randn(b * s * h * d + 1, device="cuda", dtype=torch.float16, generator=g)
    k = flat[1:].view(b, s, h, d)  # 2-byte offset: not 16-byte aligned
    v = torch.randn(b, d, s, h, device="cuda", dtype=torch.float16, generator=g).permute(0, 2, 3, 1)  # head dim strided
    assert q.stride(2) % 8 and k.data_ptr() % 16 and v.stride(-1) != 1
    out = flash_attn_func(q, k, v, window_size=(9, 9))
    check_output(out, q, k, v, window_size=(9, 9))


def test_bad_inputs_on_the_gpu():
    q, k, v = make(1, 8, 8, 2, 2, 64, torch.float16, seed=0)
    with pytest.raises(TypeError, match="q: expected dtype float16 or bfloat16 on cuda, got torch.float32"):
        flash_attn_func(q.float(), k.float(), v.float())
    with pytest.raises(ValueError, match="k: expected device cuda:0 like q, got cpu"):
        flash_attn_func(q, k.cpu(), v)
    with pytest.raises(ValueError, match="alibi_slopes: expected device cuda:0"):
        flash_attn_func(q, k, v, alibi_slopes=torch.ones(2))
    with pytest.raises(TypeError, match="alibi_slopes: expected dtype float32"):
        flash_attn_func(q, k, v, alibi_slopes=torch.ones(2, device="cuda", dtype=torch.float16))
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\)"):
        flash_attn_func(q, k, v, 1.0)  # dropout itself: test_dropout_gpu.py
    out, lse, probs = flash_attn_func(q, k, v, return_attn_probs=True)
    assert lse is None and probs.shape == (q.shape[0], q.shape[2], q.shape[1], k.shape[1])


def test_runs_on_torchs_current_stream():
    # The inputs are produced on a side stream behind a long sleep; a kernel launched on any other
    # stream would read them before they are written.
    q, k, v = make(2, 256, 256, 4, 4, 64, torch.bfloat16, seed=7)
    expected = flash_attn_func(q, k, v, causal=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        out = flash_attn_func(q2, k2, v2, causal=True)
    side.synchronize()
    assert torch.equal(out, expected)


def test_called_as_apples_tests_do():
    torch.random.manual_seed(0)
    batch_size, nheads, nheads_k, seqlen_q, seqlen_k, d = 4, 9, 3, 113, 203, 59
    window_size = torch.randint(0, seqlen_k, (2,))
    q = torch.randn(batch_size, seqlen_q, nheads, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(batch_size, seqlen_k, nheads_k, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(batch_size, seqlen_k, nheads_k, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    alibi_slopes = torch.rand(batch_size, nheads, device="cuda", dtype=torch.float32) * 0.3
    sigmoid_bias = torch.Tensor(1, ).to(q).uniform_(-10., 2.).float()
    # Apple's also passes return_attn_probs=True: here that returns flash-attn's (out, None, S_dmask).
    out_p, lse, _ = flash_attn_func(q, k, v, 0.0, causal=False, window_size=window_size, alibi_slopes=alibi_slopes,
                                    deterministic=False, return_attn_probs=True, sigmoid_bias=sigmoid_bias.cpu().item())
    assert lse is None
    out = flash_attn_func(q, k, v, 0.0, causal=False, window_size=window_size, alibi_slopes=alibi_slopes,
                          deterministic=False, sigmoid_bias=sigmoid_bias.cpu().item())
    assert torch.equal(out_p, out)
    check_output(out.detach(), q.detach(), k.detach(), v.detach(), sigmoid_bias=sigmoid_bias.item(),
                 window_size=library_window(False, [int(w) for w in window_size], seqlen_k), alibi_slopes=alibi_slopes)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(256, 3 * 256)

    def forward(self, x):
        b, s, _ = x.shape
        qkv = self.proj(x).view(b, s, 3, 4, 64)
        return flash_attn_qkvpacked_func(qkv, causal=True, sigmoid_bias=-math.log(s)).reshape(b, s, 256)


def test_compile_fullgraph_forward():
    block = Block().cuda().to(torch.bfloat16)
    x = torch.randn(2, 100, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        compiled = torch.compile(block, fullgraph=True)
        assert torch.allclose(compiled(x), block(x), atol=1e-2, rtol=1e-2)


@needs_gpu_backward
def test_compile_fullgraph_forward_and_backward():
    block = Block().cuda().to(torch.bfloat16)
    x = torch.randn(2, 100, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(block, fullgraph=True)
    (gx,) = torch.autograd.grad(compiled(x).float().sum(), x)
    (gx_eager,) = torch.autograd.grad(block(x).float().sum(), x)
    assert torch.allclose(gx, gx_eager, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("d", [64, 59])
def test_cuda_graph_captures_and_replays_the_forward(d):
    q, k, v = make(2, 129, 257, 4, 2, d, torch.bfloat16, seed=11)
    static_q = q.clone()
    slopes = slopes_for("heads", 2, 4)
    kw = dict(causal=True, sigmoid_bias=-math.log(257), alibi_slopes=slopes)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs advises
        flash_attn_func(static_q, k, v, **kw)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = flash_attn_func(static_q, k, v, **kw)
    for seed in (12, 13):
        new_q = make(2, 129, 257, 4, 2, d, torch.bfloat16, seed=seed)[0]
        static_q.copy_(new_q)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_out, flash_attn_func(new_q, k, v, **kw))
        check_output(static_out, new_q, k, v, **kw)


@needs_gpu_backward
def test_cuda_graph_captures_forward_and_backward():
    q, k, v = make(2, 129, 257, 4, 2, 64, torch.bfloat16, seed=14, requires_grad=True)
    dout = torch.randn_like(q)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.autograd.grad(flash_attn_func(q, k, v, causal=True), (q, k, v), dout)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = flash_attn_func(q, k, v, causal=True)
        static_grads = torch.autograd.grad(static_out, (q, k, v), dout)
    graph.replay()
    torch.cuda.synchronize()
    check_gradients(static_grads, q, k, v, dout, causal=True)

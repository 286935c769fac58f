"""GPU tier: attention dropout (docs/dropout.md) on CUDA tensors, mirroring tests/python/test_dropout_cpu.py.

The CPU implementation is checked against fp64 in the CPU tier; here the kernels are checked
- against the CPU implementation given the same seed tensor (copied to the host): out, dq, dk, dv of
  flash_sigmoid.forward/backward with an explicit seed, fp16/bf16, masks, GQA, head dims 64, 128 and
  40 (padded), odd lengths (113 x 203), deterministic=True bitwise reproducible;
- against the fp64 reference whose P is multiplied by the mask that return_attn_probs returns (the
  mask op is the policy's: this checks each kernel's mapping of its accumulator onto the layout);
- for the seed's graph safety: a captured CUDA graph draws a new seed per replay, and a replay after
  torch.cuda.manual_seed(s) equals the eager call after the same manual_seed;
- kept fraction and same-seed reproducibility as on the CPU.
Until the kernels apply dropout they answer Unsupported, and these tests fail with that message.
"""
import math

import pytest
import torch

import flash_sigmoid
from cases import make_inputs, slopes_for
from flash_sigmoid import flash_attn_func
from flash_sigmoid import ops as fs_ops
from kernels import skip_unless_built
from reference import attention_reference, dropout_factor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MASKS = [("none", False, (-1, -1)), ("causal", True, (-1, -1)), ("window", False, (37, 11))]
HEADS = [("mha", 4, 4), ("gqa", 6, 2)]


def _rel(got, want):
    got, want = got.double().cpu(), want.double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-300)).item()


def _skip_unless_built(dtype, d):
    skip_unless_built("fwd", dtype, d)
    skip_unless_built("bwd", dtype, d)


def _both(q, k, v, dout, seed, p, deterministic=False, **kw):
    """(out, dq, dk, dv) of the low-level calls with the seed tensor, on q's device."""
    out = flash_sigmoid.forward(q, k, v, dropout_p=p, dropout_seed=seed, **kw)
    grads = flash_sigmoid.backward(dout, q, k, v, dropout_p=p, dropout_seed=seed, deterministic=deterministic, **kw)
    return (out, *grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("d", [64, 128, 40])
@pytest.mark.parametrize("mask", MASKS, ids=[m[0] for m in MASKS])
@pytest.mark.parametrize("heads", HEADS, ids=[h[0] for h in HEADS])
def test_matches_the_cpu_implementation_with_the_same_seed(dtype, d, mask, heads):
    _skip_unless_built(dtype, d)
    _, causal, window = mask
    _, hq, hkv = heads
    q, k, v, dout = make_inputs(2, 113, 203, hq, hkv, d, dtype, seed=d + hq, with_dout=True)
    kw = dict(causal=causal, window_size=(window[0], 0 if causal else window[1]), sigmoid_bias=-math.log(203),
              alibi_slopes=slopes_for("heads", 2, hq))
    seed = fs_ops.new_dropout_seed("cuda")
    gpu = _both(q, k, v, dout, seed, 0.15, **kw)
    cpu_kw = dict(kw, alibi_slopes=kw["alibi_slopes"].cpu())
    cpu = _both(*(t.cpu() for t in (q, k, v, dout)), seed.cpu(), 0.15, **cpu_kw)
    for name, a, b in zip(("out", "dq", "dk", "dv"), gpu, cpu):
        assert _rel(a, b) < (2e-2 if dtype == torch.bfloat16 else 4e-3), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("d", [64, 128, 40])
def test_matches_fp64_with_the_returned_mask(dtype, d):
    _skip_unless_built(dtype, d)
    q, k, v, dout = make_inputs(2, 113, 203, 6, 2, d, dtype, seed=d, with_dout=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.manual_seed(3)
    out, _, s_dmask = flash_attn_func(q, k, v, dropout_p=0.25, causal=True, return_attn_probs=True)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    factor = dropout_factor(s_dmask, fs_ops.dropout_rescale(0.25))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, causal=True, dropout=factor)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
        assert _rel(got, want) < tol, name


def test_same_seed_is_bitwise_reproducible_and_deterministic_backward():
    _skip_unless_built(torch.bfloat16, 64)
    q, k, v, dout = make_inputs(2, 113, 203, 4, 2, 64, torch.bfloat16, seed=5, with_dout=True)
    seed = fs_ops.new_dropout_seed("cuda")
    first = _both(q, k, v, dout, seed, 0.3, deterministic=True, causal=True)
    again = _both(q, k, v, dout, seed, 0.3, deterministic=True, causal=True)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other = _both(q, k, v, dout, seed + torch.tensor([0, 1], device="cuda"), 0.3, deterministic=True, causal=True)
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_fraction_within_binomial_error(p):
    _skip_unless_built(torch.float16, 64)
    q, k, v = make_inputs(2, 128, 192, 4, 4, 64, torch.float16, seed=1)
    torch.manual_seed(5)
    _, _, s_dmask = flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True)
    dropped = torch.signbit(s_dmask).double().mean().item()
    rate = round(256 * p) / 256
    assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / s_dmask.numel())


def test_cuda_graph_replays_draw_new_seeds_like_eager_calls():
    _skip_unless_built(torch.bfloat16, 64)
    q, k, v = make_inputs(2, 113, 203, 4, 2, 64, torch.bfloat16, seed=9)
    kw = dict(dropout_p=0.2, causal=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        flash_attn_func(q, k, v, **kw)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = flash_attn_func(q, k, v, **kw)
    torch.cuda.manual_seed(21)
    graph.replay()
    first = static_out.clone()
    graph.replay()
    second = static_out.clone()
    assert not torch.equal(first, second)  # each replay draws a new {seed, offset}
    torch.cuda.manual_seed(21)
    eager_first = flash_attn_func(q, k, v, **kw)
    eager_second = flash_attn_func(q, k, v, **kw)
    assert torch.equal(first, eager_first) and torch.equal(second, eager_second)

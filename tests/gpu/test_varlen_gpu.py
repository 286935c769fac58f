"""GPU tier: the kernels' own packed sequences (docs/varlen.md) on CUDA tensors, against the fp64
reference run sequence by sequence, forward and gradients: the shared cases (lengths with 0 and 1,
Sq != Sk, masks, ALiBi, GQA/MQA, bias float / "auto" / [B]), random length mixes with 0, 1, 17 and
1000, head dims 64 and 128, both kernel families (kernel_arch 0 = the best, 90 where it runs, 80),
the lockstep cp.async sm90 forward by name, the deterministic backward; inputs inside NaN-filled
buffers (nothing past `total` may be read as contributing), sequences whose q, k, v, dout are NaN or
inf next to the checked ones (a TMA tile that reaches past a sequence reads its neighbour: it must
contribute nothing), outputs poisoned through the caching allocator; and CUDA-graph capture."""
import random

import pytest
import torch

from flash_sigmoid import flash_attn_varlen_func, flash_attn_varlen_kvpacked_func
from flash_sigmoid import flash_attn_interface as _dense
from flash_sigmoid import ops as _ops
from flash_sigmoid._library import ops as _lib
from kernels import skip_unless_built, skip_unless_sm90, skip_unless_sm90_variant
from varlen_cases import CASES, IDS, bias_arg, cu, make, per_sequence_reference, slopes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def poison_allocator(*tensors):
    """Leaves freed NaN-filled blocks of these tensors' sizes in torch's caching allocator, so an
    output row the kernels fail to write most likely reads NaN."""
    blocks = [torch.full(t.shape, float("nan"), device="cuda", dtype=t.dtype) for t in tensors]
    del blocks


def in_nan_buffer(t, extra=300):
    """t's values on the GPU as the first rows of a NaN-filled buffer of `extra` more rows."""
    buf = torch.full((t.shape[0] + extra, *t.shape[1:]), float("nan"), dtype=t.dtype, device="cuda")
    buf[: t.shape[0]] = t.cuda()
    return buf[: t.shape[0]]


def native(q, k, v, lq, lk, causal, window, alibi, bias, dout=None, kernel_arch=0, variant="", deterministic=False):
    """The varlen ops called directly (kernel_arch and kernel_variant are not flash-attn arguments):
    out, or (dq, dk, dv) when dout is given."""
    cq, ck = cu(lq).cuda(), cu(lk).cuda()
    left, right = _dense._flash_window(window, causal, max(lk))
    scale = q.shape[-1] ** -0.5
    bias_value, per_batch, auto = 0.0, None, False
    if isinstance(bias, torch.Tensor):
        per_batch = bias.float().cuda()
    elif bias == "auto":
        auto = True
    else:
        bias_value = float(bias)
    args = (cq, ck, max(lq), max(lk), scale, bias_value, per_batch, auto, causal, left, right,
            None if alibi is None else alibi.cuda(), _ops.SCORE_FUNCTIONS["exp2"], kernel_arch, variant, deterministic)
    if dout is None:
        poison_allocator(q)
        out = _lib.varlen_fwd(q, k, v, *args)
    else:
        poison_allocator(q, k, v)
        out = _lib.varlen_bwd(dout, q, k, v, *args)
    torch.cuda.synchronize()
    return out


def reference(q, k, v, lq, lk, causal, window, alibi, bias_kind, dout):
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    ref = per_sequence_reference(q64, k64, v64, lq, lk, causal, window, alibi, bias_kind)
    grads = torch.autograd.grad(ref, (q64, k64, v64), dout.cpu().double(), allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip((q64, k64, v64), grads)]
    return ref.detach(), grads


def rows_of(lengths, keep):
    """A mask of the packed rows that belong to the sequences in `keep`."""
    rows = torch.zeros(sum(lengths), dtype=torch.bool)
    start = 0
    for b, n in enumerate(lengths):
        rows[start:start + n] = b in keep
        start += n
    return rows


def check(name, got, want, rows=None, tol=3e-2):
    got = got.double().cpu()
    if rows is not None:
        got, want = got[rows], want[rows]
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= tol * max(1.0, want.abs().max().item() if want.numel() else 0.0), f"{name}: max error {err}"


ARCHS = [0, 80]


@pytest.mark.parametrize("kernel_arch", ARCHS, ids=["best", "sm80"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_shared_cases_forward_and_gradients(case, dtype, kernel_arch):
    lq, lk, hq, hkv, d, causal, window, alibi_kind, bias_kind = case
    skip_unless_built("fwd", dtype, d)
    skip_unless_built("bwd", dtype, d)
    q, k, v = make(lq, lk, hq, hkv, d, dtype)
    alibi = slopes(alibi_kind, len(lq), hq)
    bias = bias_arg(bias_kind, lk)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    qs, ks, vs, ds = (in_nan_buffer(t) for t in (q, k, v, dout))
    out = native(qs, ks, vs, lq, lk, causal, window, alibi, bias, kernel_arch=kernel_arch)
    grads = native(qs, ks, vs, lq, lk, causal, window, alibi, bias, dout=ds, kernel_arch=kernel_arch)
    ref, want = reference(q, k, v, lq, lk, causal, window, alibi, bias_kind, dout)
    check("out", out, ref)
    for name, g, w in zip(("dq", "dk", "dv"), grads, want):
        check(name, g, w)


# Random mixes: each with zero-length sequences on either side, a 1-row and a 17-row one, a long one,
# Sq != Sk per sequence; the masks: none, causal, causal + left window, two-sided window.
MASKS = [(False, (-1, -1)), (True, (-1, -1)), (True, (100, -1)), (False, (33, 5))]


def random_lengths(seed):
    rng = random.Random(seed)
    lq = [0, 1, 17, 1000, rng.randint(2, 300), 129, 0, rng.randint(1, 64)]
    lk = [3, 0, 17, 1000, rng.randint(2, 300), 127, 0, rng.randint(64, 200)]
    order = list(range(len(lq)))
    rng.shuffle(order)
    return [lq[i] for i in order], [lk[i] for i in order]


@pytest.mark.parametrize("kernel_arch", ARCHS, ids=["best", "sm80"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("mask", range(len(MASKS)), ids=["none", "causal", "causal_left", "band"])
def test_random_mixes_with_nan_neighbours(mask, d, kernel_arch):
    """Sequences 1 and 5 of the shuffled mix hold NaN / inf in q, k, v and dout: every other
    sequence's output and gradients must be exact to tolerance and finite."""
    dtype = torch.bfloat16
    skip_unless_built("fwd", dtype, d)
    skip_unless_built("bwd", dtype, d)
    causal, window = MASKS[mask]
    lq, lk = random_lengths(seed=d + mask)
    hq, hkv = 8, 2
    q, k, v = make(lq, lk, hq, hkv, d, dtype, seed=mask)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    alibi = slopes("heads", len(lq), hq) if mask == 1 else None
    bias = "auto" if mask % 2 else torch.linspace(-2.0, 0.0, len(lq))
    bias_kind = "auto" if mask % 2 else "tensor_b"
    poisoned = {1, 5}
    bad_q, bad_k = rows_of(lq, poisoned), rows_of(lk, poisoned)
    qp, dp, kp, vp = q.clone(), dout.clone(), k.clone(), v.clone()
    qp[bad_q] = float("nan")
    dp[bad_q] = float("inf")
    kp[bad_k] = float("inf")
    vp[bad_k] = float("nan")
    args = (lq, lk, causal, window, alibi, bias)
    out = native(*(in_nan_buffer(t) for t in (qp, kp, vp)), *args, kernel_arch=kernel_arch)
    grads = native(*(in_nan_buffer(t) for t in (qp, kp, vp)), *args, dout=in_nan_buffer(dp), kernel_arch=kernel_arch)
    if bias_kind == "tensor_b":
        # varlen_cases' "tensor" bias is its own linspace; this test's is checked through a float per sequence
        ref_bias = [float(x) for x in bias]
        outs, want = [], [[], [], []]
        oq = ok = 0
        for b in range(len(lq)):
            sl_q, sl_k = slice(oq, oq + lq[b]), slice(ok, ok + lk[b])
            r, g = reference(q[sl_q], k[sl_k], v[sl_k], [lq[b]], [lk[b]], causal, window, alibi, ref_bias[b],
                             dout[sl_q])
            outs.append(r)
            for i in range(3):
                want[i].append(g[i])
            oq, ok = oq + lq[b], ok + lk[b]
        ref, want = torch.cat(outs), [torch.cat(w) for w in want]
    else:
        ref, want = reference(q, k, v, lq, lk, causal, window, alibi, bias_kind, dout)
    check("out", out, ref, ~bad_q)
    check("dq", grads[0], want[0], ~bad_q)
    check("dk", grads[1], want[1], ~bad_k)
    check("dv", grads[2], want[2], ~bad_k)


@pytest.mark.parametrize("deterministic", [False, True])
def test_sm90_lockstep_forward_and_deterministic_backward(deterministic):
    """The cp.async sm90 forward (TMA's fallback) by name, and the sm80 family's deterministic
    backward (the sm90 backward has none), on a packed mix."""
    skip_unless_sm90_variant("fwd", 64, "cp_async")
    skip_unless_built("bwd", torch.bfloat16, 64)
    lq, lk = [130, 0, 1, 17, 255], [64, 9, 0, 200, 255]
    q, k, v = make(lq, lk, 4, 4, 64, torch.bfloat16, seed=9)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(6)).to(torch.bfloat16)
    ref, want = reference(q, k, v, lq, lk, True, (-1, -1), None, "auto", dout)
    qs, ks, vs, ds = (in_nan_buffer(t) for t in (q, k, v, dout))
    out = native(qs, ks, vs, lq, lk, True, (-1, -1), None, "auto", kernel_arch=90, variant="cp_async")
    check("out", out, ref)
    grads = native(qs, ks, vs, lq, lk, True, (-1, -1), None, "auto", dout=ds, deterministic=deterministic)
    for name, g, w in zip(("dq", "dk", "dv"), grads, want):
        check(name, g, w)
    if deterministic:
        again = native(qs, ks, vs, lq, lk, True, (-1, -1), None, "auto", dout=ds, deterministic=True)
        for g, h in zip(grads, again):
            assert torch.equal(g, h)


@pytest.mark.parametrize("variant", ["", "ws_persistent"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_sm90_forward_packed_with_more_tiles_than_sms(variant, causal, d):
    """24 packed sequences, 16 heads: 1536 query tiles (the grid's, 4 per sequence), most of them
    past their sequence's rows or without keys (zero-length sequences, lk = 0): the persistent TMA
    forward's blocks take about 12 each, runs of tiles that load nothing between the ones that do
    (the Q barrier's phases must stay in step), partial tiles, V tails of the next sequence."""
    skip_unless_sm90_variant("fwd", d, variant)
    rng = random.Random(17 + causal)
    lq = [rng.choice([0, 1, 33, 129, 300, 511]) for _ in range(24)]
    lk = [n if causal else rng.choice([0, 7, 200, 385]) for n in lq]
    q, k, v = make(lq, lk, 16, 4, d, torch.bfloat16, seed=12)
    qs, ks, vs = (in_nan_buffer(t) for t in (q, k, v))
    out = native(qs, ks, vs, lq, lk, causal, (-1, -1), None, "auto", kernel_arch=90, variant=variant)
    q64, k64, v64 = (t.double() for t in (q, k, v))
    check("out", out, per_sequence_reference(q64, k64, v64, lq, lk, causal, (-1, -1), None, "auto"))


@pytest.mark.parametrize("mask", range(len(MASKS)), ids=["none", "causal", "causal_left", "band"])
def test_sm90_det_backward_on_a_packed_mix(mask):
    """The sm90 backward with ordered dQ additions (variant "det") on a shuffled mix with empty
    sequences: gradients against fp64, then bitwise equal over 10 more runs."""
    skip_unless_sm90_variant("bwd", 64, "det")
    causal, window = MASKS[mask]
    lq, lk = random_lengths(seed=70 + mask)
    q, k, v = make(lq, lk, 8, 2, 64, torch.bfloat16, seed=mask)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(7)).to(torch.bfloat16)
    qs, ks, vs, ds = (in_nan_buffer(t) for t in (q, k, v, dout))
    args = (lq, lk, causal, window, None, "auto")
    grads = native(qs, ks, vs, *args, dout=ds, kernel_arch=90, variant="det", deterministic=True)
    _, want = reference(q, k, v, lq, lk, causal, window, None, "auto", dout)
    for name, g, w in zip(("dq", "dk", "dv"), grads, want):
        check(name, g, w)
    for _ in range(10):
        again = native(qs, ks, vs, *args, dout=ds, kernel_arch=90, variant="det", deterministic=True)
        for name, g, h in zip(("dq", "dk", "dv"), grads, again):
            assert torch.equal(g, h), f"{name} differs between runs"


def test_sm90_default_forward_is_served_for_packed_tensors():
    """kernel_arch 90: the TMA kernel serves a packed call and agrees with the sm80 family."""
    skip_unless_sm90("fwd", 128)
    lq, lk = [300, 0, 77], [129, 5, 1]
    q, k, v = (in_nan_buffer(t) for t in make(lq, lk, 8, 1, 128, torch.bfloat16, seed=3))
    a = native(q, k, v, lq, lk, False, (-1, -1), None, 0.25, kernel_arch=90)
    b = native(q, k, v, lq, lk, False, (-1, -1), None, 0.25, kernel_arch=80)
    assert torch.isfinite(a).all()
    assert (a.float() - b.float()).abs().max().item() <= 2e-2 * max(1.0, b.float().abs().max().item())


def test_autograd_entry_point_kvpacked_and_graph_capture():
    skip_unless_built("fwd", torch.bfloat16, 64)
    skip_unless_built("bwd", torch.bfloat16, 64)
    lq, lk = [5, 0, 130, 17], [9, 3, 200, 0]
    q, k, v = (t.cuda() for t in make(lq, lk, 8, 2, 64, torch.bfloat16, seed=2))
    cq, ck = cu(lq).cuda(), cu(lk).cuda()
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    out = flash_attn_varlen_func(qs, ks, vs, cq, ck, max(lq), max(lk), causal=True, sigmoid_bias="auto")
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (qs, ks, vs), dout)
    ref, want = reference(q, k, v, lq, lk, True, (-1, -1), None, "auto", dout)
    check("out", out.detach(), ref)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        check(name, g, w)
    kv = torch.stack((k, v), dim=1)
    assert torch.equal(flash_attn_varlen_kvpacked_func(q, kv, cq, ck, max(lq), max(lk), causal=True,
                                                       sigmoid_bias="auto"), out.detach())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = flash_attn_varlen_func(q, k, v, cq, ck, max(lq), max(lk), causal=True, sigmoid_bias="auto")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, out.detach())

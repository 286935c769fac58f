"""GPU tier: the backward kernels (dQ, dK, dV) against the fp64 reference.

Tolerance (DESIGN §7): max|grad - grad_ref64| <= 3 * max|grad_torch - grad_ref64| + floor, where
grad_torch is autograd through the reference in the inputs' own dtype and the floor is one rounding
of the largest reference gradient to that dtype (plus 1e-5 absolute): the least any
implementation that returns the dtype must lose, for the tiny cases where torch's own error can
happen to vanish.

Every feature is crossed with odd sizes and head dims, in both the default (atomic dQ) and the
deterministic mode. backward() has no out= argument, so outputs are poisoned through the caching
allocator instead: blocks of the outputs' sizes are filled with NaN and freed just before the call,
so an unwritten element most likely reads NaN (and every output is checked for NaN). Skipped where
no CUDA device is present.
"""
import itertools
import math

import pytest
import torch

import flash_sigmoid
from cases import ALIBI, BIASES, HEADS, MASKS, bias_value, make_inputs, slopes_for
from reference import attention_reference
from kernels import skip_unless_built, skip_unless_sm90, skip_unless_sm90_variant

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HEAD_DIMS = [32, 40, 59, 64, 96, 111, 128, 160, 192, 224, 256]
SEQLENS = [(1, 1), (17, 17), (113, 203), (128, 217), (1023, 1024), (1024, 1023)]
OUTPUT_ROUNDING = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}











def reference_grads(q, k, v, dout, dtype, **kw):
    """(dq, dk, dv) by autograd through attention_reference computed in `dtype`."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    out = attention_reference(*leaves, dtype=dtype, **kw)
    out.backward(dout.to(dtype))
    return tuple(t.grad for t in leaves)


def poison_allocator(*shapes_and_dtypes):
    """Leaves freed NaN-filled blocks of these sizes in torch's caching allocator."""
    blocks = [torch.full(shape, float("nan"), device="cuda", dtype=dtype) for shape, dtype in shapes_and_dtypes]
    del blocks


def run_backward(q, k, v, dout, deterministic, **kw):
    poison_allocator((q.shape, q.dtype), (k.shape, k.dtype), (v.shape, v.dtype))
    grads = flash_sigmoid.backward(dout, q, k, v, deterministic=deterministic, **kw)
    torch.cuda.synchronize()
    return grads


def check_grads(grads, q, k, v, dout, **kw):
    ref = reference_grads(q, k, v, dout, torch.float64, **kw)
    same = reference_grads(q, k, v, dout, q.dtype, **kw)
    errors = {}
    for name, g, r, s in zip(("dq", "dk", "dv"), grads, ref, same):
        assert g.shape == r.shape and g.dtype == q.dtype, f"{name}: shape {tuple(g.shape)} dtype {g.dtype}"
        assert not torch.isnan(g).any(), f"{name}: unwritten (NaN-poisoned) or NaN gradient"
        if r.numel() == 0:
            continue
        err = (g.double() - r).abs().max().item()
        err_torch = (s.double() - r).abs().max().item()
        ref_max = r.abs().max().item()
        floor = OUTPUT_ROUNDING[q.dtype] * ref_max + 1e-5
        assert err <= 3 * err_torch + floor, (
            f"{name}: max error {err:.3e} > 3 x torch {q.dtype} error {err_torch:.3e} + {floor:.1e} (max |ref| {ref_max:.3e})")
        errors[name] = (err, err_torch)
    return errors


def check_backward(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias_kind, seed, deterministic=False,
                   score_function="exp2", kernel_arch=0):
    skip_unless_built("bwd", dtype, d)
    _, causal, window = mask
    q, k, v, dout = make_inputs(b, sq, sk, hq, hkv, d, dtype, seed, with_dout=True)
    kw = dict(sigmoid_bias=bias_value(bias_kind, sk, seed), causal=causal, window_size=window,
              alibi_slopes=slopes_for(alibi, b, hq))
    grads = run_backward(q, k, v, dout, deterministic, score_function=score_function, kernel_arch=kernel_arch, **kw)
    return check_grads(grads, q, k, v, dout, **kw)


def grid():
    """Every head dim x seqlen pair x dtype, with the other features (deterministic mode included)
    rotated through so each appears at many sizes; plus a full cross of the features at one odd
    size (below)."""
    cases = []
    for n, (d, (sq, sk), dtype) in enumerate(itertools.product(HEAD_DIMS, SEQLENS, [torch.float16, torch.bfloat16])):
        mask = MASKS[n % len(MASKS)]
        heads = HEADS[(n // 2) % len(HEADS)]
        alibi = ALIBI[(n // 3) % len(ALIBI)]
        bias = BIASES[(n // 5) % len(BIASES)]
        deterministic = (n // 7) % 2 == 1
        b = 1 if sq * sk > 10**6 else 2
        cases.append(pytest.param(b, sq, sk, heads[1], heads[2], d, dtype, mask, alibi, bias, deterministic,
                                  id=f"d{d}-{sq}x{sk}-{str(dtype)[6:]}-{mask[0]}-{heads[0]}-alibi_{alibi}-{bias}"
                                     f"{'-det' if deterministic else ''}"))
    return cases


@pytest.mark.parametrize("b,sq,sk,hq,hkv,d,dtype,mask,alibi,bias,deterministic", grid())
def test_backward_grid(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias, deterministic):
    check_backward(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias, seed=hash((b, sq, sk, d)) % 2**31,
                   deterministic=deterministic)


# (deterministic, kernel_arch): the default mode on the best kernel for this GPU (the sm90 family
# on an H100 where it is built), the default mode on the sm80 family by name (so the sm80 kernel
# stays covered where sm90 is preferred), and the deterministic mode (sm80 only).
MODES = [pytest.param(False, 0, id="atomic"), pytest.param(False, 80, id="atomic-sm80"),
         pytest.param(True, 0, id="det")]


@pytest.mark.parametrize("deterministic,kernel_arch", MODES)
@pytest.mark.parametrize("mask", MASKS, ids=[m[0] for m in MASKS])
@pytest.mark.parametrize("alibi", ALIBI)
@pytest.mark.parametrize("heads", HEADS, ids=[h[0] for h in HEADS])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_backward_feature_cross(mask, alibi, heads, bias, dtype, deterministic, kernel_arch):
    check_backward(2, 113, 203, heads[1], heads[2], 64, dtype, mask, alibi, bias, seed=7, deterministic=deterministic,
                   kernel_arch=kernel_arch)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "det"])
@pytest.mark.parametrize("sq,sk", [(203, 113), (113, 203), (1, 300), (300, 1), (0, 5), (5, 0)])
def test_backward_sq_differs_from_sk(sq, sk, deterministic):
    for mask in MASKS:
        check_backward(2, sq, sk, 4, 2, 128, torch.bfloat16, mask, "heads", "minus_log_n", seed=sq + sk,
                       deterministic=deterministic)


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "det"])
def test_backward_empty_sides_are_exact_zeros(deterministic):
    # seqlen_q == 0: dK = dV = 0 (the kernel runs for them); seqlen_k == 0: dQ = 0.
    q, k, v, dout = make_inputs(2, 0, 77, 4, 2, 64, torch.bfloat16, seed=1, with_dout=True)
    _, dk, dv = run_backward(q, k, v, dout, deterministic)
    assert (dk == 0).all() and (dv == 0).all()
    q, k, v, dout = make_inputs(2, 77, 0, 4, 2, 64, torch.bfloat16, seed=1, with_dout=True)
    dq, _, _ = run_backward(q, k, v, dout, deterministic)
    assert (dq == 0).all()


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "det"])
def test_backward_hidden_rows_and_keys_are_exact_zeros(deterministic):
    skip_unless_built("bwd", torch.float16, 64)
    # Causal with Sq > Sk: the first Sq - Sk rows see no key, so their dQ is exactly 0.
    q, k, v, dout = make_inputs(1, 300, 100, 2, 2, 64, torch.float16, seed=2, with_dout=True)
    dq, _, _ = run_backward(q, k, v, dout, deterministic, causal=True)
    assert (dq[:, :200] == 0).all()
    # Window (10, 0) with Sq = 100 < Sk = 300: row i sees keys [i + 190, i + 200], so no query sees
    # a key below 190 and its dK, dV are exactly 0 (whole key tiles of them skip the mainloop).
    q, k, v, dout = make_inputs(1, 100, 300, 2, 2, 64, torch.float16, seed=3, with_dout=True)
    _, dk, dv = run_backward(q, k, v, dout, deterministic, window_size=(10, 0))
    assert (dk[:, :190] == 0).all() and (dv[:, :190] == 0).all()


def test_backward_deterministic_is_bitwise_reproducible():
    skip_unless_built("bwd", torch.bfloat16, 128)
    q, k, v, dout = make_inputs(2, 1000, 1200, 8, 2, 128, torch.bfloat16, seed=11, with_dout=True)
    kw = dict(causal=True, sigmoid_bias=-math.log(1200), alibi_slopes=slopes_for("heads", 2, 8))
    first = flash_sigmoid.backward(dout, q, k, v, deterministic=True, **kw)
    for _ in range(49):
        again = flash_sigmoid.backward(dout, q, k, v, deterministic=True, **kw)
        for name, a, b in zip(("dq", "dk", "dv"), first, again):
            assert torch.equal(a, b), f"{name} differs between deterministic runs"
    check_grads(first, q, k, v, dout, **kw)


def test_backward_atomic_and_deterministic_agree():
    skip_unless_built("bwd", torch.float16, 96)
    # dK and dV take the same path in both modes (bitwise equal); dQ differs only in summation order.
    q, k, v, dout = make_inputs(2, 517, 611, 6, 3, 96, torch.float16, seed=12, with_dout=True)
    kw = dict(window_size=(100, 20), sigmoid_bias=-2.0)
    atomic = flash_sigmoid.backward(dout, q, k, v, deterministic=False, **kw)
    det = flash_sigmoid.backward(dout, q, k, v, deterministic=True, **kw)
    assert torch.equal(atomic[1], det[1]) and torch.equal(atomic[2], det[2])
    ref = reference_grads(q, k, v, dout, torch.float64, **kw)[0]
    same = reference_grads(q, k, v, dout, q.dtype, **kw)[0]
    err_torch = (same.double() - ref).abs().max().item()
    assert (atomic[0].double() - det[0].double()).abs().max().item() <= 2 * err_torch


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "det"])
@pytest.mark.parametrize("hq,hkv", [(6, 2), (8, 1)])
def test_backward_gqa_dk_dv_are_group_sums(hq, hkv, deterministic):
    # The GQA kernel sums dK, dV over the query heads of each group; the same problem with K, V
    # repeated per query head (MHA) gives per-head gradients whose group sums must match.
    b, sq, sk, d = 2, 333, 257, 64
    q, k, v, dout = make_inputs(b, sq, sk, hq, hkv, d, torch.bfloat16, seed=13, with_dout=True)
    kw = dict(causal=True, sigmoid_bias=-math.log(sk), alibi_slopes=slopes_for("heads", b, hq))
    dq, dk, dv = run_backward(q, k, v, dout, deterministic, **kw)
    g = hq // hkv
    k_rep, v_rep = (t.repeat_interleave(g, dim=2).contiguous() for t in (k, v))
    dq_m, dk_m, dv_m = run_backward(q, k_rep, v_rep, dout, deterministic, **kw)
    if deterministic:
        assert torch.equal(dq, dq_m), "dQ of a query head does not depend on the kv layout"
    for name, grouped, per_head in (("dk", dk, dk_m), ("dv", dv, dv_m)):
        summed = per_head.double().view(b, sk, hkv, g, d).sum(3)
        # per_head was rounded once per query head before the sum; grouped once after it.
        tol = 2 * g * OUTPUT_ROUNDING[torch.bfloat16] * summed.abs().max().item()
        assert (grouped.double() - summed).abs().max().item() <= tol, name
    check_grads((dq, dk, dv), q, k, v, dout, **kw)


def test_backward_matches_central_finite_differences():
    skip_unless_built("bwd", torch.float16, 16)
    # Independent of autograd: the directional derivative <grad, u> of L = sum(out * dout) against
    # central differences of the fp64 reference forward, on tiny shapes.
    torch.manual_seed(0)
    b, sq, sk, hq, hkv, d = 1, 5, 7, 4, 2, 16
    q, k, v, dout = make_inputs(b, sq, sk, hq, hkv, d, torch.float16, seed=14, with_dout=True)
    kw = dict(causal=True, sigmoid_bias=0.3, alibi_slopes=slopes_for("heads", b, hq))
    for deterministic in (False, True):
        grads = flash_sigmoid.backward(dout, q, k, v, deterministic=deterministic, **kw)
        xs = [t.double() for t in (q, k, v)]
        for i in range(3):
            u = torch.randn_like(xs[i])
            h = 1e-4

            def loss(x):
                args = list(xs)
                args[i] = x
                return (attention_reference(*args, **kw) * dout.double()).sum().item()

            fd = (loss(xs[i] + h * u) - loss(xs[i] - h * u)) / (2 * h)
            analytic = (grads[i].double() * u).sum().item()
            scale = (grads[i].double().abs() * u.abs()).sum().item()
            assert abs(analytic - fd) <= 1e-2 * scale + 1e-6, (i, deterministic, analytic, fd)


def test_backward_strided_views():
    skip_unless_built("bwd", torch.bfloat16, 64)
    # q, k, v as views into one packed [b, s, 3, h, d] tensor, dout with a padded head stride.
    b, s, h, d = 2, 77, 4, 64
    qkv = torch.randn(b, s, 3, h, d, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    dout = torch.randn(b, s, h, d + 8, device="cuda", dtype=torch.bfloat16)[..., :d]
    for deterministic in (False, True):
        grads = run_backward(q, k, v, dout, deterministic, causal=True)
        check_grads(grads, q, k, v, dout, causal=True)


def test_backward_tanh_option_runs():
    skip_unless_built("bwd", torch.float16, 128)
    q, k, v, dout = make_inputs(1, 256, 2048, 4, 4, 128, torch.float16, seed=15, with_dout=True)
    bias = -math.log(2048)
    ref = reference_grads(q, k, v, dout, torch.float64, sigmoid_bias=bias)
    rel = {}
    for sf in ("exp2", "tanh"):
        grads = flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=bias, score_function=sf)
        assert all(torch.isfinite(g).all() for g in grads)
        rel[sf] = max(((g.double() - r).norm() / r.norm()).item() for g, r in zip(grads, ref))
    assert rel["exp2"] < rel["tanh"] < 0.1, rel


@pytest.mark.parametrize("kernel_arch", [80, 90])
@pytest.mark.parametrize("d", [64, 128])
def test_backward_named_arch(kernel_arch, d):
    if kernel_arch == 90:
        skip_unless_sm90("bwd", d)
    for mask in MASKS:
        check_backward(2, 129, 257, 4, 4, d, torch.bfloat16, mask, "heads", "minus_log_n", seed=5,
                       kernel_arch=kernel_arch)


def test_backward_sm90_refuses_deterministic_mode():
    # The sm90 family has no deterministic mode: by name it is a clear error, not a silent fallback.
    skip_unless_sm90("bwd", 64)
    q, k, v, dout = make_inputs(1, 64, 64, 2, 2, 64, torch.bfloat16, seed=6, with_dout=True)
    with pytest.raises(RuntimeError, match="deterministic"):
        flash_sigmoid.backward(dout, q, k, v, deterministic=True, kernel_arch=90)
    # With the arch left to the library, a deterministic call runs (on the sm80 family).
    grads = flash_sigmoid.backward(dout, q, k, v, deterministic=True)
    check_grads(grads, q, k, v, dout)


@pytest.mark.parametrize("sq,sk", [(1, 1), (65, 1000), (1000, 65), (640, 640), (1023, 1537)])
@pytest.mark.parametrize("d", [40, 64, 80, 111, 128])
def test_backward_sm90_sizes(sq, sk, d):
    # The sm90 kernel at odd sizes and head dims below its bucket (40, 80, 111: columns past the head
    # dim zero-filled; at 80 the dQ workspace's pitch, 96, is narrower than the 128 bucket, so its
    # reductions take the predicated path), every mask; GQA with ALiBi per (batch, head).
    skip_unless_sm90("bwd", d)
    for mask in MASKS:
        dtype = torch.bfloat16 if d in (64, 80, 111) else torch.float16
        check_backward(2, sq, sk, 6, 2, d, dtype, mask, "batch_heads", "uniform", seed=sq * 7 + sk + d,
                       kernel_arch=90)


def test_backward_dq_workspace_beyond_2_to_the_31():
    # The fp32 dQ workspace is [batch, heads_q, round_up(Sq, 128), round_up(D, 32)]. The API caps each
    # (batch, head) slice of q at 2^31 elements, and with contiguous [B, S, H, D] tensors a head's rows
    # span every head, so one batch holds at most 2^31 elements: the workspace passes 2^31 only across
    # batches. Here batch 3 x 2^30 elements: the last batch's offsets need 64 bits. Rows are
    # independent for dQ, so the last rows of the last batch and head are checked alone.
    b, sq, sk, h, d = 3, 1 << 16, 16, 64, 256
    need = 3 * b * sq * h * d * 2 + b * sq * h * d * 4 + (1 << 30)
    if torch.cuda.mem_get_info()[0] < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free GPU memory")
    skip_unless_built("bwd", torch.bfloat16, d)
    q, k, v, dout = make_inputs(b, sq, sk, h, 1, d, torch.bfloat16, seed=16, with_dout=True)
    dq, _, _ = flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=-1.0)
    rows = slice(sq - 1000, sq)
    qt, dot = q[-1:, rows, -1:], dout[-1:, rows, -1:]
    ref = reference_grads(qt, k[-1:], v[-1:], dot, torch.float64, sigmoid_bias=-1.0)[0]
    same = reference_grads(qt, k[-1:], v[-1:], dot, torch.bfloat16, sigmoid_bias=-1.0)[0]
    err = (dq[-1:, rows, -1:].double() - ref).abs().max().item()
    err_torch = (same.double() - ref).abs().max().item()
    assert err <= 3 * err_torch + OUTPUT_ROUNDING[torch.bfloat16] * ref.abs().max().item() + 1e-5


@pytest.mark.parametrize("kernel_arch", [80, 90])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_alibi_offset_forward_and_backward(kernel_arch, causal, d):
    # alibi_offset (a piece of a longer sequence, flash_sigmoid.parallel): queries [q0, q0 + m) and
    # keys [k0, k0 + n) with alibi_offset = (q0 - k0) - (n - m) give the global ALiBi distances
    # while the mask keeps the pieces' own bottom-right alignment; both families, odd sizes, GQA,
    # per-(batch, head) slopes, out and dq/dk/dv against an fp64 reference of that definition.
    family = "sm90a" if kernel_arch == 90 else "sm80"
    bucket = 64 if d <= 64 else 128
    for direction in ("fwd", "bwd"):
        if f"{family}_{direction}_bf16_hdim{bucket}_mask_{'right' if causal else 'none'}" not in flash_sigmoid.build_info():
            pytest.skip(f"{family} {direction} bf16 hdim {bucket} not built")
    if kernel_arch == 90 and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("sm_90a kernels run on compute capability 9.0 only")
    b, hq, hkv, m, n, q0, k0 = 2, 6, 2, 137, 201, 300, 150
    q, k, v, dout = make_inputs(b, m, n, hq, hkv, d, torch.bfloat16, seed=d + causal, with_dout=True)
    g = torch.Generator().manual_seed(5)
    slopes = (0.02 * torch.rand(b, hq, generator=g)).cuda()
    shift = (q0 - k0) - (n - m)
    kw = dict(sigmoid_bias=-math.log(n), causal=causal, alibi_slopes=slopes, kernel_arch=kernel_arch)
    out = flash_sigmoid.forward(q, k, v, alibi_offset=shift, **kw)
    grads = flash_sigmoid.backward(dout, q, k, v, alibi_offset=shift, **kw)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    group = hq // hkv
    kk, vv = (t.repeat_interleave(group, dim=2) for t in (k64, v64))
    z = d ** -0.5 * torch.einsum("bihd,bjhd->bhij", q64, kk) - math.log(n)
    distance = ((q0 + torch.arange(m, device="cuda"))[:, None] - (k0 + torch.arange(n, device="cuda"))[None, :])
    z = z - slopes.double()[:, :, None, None] * distance.abs().double()
    p = torch.sigmoid(z)
    if causal:  # the pieces' own alignment: key j visible from query i iff j <= i + (n - m)
        p = p * (torch.arange(n, device="cuda")[None, :] <= torch.arange(m, device="cuda")[:, None] + (n - m))
    ref = torch.einsum("bhij,bjhd->bihd", p, vv)
    want = torch.autograd.grad(ref, (q64, k64, v64), dout.double())

    def rel(got, w):
        return ((got.double() - w).norm() / w.norm()).item()

    assert rel(out, ref.detach()) < 1e-2, "out"
    for name, got, w in zip(("dq", "dk", "dv"), grads, want):
        assert torch.isfinite(got).all() and rel(got, w) < 2e-2, name
    unshifted = flash_sigmoid.forward(q, k, v, **kw)
    assert rel(unshifted, ref.detach()) > 0.05, "the shift must matter at this size"


@pytest.mark.parametrize("d", [64, 128])
def test_sm90_det_variant_is_bitwise_reproducible_and_correct(d):
    # The sm90 backward with ordered dQ additions (kernel variant "det"): against fp64 with the 3x
    # rule at odd sizes, every mask, GQA/MQA, both dtypes; then 20 more runs, bitwise equal. The
    # last cases have 512 and 384 key-tile blocks (several waves on 132 SMs: the order must hold
    # across blocks that are not resident together), causal MHA, and GQA with dropout at a fixed seed.
    skip_unless_sm90_variant("bwd", d, "det")
    bucket = 64 if d <= 64 else 128
    for dtype, kind in itertools.product(("fp16", "bf16"), ("none", "right", "band")):
        if f"sm90a_bwd_det_{dtype}_hdim{bucket}_mask_{kind}" not in flash_sigmoid.build_info():
            pytest.skip(f"sm90a_bwd_det_{dtype}_hdim{bucket}_mask_{kind} not built")
    cases = [(2, 333, 517, heads, mask) for mask, heads in zip(MASKS, itertools.cycle(HEADS))]
    cases += [(4, 2000, 2000, ("mha", 8, 8), MASKS[1]), (6, 1537, 4000, ("gqa", 8, 2), MASKS[0])]
    for n, (b, sq, sk, heads, mask) in enumerate(cases):
        dtype = torch.bfloat16 if n % 2 else torch.float16
        _, causal, window = mask
        q, k, v, dout = make_inputs(b, sq, sk, heads[1], heads[2], d, dtype, seed=50 + n, with_dout=True)
        kw = dict(sigmoid_bias=-math.log(sk), causal=causal, window_size=window, kernel_arch=90, kernel_variant="det")
        if n < len(MASKS):
            grads = run_backward(q, k, v, dout, True, **kw)
            ref_kw = {key: value for key, value in kw.items() if key not in ("kernel_arch", "kernel_variant")}
            check_grads(grads, q, k, v, dout, **ref_kw)
        if n == len(cases) - 1:
            kw.update(dropout_p=0.1, dropout_seed=torch.tensor([1234, 5], dtype=torch.int64, device="cuda"))
        first = flash_sigmoid.backward(dout, q, k, v, deterministic=True, **kw)
        for _ in range(20):
            again = flash_sigmoid.backward(dout, q, k, v, deterministic=True, **kw)
            for name, g, h in zip(("dq", "dk", "dv"), first, again):
                assert torch.equal(g, h), f"{name} differs between runs (case {n})"

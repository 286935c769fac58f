"""GPU tier: the forward kernels against the fp64 reference (DESIGN §7 tolerance rule).

Every feature is crossed with odd sizes and head dims; outputs are poisoned with NaN first so an
unwritten element fails. Skipped where no CUDA device is present.
"""
import itertools
import math

import pytest
import torch

import flash_sigmoid
from cases import ALIBI, BIASES, HEADS, MASKS, bias_value, make_inputs, slopes_for
from kernels import skip_unless_built, skip_unless_sm90, skip_unless_sm90_variant
from reference import attention_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HEAD_DIMS = [32, 40, 59, 64, 96, 111, 128, 160, 192, 224, 256]
SEQLENS = [(1, 1), (17, 17), (113, 203), (128, 217), (1023, 1024), (1024, 1023), (2048, 2048)]











def check_forward(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias_kind, seed, score_function="exp2",
                  kernel_arch=0, kernel_variant=""):
    skip_unless_built("fwd", dtype, d)
    _, causal, window = mask
    q, k, v = make_inputs(b, sq, sk, hq, hkv, d, dtype, seed)
    bias = bias_value(bias_kind, sk, seed)
    slopes = slopes_for(alibi, b, hq)
    kw = dict(sigmoid_bias=bias, causal=causal, window_size=window, alibi_slopes=slopes)
    out = None
    if d % 8 == 0:  # poison: every element must be written
        out = torch.full_like(q, float("nan"))
    out = flash_sigmoid.forward(q, k, v, score_function=score_function, kernel_arch=kernel_arch,
                                kernel_variant=kernel_variant, out=out, **kw)
    torch.cuda.synchronize()
    ref = attention_reference(q, k, v, **kw)
    same_dtype = attention_reference(q, k, v, dtype=dtype, **kw)
    err = (out.double() - ref).abs().max().item()
    err_torch = (same_dtype.double() - ref).abs().max().item()
    floor = 1e-5 * max(ref.abs().max().item(), 1.0)
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN output"
    assert err <= 2 * err_torch + floor, f"max error {err:.3e} > 2 x torch {dtype} error {err_torch:.3e} + {floor:.1e}"
    return err, err_torch


def grid():
    """Every head dim x seqlen pair x dtype, with the other features rotated through so each
    appears at many sizes; plus a full cross of the features at one odd size (below)."""
    cases = []
    for n, (d, (sq, sk), dtype) in enumerate(itertools.product(HEAD_DIMS, SEQLENS, [torch.float16, torch.bfloat16])):
        mask = MASKS[n % len(MASKS)]
        heads = HEADS[(n // 2) % len(HEADS)]
        alibi = ALIBI[(n // 3) % len(ALIBI)]
        bias = BIASES[(n // 5) % len(BIASES)]
        b = 1 if sq * sk > 10**6 else 2
        cases.append(pytest.param(b, sq, sk, heads[1], heads[2], d, dtype, mask, alibi, bias,
                                  id=f"d{d}-{sq}x{sk}-{str(dtype)[6:]}-{mask[0]}-{heads[0]}-alibi_{alibi}-{bias}"))
    return cases


@pytest.mark.parametrize("b,sq,sk,hq,hkv,d,dtype,mask,alibi,bias", grid())
def test_forward_grid(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias):
    check_forward(b, sq, sk, hq, hkv, d, dtype, mask, alibi, bias, seed=hash((b, sq, sk, d)) % 2**31)


@pytest.mark.parametrize("mask", MASKS, ids=[m[0] for m in MASKS])
@pytest.mark.parametrize("alibi", ALIBI)
@pytest.mark.parametrize("heads", HEADS, ids=[h[0] for h in HEADS])
@pytest.mark.parametrize("bias", BIASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("kernel_arch", [0, 80], ids=["best", "sm80"])  # sm80 by name where sm90 is preferred
def test_forward_feature_cross(mask, alibi, heads, bias, dtype, kernel_arch):
    check_forward(2, 113, 203, heads[1], heads[2], 64, dtype, mask, alibi, bias, seed=7, kernel_arch=kernel_arch)


@pytest.mark.parametrize("sq,sk", [(203, 113), (1, 300), (300, 1), (5, 0)])
def test_forward_sq_differs_from_sk(sq, sk):
    for mask in MASKS:
        check_forward(2, sq, sk, 4, 2, 128, torch.bfloat16, mask, "heads", "minus_log_n", seed=sq + sk)


def test_forward_tanh_option_runs_and_is_less_accurate_at_minus_log_n():
    skip_unless_built("fwd", torch.float16, 128)
    q, k, v = make_inputs(1, 256, 8192, 4, 4, 128, torch.float16, seed=3)
    bias = -math.log(8192)
    ref = attention_reference(q, k, v, sigmoid_bias=bias)
    rel = {}
    for sf in ("exp2", "tanh"):
        out = flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, score_function=sf)
        rel[sf] = ((out.double() - ref).norm() / ref.norm()).item()
    assert rel["exp2"] < rel["tanh"], rel


def test_forward_strided_views():
    skip_unless_built("fwd", torch.bfloat16, 64)
    # q, k, v as views into one packed [b, s, 3, h, d] tensor; out a view with padded head stride.
    b, s, h, d = 2, 77, 4, 64
    qkv = torch.randn(b, s, 3, h, d, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)
    out_buf = torch.full((b, s, h, d + 8), float("nan"), device="cuda", dtype=torch.bfloat16)
    out = out_buf[..., :d]
    flash_sigmoid.forward(q, k, v, causal=True, out=out)
    ref = attention_reference(q, k, v, causal=True)
    same = attention_reference(q, k, v, causal=True, dtype=torch.bfloat16)
    assert (out.double() - ref).abs().max() <= 2 * (same.double() - ref).abs().max() + 1e-5
    assert torch.isnan(out_buf[..., d:]).all(), "wrote outside the output view"


def test_forward_fully_masked_rows_are_zero():
    skip_unless_built("fwd", torch.float16, 64)
    # Sq > Sk causal: the first Sq - Sk rows see no key.
    q, k, v = make_inputs(1, 50, 20, 2, 2, 64, torch.float16, seed=1)
    out = flash_sigmoid.forward(q, k, v, causal=True, out=torch.full_like(q, float("nan")))
    assert (out[:, :30] == 0).all()


def test_forward_nan_in_q_gives_nan_in_its_row_only():
    # A NaN score must not be clamped into a finite sigma (the clamp at -125 is FMNMX.NAN).
    skip_unless_built("fwd", torch.bfloat16, 64)
    q, k, v = make_inputs(1, 130, 150, 2, 2, 64, torch.bfloat16, seed=4)
    q[0, 5, 1, 7] = float("nan")
    for score_function in ("exp2", "tanh"):
        out = flash_sigmoid.forward(q, k, v, sigmoid_bias=-math.log(150), score_function=score_function)
        assert torch.isnan(out[0, 5, 1]).all(), score_function
        nan_rows = torch.isnan(out).any(dim=-1)
        nan_rows[0, 5, 1] = False
        assert not nan_rows.any(), score_function


def test_forward_fp16_overflow_is_inf():
    skip_unless_built("fwd", torch.float16, 64)
    # O is not normalised: with bias 0 and all-positive v, |O| ~ Sk/2 * v overflows fp16 (65504).
    q = torch.zeros(1, 4, 1, 64, device="cuda", dtype=torch.float16)
    k = torch.zeros(1, 300000, 1, 64, device="cuda", dtype=torch.float16)
    v = torch.ones(1, 300000, 1, 64, device="cuda", dtype=torch.float16)
    out = flash_sigmoid.forward(q, k, v)
    assert torch.isinf(out).all() and (out > 0).all()


@pytest.mark.parametrize("kernel_arch", [80, 90])
@pytest.mark.parametrize("d", [64, 128, 192, 256])
def test_forward_named_arch(kernel_arch, d):
    if kernel_arch == 90:
        skip_unless_sm90("fwd", d)
    for mask in MASKS:
        check_forward(2, 129, 257, 4, 4, d, torch.bfloat16, mask, "heads", "minus_log_n", seed=5,
                      kernel_arch=kernel_arch)


@pytest.mark.parametrize("sq,sk", [(1, 1), (65, 1000), (1000, 65), (640, 640), (1023, 1537), (300, 129)])
@pytest.mark.parametrize("d", [40, 64, 80, 111, 128, 136, 200, 256])
def test_forward_sm90_sizes(sq, sk, d):
    # The sm90 kernel at odd sizes (one key tile, two, many; partial tiles) and head dims below its
    # bucket (columns past the head dim zero-filled), every mask; GQA with ALiBi per (batch, head).
    skip_unless_sm90("fwd", d)
    for mask in MASKS:
        dtype = torch.bfloat16 if d in (64, 80, 111, 200) else torch.float16
        check_forward(2, sq, sk, 6, 2, d, dtype, mask, "batch_heads", "uniform", seed=sq * 7 + sk + d,
                      kernel_arch=90)

def test_forward_kernel_variant_by_name():
    # A variant is served by its own kernels only: one that is not built is a clear error naming it,
    # never a silent fall back to the default mainloop; "" is the default.
    skip_unless_built("fwd", torch.bfloat16, 64)
    g = torch.Generator(device="cuda").manual_seed(11)
    q, k, v = (torch.randn(1, 65, 2, 64, device="cuda", generator=g).bfloat16() for _ in range(3))
    with pytest.raises(RuntimeError, match=r"variant 'no_such_mainloop'.*built"):
        flash_sigmoid.forward(q, k, v, kernel_variant="no_such_mainloop")
    assert torch.equal(flash_sigmoid.forward(q, k, v, kernel_variant=""), flash_sigmoid.forward(q, k, v))


WS_VARIANTS = ["", "ws_lockstep", "ws_wide", "ws_deep", "ws_persistent", "ws_relu", "ws_mix4", "cp_async"]  # "": the TMA kernel with ping-pong


@pytest.mark.parametrize("variant", WS_VARIANTS)
@pytest.mark.parametrize("sq,sk", [(1, 1), (65, 1000), (1000, 65), (640, 640), (1023, 1537), (300, 129), (129, 4099)])
@pytest.mark.parametrize("d", [40, 64, 96, 128, 160, 192, 224, 256])
def test_forward_sm90_ws_sizes(variant, sq, sk, d):
    # The warp-specialized TMA forward by name: one key tile, two, many, odd partial tiles (TMA zero
    # fill past the sequence), head dims below the bucket (zero fill past the head dim), every mask,
    # GQA with ALiBi per (batch, head), both score functions and dtypes.
    skip_unless_sm90_variant("fwd", d, variant)
    for n, mask in enumerate(MASKS):
        dtype = torch.bfloat16 if (n + d) % 2 else torch.float16
        check_forward(2, sq, sk, 6, 2, d, dtype, mask, "batch_heads", "minus_log_n", seed=sq * 7 + sk + d + n,
                      kernel_arch=90, kernel_variant=variant, score_function="exp2" if n % 3 else "tanh")


@pytest.mark.parametrize("variant", WS_VARIANTS)
@pytest.mark.parametrize("d", [64, 128, 192, 256])
def test_forward_sm90_ws_features(variant, d):
    # Every mask x ALiBi x head layout (MHA, GQA, MQA) x bias at one odd size, per head-dim bucket.
    skip_unless_sm90_variant("fwd", d, variant)
    for n, (mask, alibi, heads, bias) in enumerate(itertools.product(MASKS, ALIBI, HEADS, BIASES)):
        check_forward(2, 113, 203, heads[1], heads[2], d, torch.bfloat16, mask, alibi, bias, seed=n,
                      kernel_arch=90, kernel_variant=variant)


@pytest.mark.parametrize("variant", ["", "ws_relu", "ws_mix4"])
@pytest.mark.parametrize("bias", [-80.0, -87.5, -88.3, -88.7, -89.5, -100.0, -300.0])
def test_forward_sm90_scores_far_below_zero(variant, bias):
    # Scores where sigma is near or below the smallest normal float (z < -87.3) and where ex2
    # overflows (z < -88.7): ws_relu has no clamp, so this is the range its reciprocal must keep
    # finite (never NaN) and its relu pack must turn -inf into 0. fp16 and bf16, a masked and an
    # unmasked tile; O must be finite, >= -tiny where V > 0, and match fp64 to its own magnitude.
    skip_unless_sm90_variant("fwd", 64, variant)
    for dtype, causal in ((torch.bfloat16, False), (torch.float16, True)):
        q, k, v = make_inputs(1, 200, 300, 2, 2, 64, dtype, seed=int(-bias))
        v = v.abs()  # O > 0 exactly when some P > 0
        out = flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal, kernel_arch=90, kernel_variant=variant)
        assert torch.isfinite(out).all()
        assert (out >= 0).all()
        ref = attention_reference(q, k, v, sigmoid_bias=bias, causal=causal)
        # Allowed: bf16/fp16 rounding of O, fp16's smallest step (O underflows there), and per key
        # what each form cannot represent: the default's clamp (sigma >= 2^-125, an absolute error
        # < 3e-38), ws_relu's 0 where ex2 overflows (sigma < 2^-128 = 2.9e-39).
        tol = 2e-2 * ref.abs().max().item() + (6e-8 if dtype == torch.float16 else 1e-40)
        tol += 300 * (3e-38 if variant == "" else 3e-39) * v.abs().max().item()
        assert (out.double() - ref).abs().max().item() <= tol


@pytest.mark.parametrize("variant", ["", "ws_persistent"])
@pytest.mark.parametrize("d", [64, 128])
def test_forward_sm90_ws_more_tiles_than_sms(variant, d):
    # 240-320 query tiles, so each block of the persistent grid (one per SM) takes one to three: Q's
    # buffer released after a tile's last S product and refilled under its epilogue, O's own staging
    # buffer reused tile after tile, the barrier phases carried over; under a right bound (causal,
    # window_right: 280 tiles, 7 per head) the tiles go in pairs, the odd count's middle tile alone.
    # Odd lengths, every mask, GQA, both dtypes.
    skip_unless_sm90_variant("fwd", d, variant)
    for n, mask in enumerate(MASKS):
        sq, sk = ((897, 897), (777, 1555), (700, 261))[n % 3]
        dtype = torch.bfloat16 if n % 2 else torch.float16
        check_forward(5, sq, sk, 8, 2, d, dtype, mask, "heads", "minus_log_n", seed=300 + n + d,
                      kernel_arch=90, kernel_variant=variant)


@pytest.mark.parametrize("variant", WS_VARIANTS)
def test_forward_sm90_ws_matches_cp_async_kernel(variant):
    # Same products as the cp.async sm90 kernel: results agree to rounding.
    skip_unless_sm90_variant("fwd", 128, variant)
    skip_unless_sm90_variant("fwd", 128, "cp_async")
    q, k, v = make_inputs(2, 1000, 3000, 8, 2, 128, torch.bfloat16, seed=21)
    for causal in (False, True):
        ref = flash_sigmoid.forward(q, k, v, sigmoid_bias=-math.log(3000), causal=causal, kernel_arch=90,
                                    kernel_variant="cp_async")
        out = flash_sigmoid.forward(q, k, v, sigmoid_bias=-math.log(3000), causal=causal, kernel_arch=90,
                                    kernel_variant=variant)
        assert (out.float() - ref.float()).abs().max().item() <= 2e-2 * ref.float().abs().max().item()


@pytest.mark.parametrize("variant", WS_VARIANTS)
def test_forward_sm90_ws_tensors_tma_cannot_describe(variant):
    # Base not 16-byte aligned, strides not multiples of 16 bytes, an empty key set, a head dim whose
    # rows are not 16-byte multiples: the cp.async sm90 kernel serves these, with correct results
    # and nothing written outside the output.
    skip_unless_sm90_variant("fwd", 64, variant)
    b, s, h, d = 2, 77, 4, 64
    buf = torch.randn(b * s * h * d + 1, device="cuda", dtype=torch.bfloat16)
    q = buf[1:].view(b, s, h, d)  # 2-byte offset from an aligned allocation
    k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    out_buf = torch.full((b, s, h, d + 8), float("nan"), device="cuda", dtype=torch.bfloat16)
    out = out_buf[..., :d]
    flash_sigmoid.forward(q, k, v, causal=True, out=out, kernel_arch=90, kernel_variant=variant)
    ref = attention_reference(q, k, v, causal=True)
    same = attention_reference(q, k, v, causal=True, dtype=torch.bfloat16)
    assert (out.double() - ref).abs().max() <= 2 * (same.double() - ref).abs().max() + 1e-5
    assert torch.isnan(out_buf[..., d:]).all(), "wrote outside the output view"
    # k and v with a head stride of 68 elements (136 bytes): a padded buffer.
    kv_buf = torch.randn(2, b, s, h, d + 4, device="cuda", dtype=torch.bfloat16)
    k2, v2 = kv_buf[0, ..., :d], kv_buf[1, ..., :d]
    q2 = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
    out2 = flash_sigmoid.forward(q2, k2, v2, kernel_arch=90, kernel_variant=variant)
    ref2 = attention_reference(q2, k2, v2)
    same2 = attention_reference(q2, k2, v2, dtype=torch.bfloat16)
    assert (out2.double() - ref2).abs().max() <= 2 * (same2.double() - ref2).abs().max() + 1e-5
    check_forward(2, 5, 0, 4, 2, 64, torch.bfloat16, MASKS[0], "none", "uniform", seed=3, kernel_arch=90,
                  kernel_variant=variant)
    check_forward(2, 130, 150, 4, 2, 59, torch.bfloat16, MASKS[1], "none", "uniform", seed=4, kernel_arch=90,
                  kernel_variant=variant)


@pytest.mark.parametrize("d", [184, 248])
def test_forward_above_d128_partial_head_dims_and_no_keys(d):
    # Above D 128 the sm90 family has only its TMA forward: head dims below the bucket (TMA's zero
    # fill past the head dim), written exactly into a poisoned output view; an empty key set needs
    # no K/V descriptor and gives O = 0 from the TMA kernel itself. (Tensors TMA cannot describe:
    # tests/cpp/test_gpu_forward.cpp.)
    skip_unless_sm90_variant("fwd", d, "")
    b, s, h = 2, 77, 4
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out_buf = torch.full((b, s, h, d + 8), float("nan"), device="cuda", dtype=torch.bfloat16)
    out = out_buf[..., :d]
    flash_sigmoid.forward(q, k, v, causal=True, out=out, kernel_arch=90)
    ref = attention_reference(q, k, v, causal=True)
    same = attention_reference(q, k, v, causal=True, dtype=torch.bfloat16)
    assert (out.double() - ref).abs().max() <= 2 * (same.double() - ref).abs().max() + 1e-5
    assert torch.isnan(out_buf[..., d:]).all(), "wrote outside the output view"
    k0 = torch.empty(b, 0, h, d, device="cuda", dtype=torch.bfloat16)
    out0 = flash_sigmoid.forward(q, k0, k0, out=torch.full_like(q, float("nan")), kernel_arch=90)
    assert torch.equal(out0, torch.zeros_like(out0))
    # K and V broadcast over the batch (expand: batch stride 0) reach the kernels as they are; TMA
    # cannot take a zero stride, so the sm90 family declines (an error naming why when asked for by
    # name) and the sm80 family serves them by default.
    k1, v1 = k[:1].expand(b, -1, -1, -1), v[:1].expand(b, -1, -1, -1)
    with pytest.raises(RuntimeError, match=r"TMA cannot describe q, k or v"):
        flash_sigmoid.forward(q, k1, v1, kernel_arch=90)
    if f"sm80_fwd_bf16_hdim{(d + 63) // 64 * 64}_mask_none" in flash_sigmoid.build_info():
        ref1 = attention_reference(q, k1, v1)
        same1 = attention_reference(q, k1, v1, dtype=torch.bfloat16)
        assert (flash_sigmoid.forward(q, k1, v1).double() - ref1).abs().max() <= \
            2 * (same1.double() - ref1).abs().max() + 1e-5


@pytest.mark.parametrize("variant", WS_VARIANTS)
def test_forward_sm90_ws_deterministic_and_no_hang(variant):
    # Many thread blocks and long key ranges through the mbarrier ring: bitwise-identical repeats.
    skip_unless_sm90_variant("fwd", 128, variant)
    q, k, v = make_inputs(4, 2048, 2048, 16, 4, 128, torch.bfloat16, seed=8)
    for causal in (False, True):
        first = flash_sigmoid.forward(q, k, v, causal=causal, kernel_arch=90, kernel_variant=variant)
        for _ in range(5):
            assert torch.equal(flash_sigmoid.forward(q, k, v, causal=causal, kernel_arch=90, kernel_variant=variant),
                               first)

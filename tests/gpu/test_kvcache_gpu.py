"""GPU tier: flash_attn_with_kvcache on CUDA tensors (fp16/bf16) against the fp64 reference on the
assembled dense cache (tests/gpu/kvcache_cases.py): appends land where flash-attn puts them, paged
(page sizes 16-256) and not, rotary, masks, GQA, zero-length caches; and no host sync (the call is
captured in a CUDA graph and replayed). The split-KV decode kernel (docs/kvcache.md, step 2) serves
every call of <= 64 packed query rows: head dims 64-256 (and 96, 200 inside a bucket), GQA ratios
1-32 (row chunks), every mask, ALiBi, forced split counts (more splits than key tiles included)."""
import math

import pytest
import torch

import flash_sigmoid
from kernels import skip_unless_built
from kvcache_cases import check, make_case, rotary_tables

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def skip_unless_decode(dtype, head_dim):
    bucket = next(b for b in (64, 128, 256) if b >= head_dim)
    if f"_decode_{_DTYPE[dtype]}_hdim{bucket}" not in flash_sigmoid.build_info():
        pytest.skip(f"no decode kernel for {_DTYPE[dtype]} head dim bucket {bucket} in this build")


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach the decode kernel's op (CUDA kvcache_fwd)."""
    from flash_sigmoid import ops as fs_ops
    calls = []
    real = fs_ops.ops

    class Spy:
        def kvcache_fwd(self, *args):
            calls.append(args[0].shape)
            return real.kvcache_fwd(*args)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(fs_ops, "ops", Spy())
    return calls


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 96, 128, 200, 256])
@pytest.mark.parametrize("page_size", [None, 16, 32])
def test_decode_kernel_head_dims_and_layouts(dtype, d, page_size, kernel_calls):
    skip_unless_decode(dtype, d)
    c = make_case(3, 8, 2, d, dtype, lengths=[0, 45, 200], seqlen_new=1, seqlen_q=1, page_size=page_size,
                  capacity=208, permute_rows=page_size is None, seed=d)
    check(c, dtype, device="cuda", causal=True, alibi_slopes=torch.rand(3, 8), sigmoid_bias=-math.log(200))
    assert len(kernel_calls) == 1


# (hq, hkv, seqlen_q): GQA 4, MHA, MQA with 32 heads (two row chunks), 4 tokens x 16 heads = 64 rows.
@pytest.mark.parametrize("hq, hkv, seqlen_q", [(8, 2, 1), (4, 4, 3), (32, 1, 1), (16, 1, 4), (6, 3, 5)])
@pytest.mark.parametrize("mask", ["none", "causal", "window", "left", "alibi"])
def test_decode_kernel_gqa_and_masks(hq, hkv, seqlen_q, mask, kernel_calls):
    dtype = torch.bfloat16
    skip_unless_decode(dtype, 128)
    c = make_case(2, hq, hkv, 128, dtype, lengths=[130, 7], seqlen_new=2, seqlen_q=seqlen_q, page_size=64,
                  capacity=192, seed=hq + seqlen_q)
    kw = {"none": {}, "causal": dict(causal=True), "window": dict(window_size=(33, 2)),
          "left": dict(causal=True, window_size=(20, -1)), "alibi": dict(alibi_slopes=torch.rand(hq))}[mask]
    check(c, dtype, device="cuda", sigmoid_bias=-3.0, **kw)
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("num_splits", [0, 1, 2, 3, 7, 64])  # 64 > the 9 key tiles of a 560-key row
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_decode_kernel_split_counts(num_splits, dtype, kernel_calls):
    skip_unless_decode(dtype, 128)
    c = make_case(4, 8, 2, 128, dtype, lengths=[559, 0, 64, 300], seqlen_new=1, seqlen_q=1, page_size=16,
                  capacity=576, seed=num_splits)
    check(c, dtype, device="cuda", causal=True, window_size=(400, 0), num_splits=num_splits, sigmoid_bias=-6.0)
    assert len(kernel_calls) == 1


def test_decode_kernel_splits_sum_to_the_same_output():
    # A plain fp32 sum of the splits: every split count agrees with one split to fp32 rounding.
    from flash_sigmoid import flash_attn_with_kvcache
    skip_unless_decode(torch.bfloat16, 128)
    g = torch.Generator(device="cuda").manual_seed(5)
    kc = torch.randn(2, 1000, 2, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn_like(kc)
    q = torch.randn(2, 1, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    lens = torch.tensor([999, 517], dtype=torch.int32, device="cuda")
    one = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=1, sigmoid_bias=-7.0).float()
    for n in (2, 5, 16, 128):
        out = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=n, sigmoid_bias=-7.0).float()
        assert (out - one).abs().max().item() <= 1e-2 * one.abs().max().item()
    again = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=5, sigmoid_bias=-7.0)
    assert torch.equal(again, flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, num_splits=5, sigmoid_bias=-7.0))


def test_long_queries_take_the_composed_path(kernel_calls):
    skip_unless_built("fwd", torch.bfloat16, 128)
    c = make_case(2, 8, 2, 128, torch.bfloat16, lengths=[5, 40], seqlen_new=17, seqlen_q=17, capacity=64)
    check(c, torch.bfloat16, device="cuda", causal=True)  # 17 x 4 = 68 rows > 64
    assert kernel_calls == []


def test_fp16_overflow_is_inf_in_the_decode_kernel():
    from flash_sigmoid import flash_attn_with_kvcache
    skip_unless_decode(torch.float16, 128)
    kc = torch.zeros(1, 4096, 1, 128, device="cuda", dtype=torch.float16)
    vc = torch.full_like(kc, 30.0)
    q = torch.zeros(1, 1, 1, 128, device="cuda", dtype=torch.float16)
    out = flash_attn_with_kvcache(q, kc, vc, cache_seqlens=torch.tensor([4096], dtype=torch.int32, device="cuda"),
                                  sigmoid_bias=10.0)
    assert torch.isinf(out).all()  # 4096 * sigma(10) * 30 > 65504


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("page_size", [None, 16, 64, 256])
def test_append_and_attend(dtype, page_size):
    skip_unless_decode(dtype, 64)
    c = make_case(3, 8, 2, 64, dtype, lengths=[0, 37, 130], seqlen_new=3, seqlen_q=3, page_size=page_size,
                  capacity=160, permute_rows=page_size is None)
    check(c, dtype, device="cuda", causal=True, window_size=(50, 0), alibi_slopes=torch.rand(8),
          sigmoid_bias=-math.log(160), rotary=rotary_tables(c["capacity"], 32), interleaved=page_size != 16)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_decode_one_token(d):
    skip_unless_decode(torch.bfloat16, d)
    c = make_case(4, 8, 2, d, torch.bfloat16, lengths=[1, 255, 64, 0], seqlen_new=1, seqlen_q=1, capacity=256)
    check(c, torch.bfloat16, device="cuda", causal=True)


def test_cuda_graph_capture_and_replay():
    # Fixed shapes, device-side cache_seqlens: the whole call (append + attend) is graph-capturable.
    from flash_sigmoid import flash_attn_with_kvcache
    skip_unless_decode(torch.bfloat16, 64)
    g = torch.Generator(device="cuda").manual_seed(2)
    kc = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    q = torch.randn(2, 1, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 1, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    lens = torch.tensor([5, 40], dtype=torch.int32, device="cuda")
    eager = flash_attn_with_kvcache(q, kc.clone(), vc.clone(), k, k, cache_seqlens=lens, causal=True)
    kc2, vc2 = kc.clone(), vc.clone()
    flash_attn_with_kvcache(q, kc2, vc2, k, k, cache_seqlens=lens, causal=True)  # warm up outside the graph
    kc2.copy_(kc), vc2.copy_(vc)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flash_attn_with_kvcache(q, kc2, vc2, k, k, cache_seqlens=lens, causal=True)
    kc2.copy_(kc), vc2.copy_(vc)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


@pytest.mark.parametrize("page_size", [None, 16])
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_gpu_append_is_the_cpu_append_bitwise(page_size, interleaved, causal, kernel_calls):
    # The append kernel (src/common/kvcache_append.hpp) rounds like the CPU implementation (each
    # rotary product to fp32, one addition, one rounding): the caches after the call are bitwise
    # the CPU's, partial rotary included (24 of 64 channels), and so is the output up to the
    # kernels' own accumulation order.
    skip_unless_decode(torch.bfloat16, 64)
    cos, sin = rotary_tables(160, 24)
    results = {}
    for device in ("cpu", "cuda"):
        c = make_case(3, 8, 2, 64, torch.bfloat16, lengths=[0, 37, 130], seqlen_new=2, seqlen_q=2,
                      page_size=page_size, capacity=160, permute_rows=page_size is None, seed=11)
        out = _call_case(c, device, causal=causal, rotary_cos=cos, rotary_sin=sin, rotary_interleaved=interleaved,
                         sigmoid_bias=-math.log(160))
        results[device] = (out.cpu(), c["k_cache"], c["v_cache"])
    (out_cpu, k_cpu, v_cpu), (out_gpu, k_gpu, v_gpu) = results["cpu"], results["cuda"]
    assert torch.equal(k_gpu.isnan(), k_cpu.isnan()) and torch.equal(k_gpu.nan_to_num(), k_cpu.nan_to_num())
    assert torch.equal(v_gpu.isnan(), v_cpu.isnan()) and torch.equal(v_gpu.nan_to_num(), v_cpu.nan_to_num())
    # bf16 operands on the GPU, fp32 on the CPU: the forward's own tolerance (kvcache_cases.check).
    assert (out_gpu.double() - out_cpu.double()).abs().max().item() <= 3e-2 * max(1.0, out_cpu.abs().max().item())
    assert len(kernel_calls) == 2  # both through the op: no torch append on either device


def _call_case(c, device, **kw):
    from flash_sigmoid import flash_attn_with_kvcache
    on = {name: c[name].to(device) for name in ("q", "k_cache", "v_cache", "k", "v")}
    extra = {}
    if c["page_size"] is not None:
        extra["block_table"] = c["block_table"].to(device)
    else:
        extra["cache_batch_idx"] = c["rows"].to(torch.int32).to(device)
    kw = {key: (val.to(device) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
    lens = torch.tensor(c["lengths"], dtype=torch.int32, device=device)
    out = flash_attn_with_kvcache(on["q"], on["k_cache"], on["v_cache"], on["k"], on["v"], cache_seqlens=lens,
                                  **extra, **kw)
    c["k_cache"].copy_(on["k_cache"])
    c["v_cache"].copy_(on["v_cache"])
    return out


@pytest.mark.parametrize("paged", [False, True])
def test_values_out_of_range_write_nothing_outside_the_cache(paged):
    # On CUDA the index values are not checked (a check would sync). The append kernel skips a new
    # token with no place in the cache (position past the capacity, a page or row outside k_cache)
    # and the decode kernel clamps each row's key count to the capacity and its rows and pages to
    # the cache: no byte outside the new tokens' own slots changes, and the output stays finite.
    from flash_sigmoid import flash_attn_with_kvcache
    skip_unless_decode(torch.bfloat16, 64)
    g = torch.Generator(device="cuda").manual_seed(5)
    batch, hkv, d, capacity = 3, 2, 64, 64
    shape = (batch * capacity // 16 + 1, 16, hkv, d) if paged else (batch + 1, capacity, hkv, d)
    kc = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    k0, v0 = kc.clone(), vc.clone()
    q = torch.randn(batch, 1, 8, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(batch, 1, hkv, d, device="cuda", dtype=torch.bfloat16, generator=g)
    lens = torch.tensor([capacity, 10, 3], dtype=torch.int32, device="cuda")  # row 0: full, its token has no slot
    extra = {}
    if paged:
        table = torch.arange(batch * capacity // 16, dtype=torch.int32, device="cuda").view(batch, -1).clone()
        table[1, 0] = -1  # row 1's new token (position 10) would land in page -1
        table[2, 0] = shape[0] + 5  # row 2's in a page past the pool
        extra["block_table"] = table
    else:
        extra["cache_batch_idx"] = torch.tensor([0, 7, -2], dtype=torch.int32, device="cuda")  # rows 1, 2 outside
    out = flash_attn_with_kvcache(q, kc, vc, k, k, cache_seqlens=lens, **extra)
    torch.cuda.synchronize()
    assert torch.equal(kc, k0) and torch.equal(vc, v0)  # every new token was skipped
    # The decode kernel reads no page or row outside the cache either (the last one in their place).
    assert torch.isfinite(out).all()

"""CPU tier: flash_attn_with_kvcache on CPU tensors against an fp64 reference on the assembled dense
cache (tests/gpu/reference.py): the appended k, v land exactly where flash-attn puts them (paged and
not, page sizes 16-256, cache_batch_idx, odd and zero cache lengths), rotary (interleaved and
half-split, flash-attn's positions), masks, ALiBi, GQA; slots past a row's length never leak into
the result (they hold NaN here); every argument error names its argument."""
import math

import pytest
import torch

from flash_sigmoid import flash_attn_with_kvcache
from kvcache_cases import call, check, make_case, reference, rotary_tables


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_one_token_gqa_causal_cache_batch_idx(dtype):
    c = make_case(3, 4, 2, 32, dtype, lengths=[0, 5, 17], seqlen_new=1, seqlen_q=1, permute_rows=True)
    check(c, dtype, causal=True)


@pytest.mark.parametrize("page_size", [16, 32, 64, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_append_and_attend(page_size, dtype):
    c = make_case(3, 4, 1, 24, dtype, lengths=[13, 0, 31], seqlen_new=3, seqlen_q=3, page_size=page_size,
                  capacity=40)
    check(c, dtype, causal=True, window_size=(6, 0), alibi_slopes=torch.rand(3, 4), sigmoid_bias=-math.log(40))


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_rotary_positions(interleaved, causal):
    # Causal: q token i at cache_seqlens + i; not causal (no window): every q token at cache_seqlens.
    c = make_case(2, 2, 2, 32, torch.float32, lengths=[7, 11], seqlen_new=4, seqlen_q=4, capacity=20)
    check(c, torch.float32, causal=causal, rotary=rotary_tables(20, 16), interleaved=interleaved)


def test_rotary_paged_bf16_half_split():
    c = make_case(2, 4, 2, 64, torch.bfloat16, lengths=[17, 1], seqlen_new=2, seqlen_q=2, page_size=16, capacity=32)
    check(c, torch.bfloat16, causal=True, rotary=rotary_tables(32, 64), interleaved=False)


def test_empty_caches_take_new_tokens():
    # Prefill into empty caches (chunked prefill's first chunk), int cache_seqlens.
    c = make_case(2, 3, 3, 16, torch.float32, lengths=[0, 0], seqlen_new=9, seqlen_q=9, capacity=12)
    k0, v0 = c["k_cache"].clone(), c["v_cache"].clone()
    out = call(c, cache_seqlens=0, causal=True)
    ref, k_exp, v_exp = reference(c, k0, v0, causal=True)
    assert (out.double() - ref).abs().max().item() <= 2e-5 * max(1.0, ref.abs().max().item())
    torch.testing.assert_close(c["k_cache"], k_exp, rtol=0, atol=0, equal_nan=True)


def test_no_new_tokens_full_and_partial_caches():
    c = make_case(2, 2, 1, 16, torch.float32, lengths=[24, 9], seqlen_new=0, seqlen_q=5, capacity=24)
    check(c, torch.float32, causal=True)
    full = make_case(2, 2, 1, 16, torch.float32, lengths=[24, 24], seqlen_new=0, seqlen_q=3, capacity=24, seed=5)
    out = flash_attn_with_kvcache(full["q"], full["k_cache"][:2], full["v_cache"][:2])  # cache_seqlens None: full
    ref, _, _ = reference(full, full["k_cache"], full["v_cache"])
    assert (out.double() - ref).abs().max().item() <= 2e-5 * max(1.0, ref.abs().max().item())


def test_zero_length_row_gives_zeros():
    c = make_case(2, 2, 2, 16, torch.float32, lengths=[0, 6], seqlen_new=0, seqlen_q=2, capacity=8)
    out = call(c)
    assert torch.equal(out[0], torch.zeros_like(out[0]))


def test_errors_name_the_argument():
    c = make_case(2, 2, 2, 16, torch.float32, lengths=[3, 4], seqlen_new=1, seqlen_q=1, capacity=8)
    q, kc, vc, k, v = c["q"], c["k_cache"], c["v_cache"], c["k"], c["v"]
    lens = torch.tensor([3, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"cache_seqlens: .*exceeds"):
        flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=torch.tensor([3, 8], dtype=torch.int32))
    with pytest.raises(TypeError, match=r"cache_seqlens: expected dtype torch.int32"):
        flash_attn_with_kvcache(q, kc, vc, k, v, cache_seqlens=lens.long())
    with pytest.raises(ValueError, match=r"cache_seqlens: expected the cache lengths"):
        flash_attn_with_kvcache(q, kc, vc, k, v)
    with pytest.raises(ValueError, match=r"k, v: expected both or neither"):
        flash_attn_with_kvcache(q, kc, vc, k, None, cache_seqlens=lens)
    with pytest.raises(ValueError, match=r"k_cache: expected a contiguous last dim"):
        flash_attn_with_kvcache(q, kc.transpose(2, 3).contiguous().transpose(2, 3), vc, cache_seqlens=lens)
    with pytest.raises(TypeError, match=r"v_cache: expected dtype"):
        flash_attn_with_kvcache(q, kc, vc.double(), cache_seqlens=lens)
    with pytest.raises(NotImplementedError, match=r"sigmoid_bias"):
        flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, sigmoid_bias="auto")
    with pytest.raises(ValueError, match=r"cache_batch_idx: expected entries"):
        flash_attn_with_kvcache(q, kc, vc, cache_seqlens=lens, cache_batch_idx=torch.tensor([0, 7], dtype=torch.int32))
    cos, sin = rotary_tables(4, 8)
    with pytest.raises(ValueError, match=r"rotary_cos: expected at least the cache's 8 positions"):
        flash_attn_with_kvcache(q, kc, vc, k, v, rotary_cos=cos[:4], rotary_sin=sin[:4], cache_seqlens=lens)
    paged = make_case(2, 2, 2, 16, torch.float32, lengths=[3, 4], seqlen_new=1, seqlen_q=1, page_size=16, capacity=16)
    table = paged["block_table"]
    with pytest.raises(ValueError, match=r"block_table: entry \[1, 0\] = 9 is not a page"):
        flash_attn_with_kvcache(q, paged["k_cache"], paged["v_cache"], k, v, cache_seqlens=lens,
                                block_table=torch.tensor([[table[0, 0]], [9]], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"cache_batch_idx: expected None with block_table"):
        flash_attn_with_kvcache(q, paged["k_cache"], paged["v_cache"], cache_seqlens=lens, block_table=table,
                                cache_batch_idx=torch.tensor([0, 1], dtype=torch.int32))
    for bad in (8, 24):
        cache = torch.zeros(4, bad, 2, 16)
        with pytest.raises(ValueError, match=r"k_cache: expected a page size .* power of two >= 16"):
            flash_attn_with_kvcache(q, cache, cache, cache_seqlens=lens, block_table=torch.zeros(2, 1, dtype=torch.int32))


def _op_args(c, rotary=None, interleaved=True, causal=True):
    cos, sin = rotary if rotary is not None else (None, None)
    return (c["q"], c["k_cache"].clone(), c["v_cache"].clone(), c.get("k"), c.get("v"), cos, sin,
            torch.tensor(c["lengths"], dtype=torch.int32), None, c.get("block_table"), c["q"].shape[-1] ** -0.5,
            -1.0, causal, -1, 0 if causal else -1, interleaved, causal, None)


@pytest.mark.parametrize("page_size", [None, 16])
def test_kvcache_op_opcheck(page_size):
    # The C++ op of the CPU path (src/torch/ops.cpp): schema (k_cache, v_cache mutated), fake function.
    c = make_case(2, 4, 2, 16, torch.float32, lengths=[3, 17], seqlen_new=2, seqlen_q=2, page_size=page_size,
                  capacity=32)
    for name in ("k_cache", "v_cache"):  # opcheck compares outputs, so no NaN in unused slots
        c[name] = torch.nan_to_num(c[name], nan=0.0)
    torch.library.opcheck(torch.ops.flash_sigmoid.kvcache_fwd.default, _op_args(c, rotary_tables(32, 8)))


def test_cpu_tensors_take_the_cpp_op(monkeypatch):
    # CPU tensors run append + forward in C++ (no dense gather), as CUDA tensors the decode kernel takes.
    from flash_sigmoid import ops as fs_ops
    calls = []
    real = fs_ops.ops.kvcache_fwd

    class Spy:
        def kvcache_fwd(self, *args):
            calls.append(len(args))
            return real(*args)

        def __getattr__(self, name):
            return getattr(fs_ops.ops, name)

    c = make_case(2, 2, 1, 16, torch.float32, lengths=[4, 0], seqlen_new=1, seqlen_q=1, page_size=16, capacity=16)
    monkeypatch.setattr(fs_ops, "ops", Spy())
    check(c, torch.float32, causal=True)
    assert calls == [19]


def test_kvcache_op_errors_name_the_argument():
    c = make_case(2, 2, 2, 16, torch.float32, lengths=[3, 4], seqlen_new=1, seqlen_q=1, capacity=16)
    args = list(_op_args(c))
    op = torch.ops.flash_sigmoid.kvcache_fwd
    bad = list(args)
    bad[7] = torch.tensor([3, 16], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"cache_seqlens\[1\]: expected a length that with seqlen_new \(1\) fits"):
        op(*bad)
    bad = list(args)
    bad[7] = torch.tensor([3, 4, 5], dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"cache_seqlens: expected shape \[2\], got \[3\]"):
        op(*bad)
    bad = list(args)
    bad[9] = torch.zeros(2, 1, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=r"block_table: expected dtype int32"):
        op(*bad)


def test_rotary_needs_new_tokens_like_flash_attn():
    c = make_case(1, 2, 2, 16, torch.float32, lengths=[3], seqlen_new=0, seqlen_q=1, capacity=8)
    cos, sin = rotary_tables(8, 8)
    with pytest.raises(ValueError, match=r"rotary_cos: expected the new k, v"):
        flash_attn_with_kvcache(c["q"], c["k_cache"], c["v_cache"], rotary_cos=cos, rotary_sin=sin,
                                cache_seqlens=torch.tensor([3], dtype=torch.int32))

"""flash-attn 2.5.6's `flash_attn_with_kvcache` (inference) with a trailing `sigmoid_bias`.

Layer: Python package. After the checks below, both CPU and CUDA tensors go through the
flash_sigmoid::kvcache_fwd op (src/torch/ops.cpp): the C API's append (new k, v into the cache in
place, rotary on them and on q), then the forward reading each row's keys in place, pages included
(docs/kvcache.md). On CUDA those are the append kernel and the split-KV decode kernel: a call runs
no torch operation and reads no device value on the host (so no sync, fixed launches for fixed
shapes, and little per-call host work). When the decode kernel does not take the call (more than
DECODE_MAX_ROWS = 64 packed query rows seqlen_q * heads_q / heads_kv, a head dim not a multiple of
8, fp32, caches it cannot read in place) the composed path (_composed) builds it from torch
operations and flash_attn_interface's dense forward:

1. rotary: q and the new k are rotated at their positions (below) in fp32 and rounded back;
2. append: the new k, v are written into the cache in place at rows cache_seqlens[b] .. + seqlen_new
   (through block_table's pages for a paged cache);
3. assemble: each batch row's cache (cache_batch_idx's row, or its pages) is gathered into a dense
   [B, S_max, Hkv, D] buffer with its L_b = cache_seqlens[b] + seqlen_new keys *right-aligned*
   (key j at position S_max - L_b + j) and zeros before them;
4. attend: the dense forward over S_max keys. Bottom-right alignment then gives every row exactly
   the keys, window and ALiBi distances of its own sequence, and the zero keys in front contribute
   sigma(bias) * 0 = 0: sigmoid attention has no normaliser, so padding with zero values is exact
   (softmax would need the padded scores masked instead).

Step 3 of the composed path copies the whole cache every call (about three times the bytes the
attention itself needs): a correct path, not a fast one; the decode kernel replaces it where it can.

Positions (flash-attn 2.5.6): the new k's token i is at cache_seqlens[b] + i; q's token i is at
cache_seqlens[b] + i when causal or a window is set, otherwise every q token is at
cache_seqlens[b] (flash-attn treats a non-causal query block as one position).

Checked here, naming the argument: shapes, dtypes, devices, the page size (a power of two >= 16),
the last dim contiguous. Checked only for CPU tensors, where the values are on the host already:
cache_seqlens + seqlen_new within the cache, block_table entries within the pages. On CUDA the
values are not checked (a check would sync): the append kernel skips a new token with no place in
the cache and the decode kernel clamps each row's key count to the capacity (the composed path's
indexing fails on the device instead).
"""
import numbers

import torch

from . import flash_attn_interface as _dense
from . import ops as _ops


def _check_tensor(name, t, dims, layout):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name}: expected {dims} dims {layout}, got shape {tuple(t.shape)}")
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name}: expected a contiguous last dim (stride 1), got stride {t.stride(-1)}")


def _check_index(name, t, shape, device):
    _ops.check_int32(name, t, device)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _rotate(x, cos, sin, interleaved):
    """x [B, S, H, D] rotated per (batch, token) by cos/sin [B, S, r/2] (fp32), first r channels."""
    half = cos.shape[-1]
    xf = x.float()
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    if interleaved:  # pairs (x[2i], x[2i + 1]), GPT-J
        x1, x2 = xf[..., 0:2 * half:2], xf[..., 1:2 * half:2]
        r1, r2 = x1 * c - x2 * s, x2 * c + x1 * s
        rotated = torch.stack((r1, r2), dim=-1).flatten(-2)
    else:  # pairs (x[i], x[i + r/2]), GPT-NeoX
        x1, x2 = xf[..., :half], xf[..., half:2 * half]
        rotated = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    return torch.cat((rotated, xf[..., 2 * half:]), dim=-1).to(x.dtype)


# The decode kernel packs seqlen_q * heads_q / heads_kv query rows per kv head (docs/kvcache.md).
DECODE_MAX_ROWS = 64


def _vector_readable(t):
    """What the GPU kernels read in place: 16-byte aligned, every stride a multiple of 16 bytes."""
    vector = 16 // t.element_size()
    return t.data_ptr() % 16 == 0 and all(st % vector == 0 for sz, st in zip(t.shape[:-1], t.stride()[:-1]) if sz > 1)


def _decode_kernel_takes(q, k_cache, v_cache, heads_kv):
    """Whether the CUDA decode kernel serves the call (else the composed path below does)."""
    seqlen_q, heads, head_dim = q.shape[1], q.shape[2], q.shape[3]
    return (q.dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0
            and seqlen_q * (heads // heads_kv) <= DECODE_MAX_ROWS
            and _vector_readable(k_cache) and _vector_readable(v_cache))


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=(-1, -1), rotary_interleaved=True, alibi_slopes=None,
                            num_splits=0, sigmoid_bias=0.0):
    """Sigmoid attention of q against a KV cache, appending k, v to it first (in place).

    Arguments (flash-attn 2.5.6's):
        q: (batch, seqlen_q, nheads, headdim).
        k_cache, v_cache: (batch_cache, seqlen_cache, nheads_k, headdim), or with block_table a paged
            cache (num_pages, page_size, nheads_k, headdim), page_size a power of two >= 16.
        k, v: None, or new tokens (batch, seqlen_new, nheads_k, headdim), written into the cache at
            cache_seqlens before attending (needs cache_seqlens).
        rotary_cos, rotary_sin: None, or (seqlen_ro, rotary_dim / 2) applied to q and the new k at
            their positions (module docstring); seqlen_ro must cover the cache.
        cache_seqlens: None (every cache row full), an int, or int32 (batch,): the tokens already in
            each cache row.
        cache_batch_idx: None (row b of the cache for batch row b) or int32 (batch,); not with
            block_table.
        block_table: None, or int32 (batch, max_pages): the pages of each row's cache.
        causal, window_size, alibi_slopes ((nheads,) or (batch, nheads)), softmax_scale: as in
            flash_attn_func, bottom-right aligned to each row's cache_seqlens + seqlen_new keys.
        rotary_interleaved: True rotates channel pairs (2i, 2i + 1), False pairs (i, i + rotary_dim/2).
        num_splits: CUDA decode kernel: splits of each row's keys (0: chosen from the shapes and the SM
            count); ignored on the CPU and by the composed path.
        sigmoid_bias: a float (every row).
    Returns out (batch, seqlen_q, nheads, headdim). Forward only: no gradient flows.
    """
    _check_tensor("q", q, 4, "[batch, seqlen_q, heads, head_dim]")
    paged = block_table is not None
    layout = "[num_pages, page_size, heads_kv, head_dim]" if paged else "[batch_cache, seqlen_cache, heads_kv, head_dim]"
    _check_tensor("k_cache", k_cache, 4, layout)
    _check_tensor("v_cache", v_cache, 4, layout)
    batch, seqlen_q, heads, head_dim = q.shape
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"v_cache: expected the shape of k_cache {tuple(k_cache.shape)}, got {tuple(v_cache.shape)}")
    heads_kv = k_cache.shape[2]
    if k_cache.shape[3] != head_dim:
        raise ValueError(f"k_cache: expected head_dim {head_dim} like q, got {k_cache.shape[3]}")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} like q, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like q, got {t.device}")
    if heads % heads_kv != 0:
        raise ValueError(f"k_cache: expected heads_kv dividing q's {heads} heads, got {heads_kv}")
    if isinstance(num_splits, bool) or not isinstance(num_splits, numbers.Integral) or num_splits < 0:
        raise ValueError(f"num_splits: expected an int >= 0 (0: choose), got {num_splits!r}")
    if isinstance(sigmoid_bias, (str, torch.Tensor)) and not (isinstance(sigmoid_bias, torch.Tensor)
                                                              and sigmoid_bias.dim() == 0):
        raise NotImplementedError("sigmoid_bias: flash_attn_with_kvcache takes a float for now "
                                  f"(got {sigmoid_bias!r}); per-row biases come with the decode kernel")

    if paged:
        if cache_batch_idx is not None:
            raise ValueError("cache_batch_idx: expected None with block_table (a paged cache maps rows by its pages)")
        if not isinstance(block_table, torch.Tensor) or block_table.dim() != 2:
            raise ValueError(f"block_table: expected an int32 tensor [batch, max_pages], got "
                             f"{tuple(block_table.shape) if isinstance(block_table, torch.Tensor) else type(block_table).__name__}")
        _check_index("block_table", block_table, (batch, block_table.shape[1]), q.device)
        num_pages, page_size = k_cache.shape[0], k_cache.shape[1]
        if page_size < 16 or page_size & (page_size - 1):
            raise ValueError(f"k_cache: expected a page size (dim 1) that is a power of two >= 16, got {page_size}")
        capacity = block_table.shape[1] * page_size
    else:
        capacity = k_cache.shape[1]
        if cache_batch_idx is not None:
            _check_index("cache_batch_idx", cache_batch_idx, (batch,), q.device)
        elif k_cache.shape[0] < batch:
            raise ValueError(f"k_cache: expected at least batch ({batch}) rows without cache_batch_idx, "
                             f"got {k_cache.shape[0]}")

    seqlen_new = 0
    if (k is None) != (v is None):
        raise ValueError("k, v: expected both or neither (new tokens to append)")
    if k is not None:
        for name, t in (("k", k), ("v", v)):
            _check_tensor(name, t, 4, "[batch, seqlen_new, heads_kv, head_dim]")
            if t.dtype != q.dtype or t.device != q.device:
                raise TypeError(f"{name}: expected dtype {q.dtype} on {q.device} like q, got {t.dtype} on {t.device}")
        seqlen_new = k.shape[1]
        if tuple(k.shape) != (batch, seqlen_new, heads_kv, head_dim) or v.shape != k.shape:
            raise ValueError(f"k, v: expected shape ({batch}, seqlen_new, {heads_kv}, {head_dim}), "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}")
        if cache_seqlens is None:
            raise ValueError("cache_seqlens: expected the cache lengths when k, v (new tokens) are given")

    device = q.device
    if cache_seqlens is not None and not isinstance(cache_seqlens, torch.Tensor):
        if not isinstance(cache_seqlens, numbers.Integral) or isinstance(cache_seqlens, bool):
            raise TypeError(f"cache_seqlens: expected None, an int or an int32 tensor [batch], got "
                            f"{type(cache_seqlens).__name__}")
        if cache_seqlens < 0:
            raise ValueError(f"cache_seqlens: expected >= 0, got {cache_seqlens}")
    elif cache_seqlens is not None:
        _check_index("cache_seqlens", cache_seqlens, (batch,), device)

    local = window_size is not None and tuple(window_size) != (-1, -1)
    rotary = rotary_cos is not None or rotary_sin is not None
    if rotary:
        if rotary_cos is None or rotary_sin is None:
            raise ValueError("rotary_cos, rotary_sin: expected both or neither")
        if k is None:  # flash-attn 2.5.6 (mha_fwd_kvcache) requires the new tokens with rotary
            raise ValueError("rotary_cos: expected the new k, v to append with rotary embeddings (flash-attn's rule)")
        for name, t in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
            _check_tensor(name, t, 2, "[seqlen_ro, rotary_dim / 2]")
            if t.device != device:
                raise ValueError(f"{name}: expected device {device} like q, got {t.device}")
        if rotary_sin.shape != rotary_cos.shape:
            raise ValueError(f"rotary_sin: expected the shape of rotary_cos {tuple(rotary_cos.shape)}, "
                             f"got {tuple(rotary_sin.shape)}")
        if 2 * rotary_cos.shape[1] > head_dim:
            raise ValueError(f"rotary_cos: expected rotary_dim (2 x dim 1 = {2 * rotary_cos.shape[1]}) <= head_dim "
                             f"{head_dim}")
        if rotary_cos.shape[0] < capacity:
            raise ValueError(f"rotary_cos: expected at least the cache's {capacity} positions (dim 0), "
                             f"got {rotary_cos.shape[0]}")

    if isinstance(cache_seqlens, torch.Tensor):
        op_lengths = cache_seqlens  # int32 [batch], checked above
    else:  # None (every row full) or one int for every row
        op_lengths = torch.full((batch,), capacity if cache_seqlens is None else int(cache_seqlens),
                                dtype=torch.int32, device=device)

    def op_call(k_new, v_new):
        """The kvcache_fwd op: the append (new tokens, rotary), then the forward reading each row's
        cache_seqlens + seqlen_new keys in place; on CUDA one append kernel and the decode kernel."""
        left, right = _dense._flash_window(window_size, bool(causal), capacity)
        scale = head_dim ** -0.5 if softmax_scale is None else _ops.as_float("softmax_scale", softmax_scale)
        _ops.check_alibi(alibi_slopes, q)
        return _ops.ops.kvcache_fwd(
            q, k_cache, v_cache, k_new, v_new, rotary_cos.float().contiguous() if rotary else None,
            rotary_sin.float().contiguous() if rotary else None, op_lengths.contiguous(),
            cache_batch_idx.contiguous() if cache_batch_idx is not None else None,
            block_table.contiguous() if paged else None, scale, _ops.as_float("sigmoid_bias", sigmoid_bias),
            bool(causal), left, right, bool(rotary_interleaved), bool(causal or local), alibi_slopes, int(num_splits))

    if q.is_cuda:
        if capacity > 0 and _decode_kernel_takes(q, k_cache, v_cache, heads_kv):
            # Nothing here reads a device value or launches a torch operation: per-call host work is
            # what bounds a short decode step (docs/kvcache.md).
            return op_call(k, v)
        return _composed(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, op_lengths.long(), cache_batch_idx,
                         block_table, softmax_scale, causal, window_size, rotary_interleaved, alibi_slopes,
                         sigmoid_bias, capacity, page_size if paged else None, local)

    # CPU tensors: the values are on the host, so check what the C++ path would otherwise reject
    # with a less specific message (and what the indexing would get wrong).
    lengths = op_lengths.long()
    total = lengths + seqlen_new  # keys each row attends to, after the append
    if (lengths < 0).any():
        raise ValueError(f"cache_seqlens: expected >= 0, got {lengths.tolist()}")
    if (total > capacity).any():
        raise ValueError(f"cache_seqlens: cache_seqlens + seqlen_new ({total.tolist()}) exceeds the cache's "
                         f"{capacity} positions")
    if paged:
        used = (torch.arange(block_table.shape[1]) * page_size)[None, :] < total[:, None]
        bad = used & ((block_table < 0) | (block_table >= num_pages))
        if bad.any():
            b, p = (int(x) for x in bad.nonzero()[0])
            raise ValueError(f"block_table: entry [{b}, {p}] = {int(block_table[b, p])} is not a page of "
                             f"k_cache (0 .. {num_pages - 1})")
    elif cache_batch_idx is not None and ((cache_batch_idx < 0) | (cache_batch_idx >= k_cache.shape[0])).any():
        raise ValueError(f"cache_batch_idx: expected entries in 0 .. {k_cache.shape[0] - 1}, "
                         f"got {cache_batch_idx.tolist()}")
    if rotary:
        last = lengths + ((seqlen_q - 1) if (causal or local) else 0)
        if seqlen_new:
            last = torch.maximum(last, lengths + seqlen_new - 1)
        if (last >= rotary_cos.shape[0]).any():
            raise ValueError(f"rotary_cos: expected a row for every position of q and the new k (up to "
                             f"{int(last.max())}), got {rotary_cos.shape[0]} rows")
    return op_call(k, v)


def _composed(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, lengths, cache_batch_idx, block_table, softmax_scale,
              causal, window_size, rotary_interleaved, alibi_slopes, sigmoid_bias, capacity, page_size, local):
    """CUDA calls the decode kernel does not take: rotary and append with torch operations, the
    cache gathered right-aligned into a dense buffer, the dense forward (module docstring, 1-4)."""
    batch, seqlen_q = q.shape[0], q.shape[1]
    device = q.device
    paged = block_table is not None
    seqlen_new = 0 if k is None else k.shape[1]
    total = lengths + seqlen_new
    rows = cache_batch_idx.long() if cache_batch_idx is not None else torch.arange(batch, device=device)
    if rotary_cos is not None:
        cos, sin = rotary_cos.float(), rotary_sin.float()
        q_steps = torch.arange(seqlen_q, device=device) if (causal or local) else torch.zeros(seqlen_q, device=device,
                                                                                                dtype=torch.long)
        # (On CUDA positions past seqlen_ro are clamped to its last row rather than checked.)
        q_pos = (lengths[:, None] + q_steps[None, :]).clamp(max=rotary_cos.shape[0] - 1)
        q = _rotate(q, cos[q_pos], sin[q_pos], rotary_interleaved)
        if k is not None:
            k_pos = lengths[:, None] + torch.arange(seqlen_new, device=device)[None, :]
            k_pos = k_pos.clamp(max=rotary_cos.shape[0] - 1)
            k = _rotate(k, cos[k_pos], sin[k_pos], rotary_interleaved)

    # Positions 0 .. capacity-1 of every row, as (cache row or page, slot) indices.
    positions = torch.arange(capacity, device=device)
    if paged:
        page_of = block_table.long()[:, positions // page_size]  # (B, capacity)
        slot_of = (positions % page_size)[None, :].expand(batch, capacity)
    else:
        page_of = rows[:, None].expand(batch, capacity)
        slot_of = positions[None, :].expand(batch, capacity)

    with torch.no_grad():
        if k is not None and seqlen_new > 0:
            new_pos = lengths[:, None] + torch.arange(seqlen_new, device=device)[None, :]  # (B, seqlen_new)
            rows_new = page_of.gather(1, new_pos.clamp(max=capacity - 1))
            slots_new = slot_of.gather(1, new_pos.clamp(max=capacity - 1))
            k_cache[rows_new, slots_new] = k
            v_cache[rows_new, slots_new] = v

        # Right-aligned dense copy: position p holds key j = p - (capacity - total) when j >= 0.
        src = positions[None, :] - (capacity - total)[:, None]  # (B, capacity)
        valid = src >= 0
        src = src.clamp(min=0)
        gather_rows, gather_slots = page_of.gather(1, src), slot_of.gather(1, src)
        # Positions before a row's keys read page/row 0, slot 0 (then zeroed): never a block_table
        # entry the row does not use, which may be garbage.
        gather_rows = torch.where(valid, gather_rows, torch.zeros_like(gather_rows))
        gather_slots = torch.where(valid, gather_slots, torch.zeros_like(gather_slots))
        zero = torch.zeros((), dtype=q.dtype, device=device)
        k_dense = torch.where(valid[:, :, None, None], k_cache[gather_rows, gather_slots], zero)
        v_dense = torch.where(valid[:, :, None, None], v_cache[gather_rows, gather_slots], zero)
        if capacity == 0:
            return q.new_zeros(q.shape)
        out = _dense._attention(q, k_dense, v_dense, 0.0, softmax_scale, causal, window_size, alibi_slopes, False,
                                False, sigmoid_bias, ("q", "k_cache", "v_cache"))
    return out

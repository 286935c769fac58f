"""Context parallelism: sigmoid attention over a sequence sharded across the ranks of a
torch.distributed process group (issue 21, first step).

Layer: Python package, over the public dense ops (ops.forward / ops.backward) and torch.distributed
point-to-point sends; no launcher and no communication library of its own.

Sigmoid attention has no row statistics: a query block's output over a split key range is the plain
sum of the partial outputs (docs/math.md). So the ring needs no log-sum-exp exchange and no
rescaling, unlike softmax ring attention:

- forward: each rank keeps its query shard and passes its key/value shard around the ring; at every
  step it adds sigma(q_r k_s^T + b) v_s for the shard s it holds to an fp32 accumulator;
- backward: the shards go round again, now with travelling fp32 dK/dV buffers: rank r adds its
  query shard's contribution (the dense backward of the pair) to the buffers of shard s and to its
  own dQ; after the last step one more pass returns each buffer to its owner.

Layouts. `layout="contiguous"`: rank r holds tokens [r n, (r + 1) n) of a sequence of W n tokens.
`layout="zigzag"` (load-balanced under a causal mask): the sequence is cut into 2W chunks and rank r
holds chunks r and 2W - 1 - r, concatenated; every rank then sees the same number of visible pairs.
All shards have the same length. Under the causal mask a pair of chunks is either fully visible,
diagonal (the library's causal mask) or invisible (skipped), so only equal chunk lengths are needed.

Not yet: windows and ALiBi (their bounds and distances need a position offset per pair, which the
dense ops do not take; they raise NotImplementedError), dropout. Deterministic: the partial sums are
added in a fixed ring order, so the result does not depend on timing.

Usage (one process per GPU, e.g. `torchrun --nproc-per-node 8 train.py`; leave NVLink multicast off,
NCCL_NVLS_ENABLE=0, as this project's machines require):

    import torch.distributed as dist
    from flash_sigmoid.parallel import context_parallel_attn, shard, unshard
    dist.init_process_group("nccl")
    q_r, k_r, v_r = (shard(t, layout="zigzag") for t in (q, k, v))   # [B, S / W, H, D] each
    o_r = context_parallel_attn(q_r, k_r, v_r, causal=True, layout="zigzag", sigmoid_bias=-math.log(S))
"""
import torch
import torch.distributed as dist

from . import ops as _ops


def _world(group):
    return dist.get_world_size(group), dist.get_rank(group)


def _chunks(rank, world, layout):
    """The global chunk indices a rank holds, in order, and the chunk count of the sequence."""
    if layout == "contiguous":
        return [rank], world
    if layout == "zigzag":
        return [rank, 2 * world - 1 - rank], 2 * world
    raise ValueError(f"layout: expected 'contiguous' or 'zigzag', got {layout!r}")


def shard(x, layout="contiguous", group=None, rank=None, world=None, dim=1):
    """This rank's shard of a full-sequence tensor x (sequence along `dim`)."""
    if world is None or rank is None:
        world, rank = _world(group)
    ids, count = _chunks(rank, world, layout)
    if x.shape[dim] % count:
        raise ValueError(f"x: expected a sequence length divisible by {count} ({layout}, {world} ranks), "
                         f"got {x.shape[dim]}")
    pieces = x.chunk(count, dim=dim)
    return torch.cat([pieces[i] for i in ids], dim=dim)


def unshard(parts, layout="contiguous", dim=1):
    """The full-sequence tensor from every rank's shard (parts[r] from rank r)."""
    world = len(parts)
    count = _chunks(0, world, layout)[1]
    pieces = [None] * count
    for rank, part in enumerate(parts):
        ids, _ = _chunks(rank, world, layout)
        for i, piece in zip(ids, part.chunk(len(ids), dim=dim)):
            pieces[i] = piece
    return torch.cat(pieces, dim=dim)


def _pairs(q_ids, k_ids, causal):
    """(q piece, k piece, mask) for the visible chunk pairs: mask None (full) or "causal" (diagonal)."""
    out = []
    for a, qi in enumerate(q_ids):
        for c, ki in enumerate(k_ids):
            if not causal or qi > ki:
                out.append((a, c, None))
            elif qi == ki:
                out.append((a, c, "causal"))
    return out


def _ring_pass(tensors, group, world, rank):
    """Sends `tensors` to rank + 1 and returns those received from rank - 1."""
    received = [torch.empty_like(t) for t in tensors]
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    ops = [dist.P2POp(dist.isend, t, dist.get_global_rank(group, nxt) if group is not None else nxt, group)
           for t in tensors]
    ops += [dist.P2POp(dist.irecv, t, dist.get_global_rank(group, prv) if group is not None else prv, group)
            for t in received]
    for req in dist.batch_isend_irecv(ops):
        req.wait()
    return received


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, bias, causal, layout, group, deterministic):
        world, rank = _world(group)
        q_ids, _ = _chunks(rank, world, layout)
        pieces = len(q_ids)
        qs = q.chunk(pieces, dim=1)
        acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        accs = list(acc.chunk(pieces, dim=1))
        kv = (k.contiguous(), v.contiguous())
        for step in range(world):
            owner = (rank - step) % world
            k_ids, _ = _chunks(owner, world, layout)
            ks, vs = kv[0].chunk(pieces, dim=1), kv[1].chunk(pieces, dim=1)
            for a, c, mask in _pairs(q_ids, k_ids, causal):
                part = _ops.forward(qs[a], ks[c], vs[c], scale=scale, sigmoid_bias=bias, causal=mask == "causal")
                accs[a] += part.float()
            if step + 1 < world:
                kv = tuple(_ring_pass(list(kv), group, world, rank))
        ctx.save_for_backward(q, k, v)
        ctx.args = (scale, bias, causal, layout, group, deterministic)
        return torch.cat(accs, dim=1).to(q.dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        scale, bias, causal, layout, group, deterministic = ctx.args
        world, rank = _world(group)
        q_ids, _ = _chunks(rank, world, layout)
        pieces = len(q_ids)
        qs, douts = q.chunk(pieces, dim=1), dout.contiguous().chunk(pieces, dim=1)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dqs = list(dq.chunk(pieces, dim=1))
        travelling = [k.contiguous(), v.contiguous(), torch.zeros(k.shape, dtype=torch.float32, device=k.device),
                      torch.zeros(v.shape, dtype=torch.float32, device=v.device)]
        for step in range(world):
            owner = (rank - step) % world
            k_ids, _ = _chunks(owner, world, layout)
            ks, vs = travelling[0].chunk(pieces, dim=1), travelling[1].chunk(pieces, dim=1)
            dks, dvs = list(travelling[2].chunk(pieces, dim=1)), list(travelling[3].chunk(pieces, dim=1))
            for a, c, mask in _pairs(q_ids, k_ids, causal):
                pdq, pdk, pdv = _ops.backward(douts[a], qs[a], ks[c], vs[c], scale=scale, sigmoid_bias=bias,
                                              causal=mask == "causal", deterministic=deterministic)
                dqs[a] += pdq.float()
                dks[c] += pdk.float()
                dvs[c] += pdv.float()
            if world > 1:
                travelling = _ring_pass(travelling, group, world, rank)  # the last pass returns dK, dV home
        dk, dv = travelling[2], travelling[3]
        return (torch.cat(dqs, dim=1).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None,
                None)


def context_parallel_attn(q, k, v, group=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                          sigmoid_bias=0.0, softmax_scale=None, layout="contiguous", deterministic=False):
    """Sigmoid attention of this rank's query shard over the whole sharded sequence.

    q, k, v: this rank's shards [B, S / W, H(kv), D] (shard() cuts them), the same length on every
    rank; the result is this rank's shard of the output. Differentiable in q, k, v (their gradients
    are this rank's shards). causal: over global positions, for either layout. sigmoid_bias: a
    number (the paper's -log S uses the full length S). window_size and alibi_slopes: not yet.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("context_parallel_attn: torch.distributed is not initialised "
                           "(dist.init_process_group first)")
    if tuple(window_size) != (-1, -1):
        raise NotImplementedError("window_size: context_parallel_attn does not take a window yet (a shard pair "
                                  "needs a position offset the dense ops do not take); pass (-1, -1)")
    if alibi_slopes is not None:
        raise NotImplementedError("alibi_slopes: context_parallel_attn does not take ALiBi yet (its distances need a "
                                  "position offset per shard pair); pass None")
    _ops.check_qkv(q, k, v)
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"k: expected the shard length of q ({q.shape[1]}) on every rank, got {k.shape[1]}")
    world, rank = _world(group)
    pieces = len(_chunks(rank, world, layout)[0])
    if q.shape[1] % pieces:
        raise ValueError(f"q: expected a shard length divisible by {pieces} for layout {layout!r}, got {q.shape[1]}")
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else _ops.as_float("softmax_scale", softmax_scale)
    bias = _ops.as_float("sigmoid_bias", sigmoid_bias)
    return _RingAttention.apply(q, k, v, scale, bias, bool(causal), layout, group, bool(deterministic))

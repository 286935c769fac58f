"""Context parallelism: sigmoid attention over a sequence sharded across the ranks of a
torch.distributed process group (issue 21).

Layer: Python package, over the public dense ops (ops.forward / ops.backward) and torch.distributed
point-to-point sends; no launcher and no communication library of its own.

Sigmoid attention has no row statistics: a query block's output over a split key range is the plain
sum of the partial outputs (docs/math.md). So the ring needs no log-sum-exp exchange and no
rescaling, unlike softmax ring attention:

- forward: each rank keeps its query shard and passes its key/value shard around the ring; at every
  step it adds sigma(q_r k_s^T + b) v_s for the shard s it holds to an fp32 accumulator, while the
  next shard is already on its way (the pass is started before the step's kernels);
- backward: the key/value shards go round again; at every step a rank adds its query shard's
  contribution (the dense backward of the pair) to its own dQ and to fresh dK/dV partials of shard
  s, adds those to the travelling fp32 dK/dV of s that the previous rank sent, and sends them on;
  after the last step one more pass returns each buffer to its owner. The additions are made in a
  fixed order, so results do not depend on timing.

Masks use global positions. A pair of ranges (queries [q0, q1), keys [k0, k1)) under the band
q - left <= k <= q + right is trimmed to the rows and keys that see something, and the trimmed pair
is one dense call whose bottom-right aligned window is (left - d, right + d), d = q1' - k1' (the
band of the dense ops depends only on where the two ranges end): full pairs run unmasked, invisible
pairs are skipped. That covers causal (right 0), sliding windows and uneven shard lengths with the
dense ops as they are. ALiBi takes the same d: the dense call's distance i + (n - m) - j (m queries,
n keys) is the global distance (q0' + i) - (k0' + j) less q1' - k1', so each call passes
alibi_offset = d (ops.forward's shift of the ALiBi distances).

Layouts. `layout="contiguous"`: rank r holds the r-th run of tokens; shard lengths may differ
between ranks (every rank learns them with one all_gather). `layout="zigzag"` (load-balanced under a
causal mask): the sequence is cut into 2W equal chunks and rank r holds chunks r and 2W - 1 - r,
concatenated; every rank then sees the same number of visible pairs.

Usage (one process per GPU, e.g. `torchrun --nproc-per-node 8 train.py`; leave NVLink multicast off,
NCCL_NVLS_ENABLE=0, as this project's machines require):

    import torch.distributed as dist
    from flash_sigmoid.parallel import context_parallel_attn, shard, unshard
    dist.init_process_group("nccl")
    q_r, k_r, v_r = (shard(t, layout="zigzag") for t in (q, k, v))   # [B, S / W, H, D] each
    o_r = context_parallel_attn(q_r, k_r, v_r, causal=True, layout="zigzag")  # bias -log(S)
"""
import math

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


def _rank_ranges(length, world, layout, lengths=None):
    """Per rank, the global (start, length) ranges it holds, in order."""
    if layout == "contiguous":
        if lengths is None:
            if length % world:
                raise ValueError(f"x: expected a sequence length divisible by {world} (contiguous, {world} ranks), "
                                 f"got {length}; pass lengths= for uneven shards")
            lengths = [length // world] * world
        starts = [sum(lengths[:r]) for r in range(world)]
        return [[(starts[r], lengths[r])] for r in range(world)]
    _, count = _chunks(0, world, layout)
    if length % count:
        raise ValueError(f"x: expected a sequence length divisible by {count} ({layout}, {world} ranks), got {length}")
    c = length // count
    return [[(i * c, c) for i in _chunks(r, world, layout)[0]] for r in range(world)]


def shard(x, layout="contiguous", group=None, rank=None, world=None, dim=1, lengths=None):
    """This rank's shard of a full-sequence tensor x (sequence along `dim`). `lengths` (contiguous
    layout): each rank's shard length, summing to x's length (default: equal shards)."""
    if world is None or rank is None:
        world, rank = _world(group)
    if lengths is not None:
        if layout != "contiguous":
            raise ValueError(f"lengths: uneven shards need layout='contiguous', got {layout!r}")
        if len(lengths) != world or sum(lengths) != x.shape[dim] or min(lengths) < 0:
            raise ValueError(f"lengths: expected {world} non-negative shard lengths summing to {x.shape[dim]}, "
                             f"got {list(lengths)}")
    ranges = _rank_ranges(x.shape[dim], world, layout, lengths)[rank]
    return torch.cat([x.narrow(dim, s, n) for s, n in ranges], dim=dim)


def unshard(parts, layout="contiguous", dim=1):
    """The full-sequence tensor from every rank's shard (parts[r] from rank r)."""
    world = len(parts)
    if layout == "contiguous":
        return torch.cat(list(parts), dim=dim)
    count = _chunks(0, world, layout)[1]
    pieces = [None] * count
    for rank, part in enumerate(parts):
        ids, _ = _chunks(rank, world, layout)
        for i, piece in zip(ids, part.chunk(len(ids), dim=dim)):
            pieces[i] = piece
    return torch.cat(pieces, dim=dim)


def _pair_call(q_range, k_range, left, right):
    """The dense call for queries q_range and keys k_range (global (start, length)) under the band
    q - left <= k <= q + right (None: unbounded): None when no pair is visible, else
    (query offset, query count, key offset, key count, window, d) with offsets inside the ranges, the
    window in the dense ops' bottom-right convention ((-1, -1): unmasked) and d = q1' - k1', the
    shift that makes the call's ALiBi distances global."""
    q0, q1 = q_range[0], q_range[0] + q_range[1]
    k0, k1 = k_range[0], k_range[0] + k_range[1]
    # Keys no query of the range sees, and queries that see no key of the range, leave the call.
    if right is not None:
        k1 = min(k1, q1 + right)
        q0 = max(q0, k0 - right)
    if left is not None:
        k0 = max(k0, q0 - left)
        q1 = min(q1, k1 + left)
    if q1 <= q0 or k1 <= k0:
        return None
    d = q1 - k1  # in [-right, left] after the trims: the last query sees the last key
    full = (left is None or k0 >= q1 - 1 - left) and (right is None or k1 - 1 <= q0 + right)
    window = (-1, -1) if full else (-1 if left is None else left - d, -1 if right is None else right + d)
    return q0 - q_range[0], q1 - q0, k0 - k_range[0], k1 - k0, window, d


def _calls(q_ranges, k_ranges, left, right):
    """(query piece, key piece, call) for every visible pair of pieces, in a fixed order."""
    out = []
    for a, qr in enumerate(q_ranges):
        for c, kr in enumerate(k_ranges):
            call = _pair_call(qr, kr, left, right)
            if call is not None:
                out.append((a, c, call))
    return out


def _pieces(t, ranges):
    """Views of a shard tensor [B, S_r, ...] along the sequence, one per global range it holds."""
    out, start = [], 0
    for _, n in ranges:
        out.append(t.narrow(1, start, n))
        start += n
    return out


class _Ring:
    """The ring's neighbours and asynchronous passes (send to rank + 1, receive from rank - 1)."""

    def __init__(self, group):
        self.group = group
        self.world, self.rank = _world(group)
        nxt, prv = (self.rank + 1) % self.world, (self.rank - 1) % self.world
        self.next = dist.get_global_rank(group, nxt) if group is not None else nxt
        self.prev = dist.get_global_rank(group, prv) if group is not None else prv

    def start(self, tensors, length):
        """Starts sending `tensors` (shards [B, S_r, ...]) and receiving their like from the previous
        rank, `length` tokens long; returns (received, requests): the received tensors are valid
        after wait(requests)."""
        received = [torch.empty((t.shape[0], length) + tuple(t.shape[2:]), dtype=t.dtype, device=t.device)
                    for t in tensors]
        ops = [dist.P2POp(dist.isend, t, self.next, self.group) for t in tensors]
        ops += [dist.P2POp(dist.irecv, t, self.prev, self.group) for t in received]
        return received, dist.batch_isend_irecv(ops)

    @staticmethod
    def wait(requests):
        for req in requests:
            req.wait()


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, bias, left, right, slopes, rank_ranges, group, deterministic):
        ring = _Ring(group)
        world, rank = ring.world, ring.rank
        lengths = [sum(n for _, n in r) for r in rank_ranges]
        q_ranges = rank_ranges[rank]
        qs = _pieces(q, q_ranges)
        acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        accs = _pieces(acc, q_ranges)
        kv = (k.contiguous(), v.contiguous())
        for step in range(world):
            owner = (rank - step) % world
            pending = None
            if step + 1 < world:  # the next shard travels while this one is used
                pending = ring.start(kv, lengths[(owner - 1) % world])
            ks, vs = _pieces(kv[0], rank_ranges[owner]), _pieces(kv[1], rank_ranges[owner])
            for a, c, (qa, m, kc, n, window, d) in _calls(q_ranges, rank_ranges[owner], left, right):
                part = _ops.forward(qs[a].narrow(1, qa, m), ks[c].narrow(1, kc, n), vs[c].narrow(1, kc, n),
                                    scale=scale, sigmoid_bias=bias, window_size=window, alibi_slopes=slopes,
                                    alibi_offset=0 if slopes is None else d)
                accs[a].narrow(1, qa, m).add_(part.float())
            if pending is not None:
                received, requests = pending
                ring.wait(requests)
                kv = tuple(received)
        ctx.save_for_backward(q, k, v, slopes)
        ctx.args = (scale, bias, left, right, rank_ranges, group, deterministic)
        return acc.to(q.dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, slopes = ctx.saved_tensors
        scale, bias, left, right, rank_ranges, group, deterministic = ctx.args
        ring = _Ring(group)
        world, rank = ring.world, ring.rank
        lengths = [sum(n for _, n in r) for r in rank_ranges]
        q_ranges = rank_ranges[rank]
        qs, douts = _pieces(q, q_ranges), _pieces(dout.contiguous(), q_ranges)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dqs = _pieces(dq, q_ranges)
        kv = (k.contiguous(), v.contiguous())
        grads_pending = None  # the travelling fp32 (dK, dV) of the shard held, on their way from rank - 1
        for step in range(world):
            owner = (rank - step) % world
            kv_pending = None
            if step + 1 < world:
                kv_pending = ring.start(kv, lengths[(owner - 1) % world])
            # This step's dK/dV of shard `owner`, into fresh buffers (the travelling ones may still be
            # arriving); added to them below, in that order.
            dk_part = torch.zeros(kv[0].shape, dtype=torch.float32, device=k.device)
            dv_part = torch.zeros(kv[1].shape, dtype=torch.float32, device=v.device)
            ks, vs = _pieces(kv[0], rank_ranges[owner]), _pieces(kv[1], rank_ranges[owner])
            dks, dvs = _pieces(dk_part, rank_ranges[owner]), _pieces(dv_part, rank_ranges[owner])
            for a, c, (qa, m, kc, n, window, d) in _calls(q_ranges, rank_ranges[owner], left, right):
                pdq, pdk, pdv = _ops.backward(douts[a].narrow(1, qa, m), qs[a].narrow(1, qa, m),
                                              ks[c].narrow(1, kc, n), vs[c].narrow(1, kc, n), scale=scale,
                                              sigmoid_bias=bias, window_size=window, alibi_slopes=slopes,
                                              alibi_offset=0 if slopes is None else d, deterministic=deterministic)
                dqs[a].narrow(1, qa, m).add_(pdq.float())
                dks[c].narrow(1, kc, n).add_(pdk.float())
                dvs[c].narrow(1, kc, n).add_(pdv.float())
            if grads_pending is not None:
                received, requests = grads_pending
                ring.wait(requests)
                dk_part = received[0].add_(dk_part)
                dv_part = received[1].add_(dv_part)
            if world > 1:  # on to the next rank; after the last step this pass takes them home
                grads_pending = ring.start((dk_part, dv_part), lengths[(owner - 1) % world])
            if kv_pending is not None:
                received, requests = kv_pending
                ring.wait(requests)
                kv = tuple(received)
        grads = (dk_part, dv_part)  # one rank: its own shard's, complete
        if world > 1:
            grads, requests = grads_pending
            ring.wait(requests)
        return (dq.to(q.dtype), grads[0].to(k.dtype), grads[1].to(v.dtype)) + (None,) * 8


def context_parallel_attn(q, k, v, group=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                          sigmoid_bias=None, softmax_scale=None, layout="contiguous", deterministic=False,
                          shard_lengths=None):
    """Sigmoid attention of this rank's query shard over the whole sharded sequence.

    q, k, v: this rank's shards [B, S_r, H(kv), D] (shard() cuts them); with layout="contiguous" the
    shard lengths may differ between ranks (k and v as long as q on each rank), with "zigzag" they
    are equal. The result is this rank's shard of the output, differentiable in q, k, v (their
    gradients are this rank's shards). causal and window_size (flash-attn's (left, right), -1
    unbounded; causal makes right 0) act on global positions. sigmoid_bias: a number; default
    -log(S), S the whole sequence's length. alibi_slopes: fp32 [H] or [B, H] on q's device, the
    distances between global positions (-slope |i - j|; the global problem is square); no gradient.
    shard_lengths: every rank's shard length, as shard(lengths=...) took them; without it the ranks
    exchange their lengths (one all_gather, and a device-to-host copy that waits for the GPU).
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("context_parallel_attn: torch.distributed is not initialised "
                           "(dist.init_process_group first)")
    wl, wr = _ops.check_window(window_size)
    left = None if wl < 0 else wl
    right = 0 if causal else (None if wr < 0 else wr)
    _ops.check_qkv(q, k, v)
    _ops.check_alibi(alibi_slopes, q)
    if k.shape[1] != q.shape[1]:
        raise ValueError(f"k: expected the shard length of q ({q.shape[1]}) on this rank, got {k.shape[1]}")
    world, rank = _world(group)
    _chunks(rank, world, layout)  # names a bad layout
    if shard_lengths is None:
        counts = [torch.zeros(1, dtype=torch.int64, device=q.device) for _ in range(world)]
        dist.all_gather(counts, torch.tensor([q.shape[1]], dtype=torch.int64, device=q.device), group=group)
        lengths = [int(c) for c in torch.cat(counts).tolist()]
    else:
        lengths = [int(n) for n in shard_lengths]
        if len(lengths) != world or min(lengths) < 0 or lengths[rank] != q.shape[1]:
            raise ValueError(f"shard_lengths: expected {world} non-negative lengths with this rank's ({rank}) equal "
                             f"to q's shard length {q.shape[1]}, got {list(shard_lengths)}")
    total = sum(lengths)
    if layout == "contiguous":
        rank_ranges = _rank_ranges(total, world, layout, lengths)
    else:
        if len(set(lengths)) != 1 or lengths[0] % 2:
            raise ValueError(f"q: layout 'zigzag' needs equal shards of an even length on every rank, got lengths "
                             f"{lengths}")
        rank_ranges = _rank_ranges(total, world, layout)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else _ops.as_float("softmax_scale", softmax_scale)
    bias = -math.log(total) if sigmoid_bias is None else _ops.as_float("sigmoid_bias", sigmoid_bias)
    return _RingAttention.apply(q, k, v, scale, bias, left, right, alibi_slopes, rank_ranges, group,
                                bool(deterministic))

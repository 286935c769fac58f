"""CPU tier: context_parallel_attn (python/flash_sigmoid/parallel.py) over torch.distributed with the
gloo backend, 2, 3 and 4 processes on this machine: each rank's output and dq/dk/dv shards,
reassembled, equal the single-process attention over the whole sequence and its gradients
(contiguous and zig-zag layouts, uneven shard lengths, causal and not, sliding windows, GQA, ALiBi
on global positions, the default bias -log S); bad arguments raise naming themselves."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flash_sigmoid
from flash_sigmoid.parallel import _pair_call, context_parallel_attn, shard, unshard

B, S, HQ, HKV, D = 2, 48, 4, 2, 16


def inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, S, HQ, D, generator=g)
    k = torch.randn(B, S, HKV, D, generator=g)
    v = torch.randn(B, S, HKV, D, generator=g)
    dout = torch.randn(B, S, HQ, D, generator=g)
    return q, k, v, dout


def slopes_of(kind):
    """ALiBi slopes: None, per head [HQ] or per (batch, head) [B, HQ]."""
    if kind is None:
        return None
    g = torch.Generator().manual_seed(3)
    return torch.rand(HQ, generator=g) if kind == "heads" else torch.rand(B, HQ, generator=g)


def worker(rank, world, port, out_dir, layout, causal, window, lengths, alibi):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, k, v, dout = inputs()
        qs, ks, vs = (shard(t, layout, lengths=lengths).clone().requires_grad_() for t in (q, k, v))
        # With 4 ranks the lengths are passed (no exchange); otherwise the ranks exchange them.
        known = lengths if world == 4 and lengths is not None else None
        out = context_parallel_attn(qs, ks, vs, causal=causal, window_size=window, layout=layout, shard_lengths=known,
                                    alibi_slopes=slopes_of(alibi))
        out.backward(shard(dout, layout, lengths=lengths))
        torch.save(dict(out=out.detach(), dq=qs.grad, dk=ks.grad, dv=vs.grad), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (world, layout, causal, window, shard lengths, ALiBi slopes): uneven shards include an empty one
# and shards shorter than the window; windows narrower than a shard, wider than one, and one-sided;
# ALiBi (global distances) with and without masks, both layouts, per head and per (batch, head).
CASES = [
    (2, "contiguous", False, (-1, -1), None, None),
    (2, "zigzag", True, (-1, -1), None, None),
    (3, "contiguous", True, (-1, -1), None, None),
    (3, "zigzag", False, (-1, -1), None, None),
    (4, "zigzag", True, (-1, -1), None, None),
    (4, "contiguous", True, (-1, -1), [5, 20, 0, 23], None),
    (3, "contiguous", False, (7, 3), [30, 1, 17], None),
    (4, "zigzag", True, (9, -1), None, None),
    (2, "contiguous", False, (-1, 13), [19, 29], None),
    (4, "contiguous", False, (20, 0), [12, 12, 12, 12], None),
    (2, "contiguous", False, (-1, -1), [31, 17], "heads"),
    (3, "zigzag", True, (-1, -1), None, "batch_heads"),
    (4, "contiguous", False, (6, 9), [10, 0, 25, 13], "heads"),
]


@pytest.mark.parametrize("world,layout,causal,window,lengths,alibi", CASES)
def test_ring_equals_the_whole_sequence(tmp_path, world, layout, causal, window, lengths, alibi):
    mp.spawn(worker, args=(world, free_port(), str(tmp_path), layout, causal, window, lengths, alibi), nprocs=world,
             join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    q, k, v, dout = inputs()
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    ref = flash_sigmoid.forward(qs, ks, vs, causal=causal, window_size=window, sigmoid_bias=-math.log(S),
                                alibi_slopes=slopes_of(alibi))
    ref.backward(dout)
    for name, want in (("out", ref.detach()), ("dq", qs.grad), ("dk", ks.grad), ("dv", vs.grad)):
        got = unshard([p[name] for p in parts], layout)
        err = (got - want).abs().max().item()
        assert err <= 1e-5 * max(1.0, want.abs().max().item()), f"{name}: {err}"


def test_pair_calls_reproduce_the_global_band():
    """Every (query range, key range, band) planned as a dense call sees exactly the pairs the band
    shows, with the call's bottom-right window, and its ALiBi shift d makes every local distance
    the global one: checked entry by entry on small ranges."""
    for (q0, m), (k0, n) in [((0, 6), (0, 6)), ((10, 5), (0, 7)), ((0, 5), (8, 4)), ((3, 9), (5, 2)), ((4, 3), (4, 8))]:
        for left in (None, 0, 2, 5, 11):
            for right in (None, 0, 1, 4, 9):
                call = _pair_call((q0, m), (k0, n), left, right)
                want = {(q, kk) for q in range(q0, q0 + m) for kk in range(k0, k0 + n)
                        if (left is None or kk >= q - left) and (right is None or kk <= q + right)}
                got = set()
                if call is not None:
                    qa, mm, kc, nn, (wl, wr), d = call
                    off = nn - mm
                    for i in range(mm):
                        for j in range(nn):
                            assert i + off + d - j == (q0 + qa + i) - (k0 + kc + j), "ALiBi distance"
                            if (wl < 0 or j >= i + off - wl) and (wr < 0 or j <= i + off + wr):
                                got.add((q0 + qa + i, k0 + kc + j))
                assert got == want, ((q0, m), (k0, n), left, right, call)


def test_shard_and_unshard_are_inverse_and_zigzag_balances():
    x = torch.arange(2 * 12).view(1, 24)
    for world in (2, 3):
        for layout in ("contiguous", "zigzag"):
            parts = [shard(x, layout, rank=r, world=world) for r in range(world)]
            assert torch.equal(unshard(parts, layout), x)
    # zig-zag over 2 ranks: chunks (0, 3) and (1, 2) of four
    assert shard(x, "zigzag", rank=0, world=2).tolist() == [list(range(0, 6)) + list(range(18, 24))]
    # uneven contiguous shards, an empty one included
    parts = [shard(x, rank=r, world=3, lengths=[10, 0, 14]) for r in range(3)]
    assert [p.shape[1] for p in parts] == [10, 0, 14] and torch.equal(unshard(parts), x)
    with pytest.raises(ValueError, match="lengths"):
        shard(x, rank=0, world=3, lengths=[10, 0, 13])
    with pytest.raises(ValueError, match="lengths"):
        shard(x, "zigzag", rank=0, world=2, lengths=[12, 12])


def test_needs_an_initialised_group_and_names_unsupported_arguments():
    q = torch.randn(1, 8, 2, 8)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
            context_parallel_attn(q, q, q)
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="window_size"):
            context_parallel_attn(q, q, q, window_size=(4, -2))
        with pytest.raises(ValueError, match="layout"):
            context_parallel_attn(q, q, q, layout="ring")
        with pytest.raises(ValueError, match="shard_lengths"):
            context_parallel_attn(q, q, q, shard_lengths=[7])
        with pytest.raises(ValueError, match="alibi_slopes"):
            context_parallel_attn(q, q, q, alibi_slopes=torch.ones(3))  # q has 2 heads
        qs = q.clone().requires_grad_()
        out = context_parallel_attn(qs, qs, qs, causal=True)  # one rank: the plain attention, bias -log S
        bias = -math.log(q.shape[1])
        assert torch.allclose(out, flash_sigmoid.forward(q, q, q, causal=True, sigmoid_bias=bias), atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), qs)
        q2 = q.clone().requires_grad_()
        (want,) = torch.autograd.grad(flash_sigmoid.forward(q2, q2, q2, causal=True, sigmoid_bias=bias).sum(), q2)
        assert torch.allclose(grad, want, atol=1e-5)
    finally:
        dist.destroy_process_group()

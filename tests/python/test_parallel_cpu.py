"""CPU tier: context_parallel_attn (python/flash_sigmoid/parallel.py) over torch.distributed with the
gloo backend, 2 and 3 processes on this machine: each rank's output and dq/dk/dv shards, reassembled,
equal the single-process attention over the whole sequence and its gradients (contiguous and zig-zag
layouts, causal and not, GQA); the unsupported arguments raise naming themselves."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flash_sigmoid
from flash_sigmoid.parallel import context_parallel_attn, shard, unshard

B, S, HQ, HKV, D = 2, 48, 4, 2, 16


def inputs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, S, HQ, D, generator=g)
    k = torch.randn(B, S, HKV, D, generator=g)
    v = torch.randn(B, S, HKV, D, generator=g)
    dout = torch.randn(B, S, HQ, D, generator=g)
    return q, k, v, dout


def worker(rank, world, port, out_dir, layout, causal):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        q, k, v, dout = inputs()
        qs, ks, vs = (shard(t, layout).clone().requires_grad_() for t in (q, k, v))
        out = context_parallel_attn(qs, ks, vs, causal=causal, layout=layout, sigmoid_bias=-math.log(S))
        out.backward(shard(dout, layout))
        torch.save(dict(out=out.detach(), dq=qs.grad, dk=ks.grad, dv=vs.grad), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world,layout,causal", [(2, "contiguous", False), (2, "zigzag", True),
                                                 (3, "contiguous", True), (3, "zigzag", False)])
def test_ring_equals_the_whole_sequence(tmp_path, world, layout, causal):
    mp.spawn(worker, args=(world, free_port(), str(tmp_path), layout, causal), nprocs=world, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(world)]
    q, k, v, dout = inputs()
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    ref = flash_sigmoid.forward(qs, ks, vs, causal=causal, sigmoid_bias=-math.log(S))
    ref.backward(dout)
    for name, want in (("out", ref.detach()), ("dq", qs.grad), ("dk", ks.grad), ("dv", vs.grad)):
        got = unshard([p[name] for p in parts], layout)
        err = (got - want).abs().max().item()
        assert err <= 1e-5 * max(1.0, want.abs().max().item()), f"{name}: {err}"


def test_shard_and_unshard_are_inverse_and_zigzag_balances():
    x = torch.arange(2 * 12).view(1, 24)
    for world in (2, 3):
        for layout in ("contiguous", "zigzag"):
            parts = [shard(x, layout, rank=r, world=world) for r in range(world)]
            assert torch.equal(unshard(parts, layout), x)
    # zig-zag over 2 ranks: chunks (0, 3) and (1, 2) of four
    assert shard(x, "zigzag", rank=0, world=2).tolist() == [list(range(0, 6)) + list(range(18, 24))]


def test_needs_an_initialised_group_and_names_unsupported_arguments():
    q = torch.randn(1, 8, 2, 8)
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
            context_parallel_attn(q, q, q)
    port = free_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with pytest.raises(NotImplementedError, match="window_size"):
            context_parallel_attn(q, q, q, window_size=(4, 0))
        with pytest.raises(NotImplementedError, match="alibi_slopes"):
            context_parallel_attn(q, q, q, alibi_slopes=torch.ones(2))
        qs = q.clone().requires_grad_()
        out = context_parallel_attn(qs, qs, qs, causal=True)  # one rank: the plain attention
        assert torch.allclose(out, flash_sigmoid.forward(q, q, q, causal=True), atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), qs)
        q2 = q.clone().requires_grad_()
        (want,) = torch.autograd.grad(flash_sigmoid.forward(q2, q2, q2, causal=True).sum(), q2)
        assert torch.allclose(grad, want, atol=1e-5)
    finally:
        dist.destroy_process_group()

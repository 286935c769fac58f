"""Strong scaling of context_parallel_attn (issue 21): one long sequence, sharded zig-zag over the
ranks of a torchrun launch, forward + backward, causal by default.

    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 8 benchmarks/bench_parallel.py --seqlens 131072 524288
    python3 benchmarks/bench_parallel.py --cpu --world 2 --seqlens 512 --heads 2 --head-dim 32  # smoke test

Prints, per sequence length, the median time of a forward + backward over `--iters` runs (after
warm-up, the ranks synchronised by a barrier around each run; the slowest rank's time), TFLOP/s per
GPU (FLOPs of the visible pairs, 4 B H S^2 D x 3.5 for forward + backward, halved when causal), and
with --baseline-ms (the one-GPU time of the same shape, from a run with one process) the scaling
efficiency T1 / (W TW).
"""
import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from flash_sigmoid.parallel import context_parallel_attn


def run(rank, world, args):
    if args.cpu:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(args.port))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        device = torch.device("cpu")
        dtype = torch.float32
    else:
        dist.init_process_group("nccl")
        rank, world = dist.get_rank(), dist.get_world_size()
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
        dtype = torch.bfloat16
    sync = (lambda: None) if args.cpu else torch.cuda.synchronize
    try:
        for s in args.seqlens:
            n = s // world
            g = torch.Generator(device="cpu").manual_seed(rank)
            shape_q, shape_kv = (1, n, args.heads, args.head_dim), (1, n, args.kv_heads or args.heads, args.head_dim)
            q, k, v = (torch.randn(sh, generator=g).to(device, dtype).requires_grad_()
                       for sh in (shape_q, shape_kv, shape_kv))
            dout = torch.randn(shape_q, generator=g).to(device, dtype)
            times = []
            for it in range(args.warmup + args.iters):
                dist.barrier()
                sync()
                t0 = time.perf_counter()
                out = context_parallel_attn(q, k, v, causal=not args.no_causal, layout="zigzag",
                                            shard_lengths=[n] * world)
                out.backward(dout)
                sync()
                dist.barrier()
                if it >= args.warmup:
                    times.append(time.perf_counter() - t0)
                q.grad = k.grad = v.grad = None
            ms = statistics.median(times) * 1e3
            flops = 4 * args.heads * s * s * args.head_dim * 3.5 * (0.5 if not args.no_causal else 1.0)
            if rank == 0:
                line = (f"world {world}  S {s}  D {args.head_dim}  heads {args.heads}  "
                        f"{'causal' if not args.no_causal else 'full'}  fwd+bwd {ms:.2f} ms  "
                        f"{flops / (ms * 1e-3) / world / 1e12:.1f} TFLOP/s per device")
                if args.baseline_ms:
                    line += f"  efficiency {args.baseline_ms / (world * ms):.2f}"
                print(line, flush=True)
    finally:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqlens", type=int, nargs="+", default=[131072, 524288])
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=0, help="GQA: key/value heads (default: --heads)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--no-causal", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--baseline-ms", type=float, default=0.0, help="one-GPU time of the same shape")
    ap.add_argument("--cpu", action="store_true", help="gloo processes on this machine (a smoke test)")
    ap.add_argument("--world", type=int, default=2, help="with --cpu: the process count")
    ap.add_argument("--port", type=int, default=29531)
    args = ap.parse_args()
    for s in args.seqlens:
        if s % (2 * (args.world if args.cpu else int(os.environ.get("WORLD_SIZE", 1)))):
            ap.error(f"--seqlens: {s} is not divisible by 2 x the world size (zig-zag chunks)")
    if args.cpu:
        mp.spawn(run, args=(args.world, args), nprocs=args.world, join=True)
    else:
        run(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), args)


if __name__ == "__main__":
    main()

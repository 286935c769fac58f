"""FlashSigmoid CPU benchmark (issue 23): the CPU implementation against eager PyTorch sigmoid attention
and torch.matmul's FLOP rate, in the same run, per thread count.

For each thread count (torch.set_num_threads, which the CPU ops follow) and each case, times the
median of --reps runs (after one warm-up) of:
  - ours: flash_sigmoid.forward, and forward + backward through autograd (CPU tensors);
  - eager: the sigmoid attention users write by hand (benchmarks/bench.py's eager_sigmoid_attention:
    scores materialised, sigmoid, masked_fill for causal, P @ V), forward and forward + backward;
  - matmul: torch.matmul of [B*H, S, D] x [B*H, D, S] (the score product, the forward's first GEMM),
    whose GFLOP/s is the machine's BLAS rate for this shape.
FLOPs are 4·B·H·Sq·Sk·D times the visible fraction (½ for square causal), 3.5× for forward + backward.
The load average before the run and the thread count are recorded with the numbers.

    python benchmarks/bench_cpu.py [--threads 1 2] [--seqlen 2048] [--heads 8] [--head-dim 64]
                                   [--bias neglog|0] [--causal no yes] [--reps 5] [--markdown out.md]
"""
import argparse
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))


def eager_sigmoid_attention(q, k, v, bias, causal):
    """As benchmarks/bench.py's: eager sigmoid attention in the inputs' dtype, [B, H, S, D] internally."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    p = torch.sigmoid(torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias)
    if causal:
        sq, sk = q.shape[-2], k.shape[-2]
        i = torch.arange(sq).unsqueeze(1)
        j = torch.arange(sk).unsqueeze(0)
        p = p.masked_fill(j > i + (sk - sq), 0)  # bottom-right aligned, as flash_sigmoid
    return torch.matmul(p, v).transpose(1, 2)


def ours(q, k, v, bias, causal):
    import flash_sigmoid
    return flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal)


def median_ms(fn, reps):
    fn()  # warm-up (allocations, first-touch)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def step(attention, q, k, v, bias, causal, direction, dout):
    if direction == "fwd":
        def run():
            with torch.no_grad():
                attention(q, k, v, bias, causal)
    else:
        def run():
            for t in (q, k, v):
                t.grad = None
            attention(q, k, v, bias, causal).backward(dout)
    return run


def attention_flops(b, h, s, d, causal, direction):
    pairs = s * (s + 1) / 2 if causal else s * s
    return 4 * b * h * pairs * d * (3.5 if direction == "fwdbwd" else 1.0)


def run_case(threads, b, s, h, d, bias, causal, reps):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(b, s, h, d, generator=g) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    with torch.no_grad():  # correctness before timing: ours against eager on the same inputs
        err = (ours(q, k, v, bias, causal) - eager_sigmoid_attention(q, k, v, bias, causal)).abs().max().item()
    row = {"threads": threads, "S": s, "causal": causal, "bias": bias, "max_abs_diff": err}
    for direction in ("fwd", "fwdbwd"):
        flops = attention_flops(b, h, s, d, causal, direction)
        for name, attention in (("ours", ours), ("eager", eager_sigmoid_attention)):
            ms = median_ms(step(attention, q, k, v, bias, causal, direction, dout), reps)
            row[f"{name}_{direction}_ms"] = ms
            row[f"{name}_{direction}_gflops"] = flops / ms / 1e6
    a = torch.randn(b * h, s, d, generator=g)
    bt = torch.randn(b * h, d, s, generator=g)
    mm_ms = median_ms(lambda: torch.matmul(a, bt), reps)
    row["matmul_ms"] = mm_ms
    row["matmul_gflops"] = 2 * b * h * s * s * d / mm_ms / 1e6
    return row


def markdown(rows, env):
    lines = [f"{env}", "",
             "| threads | causal | ours fwd ms | eager fwd ms | fwd speed-up | ours fwd+bwd ms | eager fwd+bwd ms "
             "| fwd+bwd speed-up | ours fwd GFLOP/s | ours fwd+bwd GFLOP/s | matmul GFLOP/s | fwd / matmul "
             "| fwd+bwd / matmul |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {'yes' if r['causal'] else 'no'} | {r['ours_fwd_ms']:.0f} | {r['eager_fwd_ms']:.0f} "
            f"| {r['eager_fwd_ms'] / r['ours_fwd_ms']:.2f}x | {r['ours_fwdbwd_ms']:.0f} | {r['eager_fwdbwd_ms']:.0f} "
            f"| {r['eager_fwdbwd_ms'] / r['ours_fwdbwd_ms']:.2f}x | {r['ours_fwd_gflops']:.1f} "
            f"| {r['ours_fwdbwd_gflops']:.1f} | {r['matmul_gflops']:.1f} "
            f"| {r['ours_fwd_gflops'] / r['matmul_gflops']:.2f} | {r['ours_fwdbwd_gflops'] / r['matmul_gflops']:.2f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--bias", default="neglog", help="'neglog' (-log S) or a number")
    ap.add_argument("--causal", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--markdown", help="also write the table to this file")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    bias = -math.log(a.seqlen) if a.bias == "neglog" else float(a.bias)
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
    env = (f"B {a.batch}, S {a.seqlen}, H {a.heads}, D {a.head_dim}, fp32, bias {bias:.3f}, median of {a.reps}; "
           f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average before the run {' '.join(load)}, "
           f"FLASH_SIGMOID_CPU_KERNELS={os.environ.get('FLASH_SIGMOID_CPU_KERNELS', 'auto')}")
    print(env, flush=True)
    rows = []
    for threads in a.threads:
        for causal in a.causal:
            row = run_case(threads, a.batch, a.seqlen, a.heads, a.head_dim, bias, causal == "yes", a.reps)
            rows.append(row)
            print({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    table = markdown(rows, env)
    print(table)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table)
    return rows


if __name__ == "__main__":
    main()

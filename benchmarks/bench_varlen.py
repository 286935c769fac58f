#!/usr/bin/env python3
"""Packed (varlen) sequences on the GPU against dense batches, in one run (issue 18's bar,
docs/varlen.md): 16k tokens packed as 4096 + 2·2048 + 4·1024 + 8·512, causal, 16 heads of 128, bf16,
bias "auto", through flash_attn_varlen_func (the kernels' own varlen), against
  - 4 × 4096 dense causal through flash_attn_func (the same tokens in equal sequences),
  - SDPA with the CUDNN_ATTENTION backend (softmax) on the padded equivalent ([15, 4096], causal),
  - our dense kernels on the same padded batch (what the padded path cost).
TFLOP/s count the real sequences' FLOPs only (4·H·S²·D/2 per causal sequence; backward 2.5×).
Times: median of triton.testing.do_bench (cold L2). Prints one markdown table.

Usage: python3 benchmarks/bench_varlen.py [--no-backward]
"""
import argparse
import math
import subprocess

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

import flash_sigmoid

LENGTHS = [4096] + [2048] * 2 + [1024] * 4 + [512] * 8
HEADS, HEAD_DIM = 16, 128


def bench_ms(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def causal_flops(lengths):
    return sum(4 * HEADS * n * n * HEAD_DIM / 2 for n in lengths)


def step(fn, inputs, backward):
    if not backward:
        return lambda: fn(*inputs)
    out = fn(*inputs)
    dout = torch.randn_like(out)

    def run():
        o = fn(*inputs)
        torch.autograd.grad(o, inputs, dout)
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-backward", action="store_true")
    a = p.parse_args()
    dev, dt = "cuda", torch.bfloat16
    total, longest = sum(LENGTHS), max(LENGTHS)
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(total, HEADS, HEAD_DIM, device=dev, dtype=dt, generator=g) for _ in range(3))
    cu = torch.tensor([0] + torch.tensor(LENGTHS).cumsum(0).tolist(), dtype=torch.int32, device=dev)
    varlen = lambda q, k, v: flash_sigmoid.flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=True,
                                                                  sigmoid_bias="auto")
    # flash_attn_func takes a float bias: -log(4096) is "auto" for 4 x 4096 and, for timing, the
    # padded batch's bias too (a bias changes no work).
    dense = lambda q, k, v: flash_sigmoid.flash_attn_func(q, k, v, causal=True, sigmoid_bias=-math.log(longest))
    # The padded equivalent: each sequence left-aligned in a [B, 4096] batch (top-left causal is
    # each real row's mask for SDPA; ours is bottom-right, so ours gets the rows right-aligned).
    batch = len(LENGTHS)
    pad_left = torch.zeros(batch, longest, HEADS, HEAD_DIM, device=dev, dtype=dt)
    pad_right = torch.zeros_like(pad_left)
    start = 0
    for b, n in enumerate(LENGTHS):
        pad_left[b, :n] = q[start:start + n]
        pad_right[b, longest - n:] = q[start:start + n]
        start += n
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                          is_causal=True).transpose(1, 2)

    def sdpa_cudnn(q, k, v):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return sdpa(q, k, v)
    dense_in = [t.reshape(4, 4096, HEADS, HEAD_DIM) for t in (q, k, v)]
    rows = []
    real = causal_flops(LENGTHS)
    cases = [("ours varlen (packed)", varlen, [q, k, v], real),
             ("ours dense 4 × 4096", dense, dense_in, causal_flops([4096] * 4)),
             ("SDPA cuDNN padded [15, 4096]", sdpa_cudnn, [pad_left] * 3, real),
             ("ours dense padded [15, 4096]", dense, [pad_right] * 3, real)]
    for direction in ["fwd"] + ([] if a.no_backward else ["fwd+bwd"]):
        for name, fn, inputs, flops in cases:
            inputs = [t.detach().clone().requires_grad_(direction != "fwd") for t in inputs]
            try:
                ms = bench_ms(step(fn, inputs, direction != "fwd"))
                work = flops * (3.5 if direction != "fwd" else 1.0)
                rows.append((direction, name, ms, work / ms / 1e9))
            except Exception as e:  # a backend this torch build lacks
                rows.append((direction, name, float("nan"), float("nan")))
                print(f"{name} {direction}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, commit {commit}; lengths {LENGTHS}, "
          f"causal, H {HEADS}, D {HEAD_DIM}, bf16, bias auto")
    print("| direction | case | ms | TFLOP/s (real sequences) |\n|---|---|---|---|")
    for direction, name, ms, tflops in rows:
        print(f"| {direction} | {name} | {ms:.3f} | {tflops:.0f} |")
    by = {(d, n): t for d, n, _, t in rows}
    for direction in {d for d, _, _, _ in rows}:
        v_, d_, c_ = (by[(direction, n)] for n, _, _, _ in cases[:3])
        print(f"{direction}: varlen / dense = {v_ / d_:.2f} (bar 0.85), varlen / cuDNN padded = {v_ / c_:.2f} (bar 1.0)")


if __name__ == "__main__":
    main()

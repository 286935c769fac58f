#!/usr/bin/env python3
"""What attention dropout costs on the GPU (issue 20's budget: <= 15% of forward + backward at
D = 128, S = 8k on the H200), in one run: flash_attn_func with dropout_p = 0 against dropout_p > 0,
forward alone and forward + backward, bf16, bias -log S, B*S = 16k, hidden 2048, causal and not.
For reference the same pair through SDPA's flash backend (FlashAttention-2's softmax dropout) and,
where PyTorch's cuDNN backend takes dropout, through cuDNN.

Times: median of triton.testing.do_bench (cold L2); each timed call with dropout draws its own seed
(as training does), which is part of the cost. Prints one markdown table.

Usage: python3 benchmarks/bench_dropout.py [--p 0.1] [--seqlens 8192] [--head-dims 64 128 256]
"""
import argparse
import math
import subprocess

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

import flash_sigmoid


def bench_ms(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def step(fn, inputs, backward):
    if not backward:
        return lambda: fn(*inputs)
    out = fn(*inputs)
    dout = torch.randn_like(out)

    def run():
        o = fn(*inputs)
        torch.autograd.grad(o, inputs, dout)
    return run


def ours(p, causal, bias):
    return lambda q, k, v: flash_sigmoid.flash_attn_func(q, k, v, dropout_p=p, causal=causal, sigmoid_bias=bias)


def sdpa(backend, p, causal):
    def run(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  dropout_p=p, is_causal=causal).transpose(1, 2)
    return run


def cost(fn_off, fn_on, inputs, backward):
    """(ms without dropout, ms with, relative cost), or None when the implementation refuses."""
    try:
        off = bench_ms(step(fn_off, inputs, backward))
        on = bench_ms(step(fn_on, inputs, backward))
    except RuntimeError as e:  # a backend without dropout, or without this shape
        return None, str(e).splitlines()[0][:80]
    return (off, on, on / off - 1.0), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--seqlens", type=int, nargs="+", default=[8192])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--hidden", type=int, default=2048)
    a = ap.parse_args()
    dev, dt = "cuda", torch.bfloat16
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"GPU {torch.cuda.get_device_name()}, commit {commit}, torch {torch.__version__}, bf16, dropout_p {a.p}, "
          f"B*S = {a.tokens}, hidden {a.hidden}, bias -log S; ms are do_bench medians\n")
    print("| D | S | causal | pass | impl | ms p=0 | ms p>0 | dropout cost |")
    print("|---|---|---|---|---|---|---|---|")
    for d in a.head_dims:
        for s in a.seqlens:
            b, h = max(1, a.tokens // s), a.hidden // d
            for causal in (False, True):
                g = torch.Generator(device=dev).manual_seed(0)
                inputs = [torch.randn(b, s, h, d, device=dev, dtype=dt, generator=g).requires_grad_() for _ in range(3)]
                impls = [("flash_sigmoid", ours(0.0, causal, -math.log(s)), ours(a.p, causal, -math.log(s))),
                         ("sdpa flash (softmax)", sdpa(SDPBackend.FLASH_ATTENTION, 0.0, causal),
                          sdpa(SDPBackend.FLASH_ATTENTION, a.p, causal)),
                         ("sdpa cudnn (softmax)", sdpa(SDPBackend.CUDNN_ATTENTION, 0.0, causal),
                          sdpa(SDPBackend.CUDNN_ATTENTION, a.p, causal))]
                for backward in (False, True):
                    for name, off, on in impls:
                        r, why = cost(off, on, inputs, backward)
                        pas = "fwd+bwd" if backward else "fwd"
                        if r is None:
                            print(f"| {d} | {s} | {causal} | {pas} | {name} | — | — | not run: {why} |")
                        else:
                            print(f"| {d} | {s} | {causal} | {pas} | {name} | {r[0]:.3f} | {r[1]:.3f} | "
                                  f"{100 * r[2]:+.1f}% |")
                del inputs
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

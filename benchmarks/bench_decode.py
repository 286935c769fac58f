"""Decode benchmark (issue 19, DESIGN §6): flash_attn_with_kvcache with one query token against a
long KV cache, reported as KV-cache read bandwidth (bytes of K and V read / median time).

bf16, B 16, Hq 32, Hkv 8, D 128, Sk 8k/16k/32k/64k (every row full), contiguous and paged (page 16
and 256, pages in random order); fresh random inputs. The decode kernel is timed twice: the eager
Python call (its host work included, which bounds short caches) and the same call captured in a
CUDA graph and replayed (how a serving loop runs decode; the kernel's own bandwidth); and a whole
serving step (one new token appended with rotary, then attended: the append kernel, then the decode
kernel). Beside the decode kernel, in the same run: the
composed path (kvcache.py's torch gather + dense forward), and PyTorch SDPA (softmax; cuDNN and
flash backends where they take the shape, GQA through enable_gqa) on the same K/V as a reference
for what a memory-bound decode reaches on this GPU. The caches (0.5-4 GiB) dwarf L2, so no flush is
needed. Prints a table; --json writes the rows.

    python3 benchmarks/bench_decode.py [--seqlens 8192,65536] [--json out.json]
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F

from flash_sigmoid import flash_attn_with_kvcache
from flash_sigmoid import kvcache as fs_kvcache

B, HQ, HKV, D = 16, 32, 8, 128


def median_ms(fn, iters=20, warmup=3):
    """Median time of one call with a sync after each (the call's host latency included)."""
    return back_to_back_ms(fn, calls=1, repeats=iters, warmup=warmup)


def rotary_tables(seqlen, base=10000.0):
    """cos, sin [seqlen, D / 2] in fp32 (GPT-NeoX frequencies)."""
    inv = base ** (-torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D)
    angles = torch.arange(seqlen, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]
    return angles.cos(), angles.sin()


def back_to_back_ms(fn, calls=20, repeats=10, warmup=3):
    """Per-call time of `calls` calls issued back to back (events around the batch, no sync between
    calls, so one call's host work overlaps the previous call's kernels): the throughput of an eager
    serving loop. median_ms above syncs after every call, so its time adds the host latency of
    each call to the kernels'."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    times.sort()
    return times[len(times) // 2]


def make_cache(seqlen, page_size, g):
    """(k_cache, v_cache, block_table or None) holding B rows of `seqlen` keys."""
    if page_size is None:
        shape = (B, seqlen, HKV, D)
        table = None
    else:
        pages = B * seqlen // page_size
        shape = (pages, page_size, HKV, D)
        table = torch.randperm(pages, device="cuda", generator=g).to(torch.int32).view(B, seqlen // page_size)
    k = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    return k, v, table


def run(seqlens, composed_up_to):
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for seqlen in seqlens:
        kv_bytes = 2 * B * seqlen * HKV * D * 2
        q = torch.randn(B, 1, HQ, D, device="cuda", dtype=torch.bfloat16, generator=g)
        lens = torch.full((B,), seqlen, dtype=torch.int32, device="cuda")
        bias = -math.log(seqlen)
        for page_size in (None, 16, 256):
            layout = "contiguous" if page_size is None else f"paged {page_size}"
            k, v, table = make_cache(seqlen, page_size, g)
            call = lambda: flash_attn_with_kvcache(q, k, v, cache_seqlens=lens, block_table=table, sigmoid_bias=bias)
            ms = median_ms(call)
            rows.append(dict(seqlen=seqlen, layout=layout, impl="flash_sigmoid decode (eager, synced per call)", ms=ms,
                             tbps=kv_bytes / ms / 1e9))
            ms = back_to_back_ms(call)
            rows.append(dict(seqlen=seqlen, layout=layout, impl="flash_sigmoid decode (eager, back to back)", ms=ms,
                             tbps=kv_bytes / ms / 1e9))
            # As a serving loop runs it: the call captured once, replayed (no Python or launch overhead).
            call()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                call()
            ms = median_ms(graph.replay)
            rows.append(dict(seqlen=seqlen, layout=layout, impl="flash_sigmoid decode (CUDA graph)", ms=ms,
                             tbps=kv_bytes / ms / 1e9))
            del graph
            # A serving step: one new token appended (rotated, half-split rotary over all of D) into the
            # last slot of each row, then attended; the append kernel runs before the decode kernel.
            k_new = torch.randn(B, 1, HKV, D, device="cuda", dtype=torch.bfloat16, generator=g)
            cos, sin = rotary_tables(seqlen)
            step = lambda: flash_attn_with_kvcache(q, k, v, k_new, k_new, rotary_cos=cos, rotary_sin=sin,
                                                   cache_seqlens=lens - 1, block_table=table, causal=True,
                                                   rotary_interleaved=False, sigmoid_bias=bias)
            ms = median_ms(step)
            rows.append(dict(seqlen=seqlen, layout=layout, impl="flash_sigmoid append + rotary + decode (eager, synced)",
                             ms=ms, tbps=kv_bytes / ms / 1e9))
            ms = back_to_back_ms(step)
            rows.append(dict(seqlen=seqlen, layout=layout, impl="flash_sigmoid append + rotary + decode (back to back)",
                             ms=ms, tbps=kv_bytes / ms / 1e9))
            if seqlen <= composed_up_to:
                real = fs_kvcache._decode_kernel_takes
                fs_kvcache._decode_kernel_takes = lambda *a: False
                try:
                    ms = median_ms(lambda: flash_attn_with_kvcache(q, k, v, cache_seqlens=lens, block_table=table,
                                                                   sigmoid_bias=bias), iters=5, warmup=1)
                    rows.append(dict(seqlen=seqlen, layout=layout, impl="composed path", ms=ms,
                                     tbps=kv_bytes / ms / 1e9))
                finally:
                    fs_kvcache._decode_kernel_takes = real
            if page_size is None:
                qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                for name, backend in (("SDPA cuDNN (softmax)", torch.nn.attention.SDPBackend.CUDNN_ATTENTION),
                                      ("SDPA flash (softmax)", torch.nn.attention.SDPBackend.FLASH_ATTENTION)):
                    try:
                        sdpa = lambda: F.scaled_dot_product_attention(qt, kt, vt, enable_gqa=True)
                        with torch.nn.attention.sdpa_kernel(backend):
                            ms = median_ms(sdpa)
                            rows.append(dict(seqlen=seqlen, layout=layout, impl=name + " synced", ms=ms,
                                             tbps=kv_bytes / ms / 1e9))
                            ms = back_to_back_ms(sdpa)
                        rows.append(dict(seqlen=seqlen, layout=layout, impl=name + " back to back", ms=ms,
                                         tbps=kv_bytes / ms / 1e9))
                    except RuntimeError as e:
                        rows.append(dict(seqlen=seqlen, layout=layout, impl=name, ms=None, tbps=None,
                                         note=str(e).splitlines()[0][:80]))
            del k, v, table
            torch.cuda.empty_cache()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqlens", default="8192,16384,32768,65536")
    p.add_argument("--composed-up-to", type=int, default=16384, help="time the composed path up to this Sk")
    p.add_argument("--json", default="")
    a = p.parse_args()
    rows = run([int(s) for s in a.seqlens.split(",")], a.composed_up_to)
    print(f"# decode, {torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 B {B} Hq {HQ} Hkv {HKV} D {D}, "
          "one query token; TB/s = K+V bytes / median time")
    print("| Sk | layout | implementation | ms | TB/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['ms']:.3f}" if r["ms"] is not None else "n/a"
        tb = f"{r['tbps']:.2f}" if r["tbps"] is not None else r.get("note", "n/a")
        print(f"| {r['seqlen']} | {r['layout']} | {r['impl']} | {ms} | {tb} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

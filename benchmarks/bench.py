"""FlashSigmoid benchmark harness (DESIGN §6).

TFLOP/s of FlashSigmoid and the baselines measured in the same run on the same GPU: PyTorch SDPA
with the FLASH_ATTENTION backend (FA2, softmax), SDPA with the CUDNN_ATTENTION backend (softmax)
and eager PyTorch sigmoid attention. FLOPs = 4·B·H·Sq·Sk·D times the visible fraction; median of
triton.testing.do_bench (cold L2). Each FlashSigmoid configuration is checked against the fp64
reference on a slice before it is timed.

    python benchmarks/bench.py [--quick] [--head-dims 64 128] [--seqlens 1024 8192] [--json out.json]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "gpu"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import flash_sigmoid  # noqa: E402
from reference import attention_reference, visible_mask  # noqa: E402


def visible_fraction(sq, sk, causal):
    if not causal:
        return 1.0
    return visible_mask(sq, sk, True, (-1, -1), "cpu").double().mean().item()


def bench_ms(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def eager_sigmoid(q, k, v, bias, causal):
    # Eager PyTorch sigmoid attention in the inputs' dtype: [B, H, S, D] layout.
    s = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
    p = torch.sigmoid(s)
    if causal:
        p = p.masked_fill(~visible_mask(q.shape[-2], k.shape[-2], True, (-1, -1), q.device), 0)
    return torch.matmul(p, v)


def sdpa(backend):
    from torch.nn.attention import sdpa_kernel

    def run(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def check(q, k, v, bias, causal, score_function):
    """Relative Frobenius error vs fp64 on the first 256 query rows of batch 0."""
    qs, ks, vs = q[:1, -256:], k[:1], v[:1]
    out = flash_sigmoid.forward(qs, ks, vs, sigmoid_bias=bias, causal=causal, score_function=score_function)
    ref = attention_reference(qs, ks, vs, sigmoid_bias=bias, causal=causal)
    return ((out.double() - ref).norm() / ref.norm()).item()


def sdpa_backward(backend, q, k, v, causal):
    """Times the backward alone: one forward with autograd, then repeated torch.autograd.grad."""
    from torch.nn.attention import sdpa_kernel
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
    dout = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True)


def peak_memory_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run_case(d, s, causal, dtype=torch.bfloat16, total_tokens=16384, hidden=2048, eager_max_s=8192):
    b, h = max(total_tokens // s, 1), hidden // d
    gen = torch.Generator(device="cuda").manual_seed(s * 1000 + d)
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
    bias = -math.log(s)
    flops = 4 * b * h * s * s * d * visible_fraction(s, s, causal)
    row = dict(head_dim=d, seqlen=s, batch=b, heads=h, causal=causal, dtype=str(dtype)[6:])
    row["rel_err_exp2"] = check(q, k, v, bias, causal, "exp2")
    tfs = lambda ms: flops / ms / 1e9  # noqa: E731
    row["flash_sigmoid"] = tfs(bench_ms(lambda: flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal)))
    row["flash_sigmoid_tanh"] = tfs(bench_ms(
        lambda: flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal, score_function="tanh")))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # SDPA and eager take [B, H, S, D]
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            row[name] = tfs(bench_ms(lambda: sdpa(backend)(qt, kt, vt, causal)))
        except RuntimeError as e:  # backend not available for this shape
            row[name] = None
            row[name + "_error"] = str(e).splitlines()[0][:120]
    row["eager_sigmoid"] = tfs(bench_ms(lambda: eager_sigmoid(qt, kt, vt, bias, causal))) if s <= eager_max_s else None
    row["speedup_vs_sdpa_flash"] = row["flash_sigmoid"] / row["sdpa_flash"] if row.get("sdpa_flash") else None
    # Backward (2.5x the forward's FLOPs), where a backward kernel is built for this head dim.
    tfs_bwd = lambda ms: 2.5 * flops / ms / 1e9  # noqa: E731
    dout = torch.randn_like(q)
    bwd = lambda: flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=bias, causal=causal)  # noqa: E731
    try:
        bwd()
        row["flash_sigmoid_bwd"] = tfs_bwd(bench_ms(bwd))
        row["peak_mb_flash_sigmoid"] = peak_memory_mb(
            lambda: (flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal), bwd()))
    except RuntimeError as e:
        row["flash_sigmoid_bwd"] = None
        row["flash_sigmoid_bwd_error"] = str(e).splitlines()[0][:160]
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            row[name + "_bwd"] = tfs_bwd(bench_ms(sdpa_backward(backend, qt, kt, vt, causal)))
            if name == "sdpa_flash":
                row["peak_mb_sdpa_flash"] = peak_memory_mb(lambda: sdpa_backward(backend, qt, kt, vt, causal)())
        except RuntimeError:
            row[name + "_bwd"] = None
    if row.get("flash_sigmoid_bwd") and row.get("sdpa_flash_bwd"):
        row["bwd_speedup_vs_sdpa_flash"] = row["flash_sigmoid_bwd"] / row["sdpa_flash_bwd"]
    return row


def environment():
    p = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip() or os.environ.get("FLASH_SIGMOID_COMMIT", "?")
    except OSError:
        commit = os.environ.get("FLASH_SIGMOID_COMMIT", "?")
    try:
        clocks = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        clocks = "?"
    return dict(gpu=p.name, sms=p.multi_processor_count, torch=torch.__version__, cuda=torch.version.cuda,
                commit=os.environ.get("FLASH_SIGMOID_COMMIT", commit), clocks=clocks,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def fmt(x, spec="{:.0f}"):
    return "—" if x is None else spec.format(x)


def plot(rows, env, path_prefix):
    """One PNG per head dim: forward and backward TFLOP/s against seqlen, causal and not."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    for d in sorted({r["head_dim"] for r in rows}):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
        for ax, direction in zip(axes, ("forward", "backward")):
            series = (("flash_sigmoid", "FlashSigmoid (exp2)", "tab:blue"),
                      ("flash_sigmoid_tanh", "FlashSigmoid (tanh)", "tab:cyan"),
                      ("sdpa_flash", "SDPA flash (FA2, softmax)", "tab:red"),
                      ("sdpa_cudnn", "SDPA cuDNN (softmax)", "tab:purple"))
            for key, label, color in series:
                k = key if direction == "forward" else key + "_bwd"
                for causal, style in ((False, "-o"), (True, "--s")):
                    pts = [(r["seqlen"], r.get(k)) for r in rows if r["head_dim"] == d and r["causal"] == causal]
                    pts = [(x, y) for x, y in pts if y]
                    if pts:
                        ax.plot(*zip(*pts), style, color=color, label=f"{label}{' causal' if causal else ''}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("seqlen")
            ax.set_title(f"{direction}, D={d}")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("TFLOP/s")
        for ax in axes:
            ax.legend(fontsize=7)
        fig.suptitle(f"{env['gpu']}, bf16, bias=-log(S), commit {env['commit']}", fontsize=9)
        path = f"{path_prefix}_d{d}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def markdown(rows, env):
    lines = [f"GPU {env['gpu']} ({env['sms']} SMs, clocks {env['clocks']}), torch {env['torch']}, CUDA {env['cuda']}, "
             f"commit {env['commit']}, {env['date']}. Forward TFLOP/s, bf16, bias = −log(S), median of do_bench.",
             "",
             "| D | S | causal | FlashSigmoid (exp2) | FlashSigmoid (tanh) | SDPA flash (FA2) | SDPA cuDNN | eager sigmoid | vs SDPA flash | rel. err |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['head_dim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {fmt(r['flash_sigmoid'])} | "
                     f"{fmt(r['flash_sigmoid_tanh'])} | {fmt(r.get('sdpa_flash'))} | {fmt(r.get('sdpa_cudnn'))} | "
                     f"{fmt(r.get('eager_sigmoid'))} | {fmt(r['speedup_vs_sdpa_flash'], '{:.2f}×')} | {r['rel_err_exp2']:.1e} |")
    lines += ["", "Backward TFLOP/s (2.5× the forward's FLOPs) and peak memory of forward + backward:", "",
              "| D | S | causal | FlashSigmoid | SDPA flash (FA2) | SDPA cuDNN | vs SDPA flash | peak MiB FlashSigmoid | peak MiB SDPA flash |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['head_dim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | {fmt(r.get('flash_sigmoid_bwd'))} | "
                     f"{fmt(r.get('sdpa_flash_bwd'))} | {fmt(r.get('sdpa_cudnn_bwd'))} | "
                     f"{fmt(r.get('bwd_speedup_vs_sdpa_flash'), '{:.2f}×')} | {fmt(r.get('peak_mb_flash_sigmoid'))} | "
                     f"{fmt(r.get('peak_mb_sdpa_flash'))} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--causal", choices=["both", "yes", "no"], default="both")
    ap.add_argument("--quick", action="store_true", help="D 64/128, S 1k/8k: a smoke run")
    ap.add_argument("--json", help="write rows and environment here")
    ap.add_argument("--markdown", help="write the markdown table here")
    ap.add_argument("--plot", help="write one PNG per head dim, named PREFIX_d<D>.png")
    a = ap.parse_args()
    if a.quick:
        a.seqlens = [1024, 8192]
    causal = {"both": [False, True], "yes": [True], "no": [False]}[a.causal]
    env = environment()
    rows = []
    for d in a.head_dims:
        for s in a.seqlens:
            for c in causal:
                r = run_case(d, s, c)
                rows.append(r)
                print(f"[{len(rows)}/{len(a.head_dims) * len(a.seqlens) * len(causal)}] D={d:3d} S={s:5d} causal={int(c)}: "
                      f"fwd {r['flash_sigmoid']:.0f} (SDPA flash {fmt(r.get('sdpa_flash'))}), "
                      f"bwd {fmt(r.get('flash_sigmoid_bwd'))} (SDPA flash {fmt(r.get('sdpa_flash_bwd'))}) TFLOP/s",
                      flush=True)
    table = markdown(rows, env)
    print(table)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(environment=env, rows=rows), f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")
    if a.plot:
        print("plots:", ", ".join(plot(rows, env, a.plot)))


if __name__ == "__main__":
    main()

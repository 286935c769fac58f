"""Same-run A/B of kernel-table variants against the softmax baselines (forward or backward).

    python benchmarks/bench_variants.py --variants "" ws ws_lockstep --head-dims 64 128
    python benchmarks/bench_variants.py --json out/ab.json --markdown out/ab.md
    python benchmarks/bench_variants.py --direction bwd --variants "" det
    python benchmarks/bench_variants.py --direction bwd --variants det --deterministic

A new mainloop lives beside the default as a named variant (src/dispatch/kernel_table.py) until
it wins here, in one run on one GPU, against the default and against SDPA's cuDNN backend; then it
becomes the default. Each case is DESIGN §6's shape (B·S = 16k tokens, hidden 2048), bf16, bias
−log S; every variant is first checked against an fp64 reference on a slice of the case (a wrong
kernel is not timed), then timed with triton's do_bench (median, L2 flushed). Rows report TFLOP/s
(visible pairs only for causal) and each variant's ratio to cuDNN.

--direction bwd times the backward instead (flash_sigmoid.backward per variant, with
--deterministic as the mode; SDPA's backward of a retained graph; and, with --deterministic, the
sm80 family's deterministic backward by name as "sm80_det"): each variant's dq, dk, dv are first
checked against the default sm90 backward's (relative error below 1e-2), FLOPs 2.5x the forward's.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import attention_flops, bench_ms, case_shape, environment, unavailable_providers  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "gpu"))
from reference import attention_reference  # noqa: E402


def sdpa(backend, q, k, v, causal):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=causal)


def time_and_print(providers, row, flops, label, causal):
    """Times every provider into row (TFLOP/s, or an error) and prints one line with the ratios to cuDNN."""
    for name, fn in providers.items():
        try:
            row[name] = flops / bench_ms(fn) / 1e9
        except RuntimeError as e:
            row[name + "_error"] = str(e).splitlines()[0][:160]
    base = row.get("sdpa_cudnn")
    line = f"{label} {'causal' if causal else 'full  '}:"
    for name in providers:
        tf = row.get(name)
        if tf:
            line += f"  {name} {tf:.0f}" + (f" ({tf / base:.2f}x)" if base and not name.startswith("sdpa") else "")
    print(line, flush=True)


def cases(a):
    """(head dim, seqlen, causal, batch, heads) of the run: DESIGN §6's shapes, or the ViT-B/16 one."""
    for d in a.head_dims:
        for s in a.seqlens:
            for causal in a.causal:
                b, h = case_shape(d, s)
                if a.vit:
                    b, s, h = 128, 197, 12
                yield d, s, causal, b, h


def run_backward(a):
    import flash_sigmoid
    rows = []
    for d, s, causal, b, h in cases(a):
        gen = torch.Generator(device="cuda").manual_seed(s * 1000 + d + 1)
        q, k, v, dout = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)
                         for _ in range(4))
        bias = -math.log(s)
        flops = attention_flops(b, h, s, s, d, causal, direction="bwd")
        row = dict(head_dim=d, seqlen=s, batch=b, heads=h, causal=causal)
        providers = {}
        for variant in a.variants:
            def fn(variant=variant):
                return flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=bias, causal=causal,
                                              kernel_arch=a.kernel_arch, kernel_variant=variant,
                                              deterministic=a.deterministic)
            providers[variant or "default"] = fn
        if a.deterministic:
            providers["sm80_det"] = lambda: flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=bias,
                                                                   causal=causal, kernel_arch=80,
                                                                   deterministic=True)
        ref = flash_sigmoid.backward(dout, q, k, v, sigmoid_bias=bias, causal=causal, kernel_arch=90)
        for name in list(providers):
            try:
                got = providers[name]()
            except RuntimeError as e:
                row[name + "_error"] = str(e).splitlines()[0][:160]
                del providers[name]
                continue
            rel = max(((g.double() - r.double()).norm() / r.double().norm()).item() for g, r in zip(got, ref))
            row[name + "_rel_err"] = rel
            if not rel < 1e-2:
                row[name + "_error"] = f"relative error {rel:.2e} against the default: not timed"
                del providers[name]
        for backend, key in ((SDPBackend.CUDNN_ATTENTION, "sdpa_cudnn"), (SDPBackend.FLASH_ATTENTION, "sdpa_flash")):
            inputs = tuple(t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
            try:
                with sdpa_kernel(backend):
                    out = F.scaled_dot_product_attention(*inputs, is_causal=causal)
            except RuntimeError as e:
                row[key + "_error"] = str(e).splitlines()[0][:160]
                continue
            g = dout.transpose(1, 2)
            providers[key] = lambda out=out, inputs=inputs, g=g: torch.autograd.grad(out, inputs, g,
                                                                                     retain_graph=True)
        time_and_print(providers, row, flops, f"bwd d{d} s{s} b{b} h{h}", causal)
        rows.append(row)
        if a.vit:
            return rows
    return rows


def run(a):
    import flash_sigmoid
    rows = []
    for d, s, causal, b, h in cases(a):
        gen = torch.Generator(device="cuda").manual_seed(s * 1000 + d)
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for _ in range(3))
        bias = -math.log(s)
        flops = attention_flops(b, h, s, s, d, causal, direction="fwd")
        row = dict(head_dim=d, seqlen=s, batch=b, heads=h, causal=causal)
        providers = {}
        for variant in a.variants:
            for sf in a.score_functions:
                name = f"{variant or 'default'}/{sf}"

                def fn(variant=variant, sf=sf):
                    return flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, causal=causal, score_function=sf,
                                                 kernel_arch=a.kernel_arch, kernel_variant=variant)
                providers[name] = fn
        providers["sdpa_cudnn"] = lambda: sdpa(SDPBackend.CUDNN_ATTENTION, q, k, v, causal)
        providers["sdpa_flash"] = lambda: sdpa(SDPBackend.FLASH_ATTENTION, q, k, v, causal)
        # Correctness first: the last 128 query rows of batch 0 against fp64.
        qs = q[:1, -128:]
        ref = attention_reference(qs, k[:1], v[:1], sigmoid_bias=bias, causal=causal)
        for name in list(providers):
            if name.startswith("sdpa"):
                continue
            variant, sf = name.split("/")
            try:
                out = flash_sigmoid.forward(qs, k[:1], v[:1], sigmoid_bias=bias, causal=causal,
                                            score_function=sf, kernel_arch=a.kernel_arch,
                                            kernel_variant="" if variant == "default" else variant)
            except RuntimeError as e:
                row[name + "_error"] = str(e).splitlines()[0][:160]
                del providers[name]
                continue
            rel = ((out.double() - ref).norm() / ref.norm()).item()
            row[name + "_rel_err"] = rel
            if not rel < (0.05 if sf == "tanh" else 5e-3):
                row[name + "_error"] = f"relative error {rel:.2e}: not timed"
                del providers[name]
        time_and_print(providers, row, flops, f"d{d} s{s} b{b} h{h}", causal)
        rows.append(row)
        if a.vit:
            return rows
    return rows


def markdown(rows, names):
    head = "| D | S | causal | " + " | ".join(names) + " |\n|" + "---|" * (3 + len(names)) + "\n"
    body = ""
    for r in rows:
        base = r.get("sdpa_cudnn")
        cells = []
        for n in names:
            tf = r.get(n)
            if tf is None:
                cells.append("—")
            elif n.startswith("sdpa") or not base:
                cells.append(f"{tf:.0f}")
            else:
                cells.append(f"{tf:.0f} ({tf / base:.2f}×)")
        body += f"| {r['head_dim']} | {r['seqlen']} | {'yes' if r['causal'] else 'no'} | " + " | ".join(cells) + " |\n"
    return head + body


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["", "cp_async", "ws_lockstep", "ws_wide", "ws_deep", "ws_persistent", "ws_relu", "ws_mix4"], help="'' is the default")
    ap.add_argument("--score-functions", nargs="+", default=["exp2"])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--causal", nargs="+", type=lambda x: x == "yes", default=[False, True], help="yes/no")
    ap.add_argument("--kernel-arch", type=int, default=90)
    ap.add_argument("--vit", action="store_true", help="only the ViT-B/16 shape (B 128, S 197, 12 heads of 64)")
    ap.add_argument("--direction", choices=["fwd", "bwd"], default="fwd")
    ap.add_argument("--deterministic", action="store_true", help="bwd: the deterministic mode (and the sm80 one)")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    a = ap.parse_args(argv)
    if a.vit:
        a.head_dims, a.seqlens = [64], [197]
    if a.direction == "bwd":
        rows = run_backward(a)
        names = [v or "default" for v in a.variants] + (["sm80_det"] if a.deterministic else []) + \
            ["sdpa_cudnn", "sdpa_flash"]
    else:
        rows = run(a)
        names = [f"{v or 'default'}/{sf}" for v in a.variants for sf in a.score_functions] + ["sdpa_cudnn", "sdpa_flash"]
    env = environment(unavailable_providers())
    text = f"GPU: {env.get('gpu', '?')}, commit {env['commit']}, bf16, bias −log S, TFLOP/s (×: vs cuDNN)\n\n"
    text += markdown(rows, names)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(environment=env, rows=rows), f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

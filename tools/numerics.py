"""Attention-level accuracy of FlashSigmoid's sigmoid formulations against the floor (DESIGN §5).

floor: exact sigmoid in fp64, P rounded to the operand dtype, O = P V in fp64 rounded to the output
dtype: what any exact implementation must lose. For each Sk, dtype and score function, prints the
relative Frobenius error of the kernel's O against the unrounded fp64 reference, and its ratio to
the floor. bias = -log(Sk), D = 128, q, k, v ~ N(0, 1), 256 query rows x 4 heads.

    python tools/numerics.py [--seqlens 1024 8192 65536] [--dtypes fp16 bf16] [--variants ws_relu] [--markdown out.md]
"""
import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import flash_sigmoid  # noqa: E402


def measure(sk, dtype, score_functions, variants=("",), d=128, sq=256, heads=4, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed + sk)
    q = torch.randn(1, sq, heads, d, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(1, sk, heads, d, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(1, sk, heads, d, device="cuda", dtype=dtype, generator=g)
    bias = -math.log(sk)
    z = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / math.sqrt(d) + bias
    p = torch.sigmoid(z)
    vd = v.double()
    ref = torch.einsum("bhij,bjhd->bihd", p, vd)
    floor_o = torch.einsum("bhij,bjhd->bihd", p.to(dtype).double(), vd).to(dtype).double()
    rel = lambda o: ((o - ref).norm() / ref.norm()).item()  # noqa: E731
    row = {"floor": rel(floor_o)}
    for sf in score_functions:
        row[sf] = rel(flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, score_function=sf).double())
    for variant in variants:
        if variant:  # the default exp2 form of a named forward variant (kernel_arch 90)
            row[variant] = rel(flash_sigmoid.forward(q, k, v, sigmoid_bias=bias, kernel_arch=90,
                                                     kernel_variant=variant).double())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seqlens", type=int, nargs="+", default=[1024, 8192, 65536])
    ap.add_argument("--dtypes", nargs="+", choices=["fp16", "bf16"], default=["fp16", "bf16"])
    ap.add_argument("--variants", nargs="*", default=[],
                    help="named sm90 forward variants whose exp2 form is measured too (e.g. ws_relu)")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    dtypes = [{"fp16": torch.float16, "bf16": torch.bfloat16}[name] for name in a.dtypes]
    sfs = ["exp2", "tanh"]
    lines = ["| dtype | Sk | floor | sigmoid_via_exp2 (default) | × floor | sigmoid_via_tanh | × floor |"
             + "".join(f" {v} | × floor |" for v in a.variants),
             "|---|---|---|---|---|---|---|" + "---|---|" * len(a.variants)]
    worst = 0.0
    for dtype in dtypes:
        for sk in a.seqlens:
            r = measure(sk, dtype, sfs, a.variants)
            worst = max([worst, r["exp2"] / r["floor"]] + [r[v] / r["floor"] for v in a.variants])
            lines.append(f"| {str(dtype)[6:]} | {sk} | {r['floor']:.2e} | {r['exp2']:.2e} | {r['exp2'] / r['floor']:.3f} | "
                         f"{r['tanh']:.2e} | {r['tanh'] / r['floor']:.2f} |"
                         + "".join(f" {r[v]:.2e} | {r[v] / r['floor']:.3f} |" for v in a.variants))
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    print(f"worst exp2 ratio to the floor (default and named variants): {worst:.3f} (requirement: <= 1.25)")
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table + "\n")
    sys.exit(0 if worst <= 1.25 else 1)


if __name__ == "__main__":
    main()

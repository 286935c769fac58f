"""One attention call per process, for Nsight Compute: FlashSigmoid (forward or backward, either
sigmoid) or an SDPA baseline (FLASH_ATTENTION, CUDNN_ATTENTION), at the benchmark's shapes (batch·seqlen = 16k,
hidden 2048, bf16, bias = -log S). Runs the call twice (warm-up, then the profiled one), so profile
with `--launch-skip` set to the kernel count of one call (tools/profile_ncu.sh does).

    python tools/profile_one.py --impl fs --direction fwd --head-dim 64 --seqlen 4096
"""
import argparse
import math
import sys

import torch

sys.path.insert(0, "python")
import flash_sigmoid  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["fs", "fs-tanh", "sdpa-flash", "sdpa-cudnn"], default="fs")
    ap.add_argument("--variant", default="", help="FlashSigmoid kernel_variant (default: the default mainloop)")
    ap.add_argument("--direction", choices=["fwd", "bwd"], default="fwd")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--causal", action="store_true")
    args = ap.parse_args()
    d, s = args.head_dim, args.seqlen
    b, h = max(1, 16384 // s), 2048 // d
    torch.manual_seed(0)
    q, k, v, dout = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    bias = -math.log(s)
    if args.impl.startswith("sdpa"):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = SDPBackend.FLASH_ATTENTION if args.impl == "sdpa-flash" else SDPBackend.CUDNN_ATTENTION
        qt, kt, vt = (t.transpose(1, 2).requires_grad_() for t in (q, k, v))

        def call():
            with sdpa_kernel(backend):
                out = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal)
            if args.direction == "bwd":
                out.backward(dout.transpose(1, 2))
    else:
        score = "tanh" if args.impl == "fs-tanh" else "exp2"
        kw = dict(sigmoid_bias=bias, causal=args.causal, score_function=score, kernel_variant=args.variant)

        def call():
            if args.direction == "fwd":
                flash_sigmoid.forward(q, k, v, **kw)
            else:
                flash_sigmoid.backward(dout, q, k, v, **kw)
    for _ in range(2):
        call()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()

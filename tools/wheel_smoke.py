"""A check through an installed flash_sigmoid wheel (tools/wheel_check.sh runs it in a fresh virtual
environment): the package imports from that environment, not from a source tree; its op library
loads; the forward and backward on CPU tensors agree with an fp64 eager reference; the C++ library's
build info lists what was built.
    python wheel_smoke.py [PREFIX]   # PREFIX: where the package must have been imported from
"""
import math
import sys

import torch

import flash_sigmoid

prefix = sys.argv[1] if len(sys.argv) > 1 else sys.prefix
assert flash_sigmoid.__file__.startswith(prefix), f"flash_sigmoid imported from {flash_sigmoid.__file__}, not {prefix}"
from flash_sigmoid import _library  # noqa: E402

assert str(_library.library_path).startswith(prefix), _library.library_path
info = flash_sigmoid.build_info()
print(f"flash_sigmoid from {flash_sigmoid.__file__}, op library {_library.library_path}")
print("build info: " + " | ".join(line for line in info.splitlines() if not line.startswith("sm")))


def reference(q, k, v, bias, causal):
    """sigmoid(q kᵀ / sqrt(D) + bias) v in fp64, causal bottom-right aligned."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    p = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias)
    if causal:
        sq, sk = q.shape[-2], k.shape[-2]
        i = torch.arange(sq)[:, None]
        j = torch.arange(sk)[None, :]
        p = p.masked_fill(j > i + sk - sq, 0.0)
    return (p @ v).transpose(1, 2)


torch.manual_seed(0)
b, sq, sk, h, d = 2, 37, 53, 4, 64
bias = -math.log(sk)
for causal in (False, True):
    q = torch.randn(b, sq, h, d, requires_grad=True)
    k, v = (torch.randn(b, sk, h, d, requires_grad=True) for _ in range(2))
    out = flash_sigmoid.flash_attn_func(q, k, v, causal=causal, sigmoid_bias=bias)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(q64, k64, v64, bias, causal)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < 1e-5, f"forward (causal={causal}): relative error {err:.2e}"
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    for name, got, want in (("dq", q.grad, q64.grad), ("dk", k.grad, k64.grad), ("dv", v.grad, v64.grad)):
        gerr = ((got.double() - want).norm() / want.norm()).item()
        assert gerr < 1e-5, f"{name} (causal={causal}): relative error {gerr:.2e}"
    print(f"fp32 B={b} Sq={sq} Sk={sk} H={h} D={d} causal={causal}: forward error {err:.1e}, gradients agree")
print("wheel check OK")

"""Problem cases shared by the GPU kernel tests: masks, head layouts, ALiBi slopes, biases and fresh
random inputs (never zeros), so the forward and backward grids draw from one definition."""
import math

import torch

MASKS = [("none", False, (-1, -1)), ("causal", True, (-1, -1)), ("window", False, (37, 11)),
         ("window_left", False, (64, -1)), ("window_right", False, (-1, 5)), ("causal_window", True, (100, 0))]
HEADS = [("mha", 4, 4), ("gqa", 6, 2), ("mqa", 3, 1)]
ALIBI = ["none", "heads", "batch_heads"]
BIASES = ["zero", "minus_log_n", "uniform"]


def make_inputs(b, sq, sk, hq, hkv, d, dtype, seed, with_dout=False):
    """q, k, v (and dout, drawn last) ~ N(0, 1) on the GPU, from a generator seeded with `seed`."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(b, sq, hq, d, device="cuda", dtype=dtype, generator=g)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=dtype, generator=g)
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=dtype, generator=g)
    if not with_dout:
        return q, k, v
    return q, k, v, torch.randn(b, sq, hq, d, device="cuda", dtype=dtype, generator=g)


def bias_value(kind, sk, seed):
    if kind == "zero":
        return 0.0
    if kind == "minus_log_n":
        return -math.log(max(sk, 1))
    return float(torch.empty(1).uniform_(-10, 2, generator=torch.Generator().manual_seed(seed)))


def slopes_for(kind, b, hq):
    if kind == "none":
        return None
    base = torch.tensor([2 ** (-8 * (h + 1) / hq) for h in range(hq)], device="cuda", dtype=torch.float32)
    return base if kind == "heads" else base[None, :] * torch.linspace(0.5, 1.5, b, device="cuda")[:, None]

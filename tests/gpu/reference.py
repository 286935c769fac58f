"""Dense sigmoid attention in torch (DESIGN §1), the reference for GPU tests and benchmarks.

`attention_reference(..., dtype=torch.float64)` is the fp64 oracle; with the inputs' own dtype it is
the "torch in the same dtype" baseline of the DESIGN §7 tolerance rule.
"""
import math

import torch


def visible_mask(sq, sk, causal, window_size, device):
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    diag = i + sk - sq  # bottom-right alignment
    keep = torch.ones(sq, sk, dtype=torch.bool, device=device)
    left, right = window_size
    if causal:
        right = 0
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    return keep


def dropout_factor(s_dmask, rescale):
    """Dropout's factor [B, Hq, Sq, Sk] from return_attn_probs' S_dmask: 0 where the entry was
    dropped (negated, -0.0 included), `rescale` where kept."""
    return torch.where(torch.signbit(s_dmask), 0.0, rescale).to(torch.float64)


def attention_reference(q, k, v, scale=None, sigmoid_bias=0.0, causal=False, window_size=(-1, -1),
                        alibi_slopes=None, dtype=torch.float64, dropout=None):
    """dropout: None, or a factor [B, Hq, Sq, Sk] multiplying P (dropout_factor). sigmoid_bias: a
    number or a [Hq] tensor (per query head, differentiable)."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    g = hq // hkv
    qd = q.to(dtype)
    kd = k.to(dtype).repeat_interleave(g, dim=2)
    vd = v.to(dtype).repeat_interleave(g, dim=2)
    if isinstance(sigmoid_bias, torch.Tensor) and sigmoid_bias.dim() == 1:
        sigmoid_bias = sigmoid_bias.to(dtype)[None, :, None, None]
    z = torch.einsum("bihd,bjhd->bhij", qd, kd) * scale + sigmoid_bias
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(dtype)
        slopes = slopes[None, :] if slopes.dim() == 1 else slopes
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        dist = (i + sk - sq - j).abs().to(dtype)
        z = z - slopes[:, :, None, None] * dist
    p = torch.sigmoid(z) * visible_mask(sq, sk, causal, window_size, q.device)
    if dropout is not None:
        p = p * dropout.to(p.device, p.dtype)
    return torch.einsum("bhij,bjhd->bihd", p.to(dtype), vd)

"""A tensor `sigmoid_bias` (0-dim or per query head) with its gradient, and the attention
probabilities that `return_attn_probs=True` returns (issue 20, first step).

Layer: Python package, over the differentiable dense op (ops.attention). Neither needs a kernel
change:

- **Bias tensor by head-dim augmentation.** The kernels add one scalar bias. A per-head bias b_h is
  folded into the product instead: q gets two extra channels (hi_h, lo_h), with hi_h + lo_h = b_h /
  scale split so that the pair carries b_h to about 2^-16 of its size even in bf16, k gets two
  channels of 1 and v two of 0. Then scale * (q~ . k~) = scale * q.k + b_h, the extra output
  channels are 0 and are sliced away, and autograd gives db_h = sum_i (dq~_hi)[i, h] / scale =
  sum over the head's rows and keys of dZ: the reduction happens inside the backward kernel (it is dQ's
  extra column), not in a second pass over P. Cost: head dim D + 2, which the GPU path pads to the
  next multiple of 8 and may move to the next kernel bucket (D 64 -> 72 runs the 96/128 bucket):
  the fused reduction in the kernels (a later step) removes it. A float bias keeps the plain path.
- **Probabilities.** P = sigmoid(scale q k^T + b - alibi), 0 where masked, formed with torch
  operations in fp32 and returned as [B, Hq, Sq, Sk] in q's dtype: O(B Hq Sq Sk) memory, for testing
  on small problems as flash-attn intends. With dropout the entries the call dropped are negated
  (negate_dropped), as in flash-attn's S_dmask; P itself stays undropped and unscaled.
"""
import torch

from . import ops as _ops


def per_head_bias(sigmoid_bias, heads, device):
    """A tensor bias as an fp32 [heads] view (0-dim broadcast), or None for a plain number."""
    if not isinstance(sigmoid_bias, torch.Tensor):
        return None
    if sigmoid_bias.dim() == 0 or (sigmoid_bias.dim() == 1 and sigmoid_bias.shape[0] == 1):
        if not sigmoid_bias.requires_grad:
            return None  # a constant, as before: the plain path
        return sigmoid_bias.reshape(()).float().to(device).expand(heads)
    if sigmoid_bias.dim() != 1 or sigmoid_bias.shape[0] != heads:
        raise ValueError(f"sigmoid_bias: expected a number, a 0-dim tensor or a [{heads}] tensor (one per query head), "
                         f"got shape {tuple(sigmoid_bias.shape)}")
    if not sigmoid_bias.is_floating_point():
        raise TypeError(f"sigmoid_bias: expected a floating-point tensor, got {sigmoid_bias.dtype}")
    if sigmoid_bias.device != device:
        raise ValueError(f"sigmoid_bias: expected device {device} like q, got {sigmoid_bias.device}")
    return sigmoid_bias.float()


def augment(q, k, v, bias_h, scale):
    """q~, k~, v~ with two extra channels that add bias_h [Hq] (fp32, differentiable) to every score."""
    b, sq, hq, _ = q.shape
    return augment_rows(q, k, v, bias_h.view(1, 1, hq).expand(b, sq, hq), scale)


MAX_HEAD_DIM = 254  # the kernels' largest bucket (256) less the two channels


def check_head_dim(head_dim, what):
    if head_dim > MAX_HEAD_DIM:
        raise ValueError(f"sigmoid_bias: {what} rides in two extra head-dim channels, so head_dim may be at most "
                         f"{MAX_HEAD_DIM}, got {head_dim}; pass a number instead")


def augment_rows(q, k, v, bias_rows, scale):
    """As augment, with a bias per query row and head: bias_rows [B, Sq, Hq] fp32 (broadcast views
    are fine) is added to every score of that row. fp16 limits |bias / scale| to 65504."""
    check_head_dim(q.shape[-1], "a tensor or per-sequence bias")
    target = bias_rows / scale
    hi = target.to(q.dtype)
    lo = (target - hi.float()).to(q.dtype)  # the part hi could not hold (its gradient path carries 0)
    extra_q = torch.stack((hi, lo), dim=-1)
    ones = torch.ones(k.shape[:-1] + (2,), dtype=k.dtype, device=k.device)
    zeros = torch.zeros(v.shape[:-1] + (2,), dtype=v.dtype, device=v.device)
    return torch.cat((q, extra_q), dim=-1), torch.cat((k, ones), dim=-1), torch.cat((v, zeros), dim=-1)


def probabilities(q, k, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes):
    """P [B, Hq, Sq, Sk] in q's dtype (fp32 math); masked entries exactly 0. Masks and ALiBi
    bottom-right aligned (key j visible from row i iff i + Sk - Sq - left <= j <= i + Sk - Sq + right)."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    kf = k.float().repeat_interleave(hq // hkv, dim=2)
    z = torch.einsum("bihd,bjhd->bhij", q.float(), kf) * scale
    bias = per_head_bias(sigmoid_bias, hq, q.device) if isinstance(sigmoid_bias, torch.Tensor) else None
    if bias is not None:
        z = z + bias.detach().view(1, hq, 1, 1)
    else:
        z = z + float(sigmoid_bias)
    i = torch.arange(sq, device=q.device).view(sq, 1)
    j = torch.arange(sk, device=q.device).view(1, sk)
    diag = i + sk - sq
    if alibi_slopes is not None:
        slopes = alibi_slopes.float().view(1, hq, 1, 1) if alibi_slopes.dim() == 1 else alibi_slopes.float().view(b, hq, 1, 1)
        z = z - slopes * (diag - j).abs().float()
    visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    right = 0 if causal else window_right
    if right >= 0:
        visible &= j <= diag + right
    if window_left >= 0:
        visible &= j >= diag - window_left
    p = torch.where(visible, torch.sigmoid(z), torch.zeros((), device=q.device))
    return p.to(q.dtype)


def negate_dropped(probs, dropout_seed, dropout_p):
    """probs [B, Hq, Sq, Sk] with the entries that dropout_seed's mask drops negated (flash-attn's
    S_dmask convention), the mask from the op that writes the kernels' mask (ops.dropout_mask)."""
    b, hq, sq, sk = probs.shape
    keep = _ops.dropout_mask(dropout_seed, dropout_p, b, hq, sq, sk).to(probs.device)
    return torch.where(keep, probs, -probs)

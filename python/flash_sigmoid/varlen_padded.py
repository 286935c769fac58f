"""Packed sequences through the dense kernels: the padded path that CUDA tensors took until the
kernels read cu_seqlens themselves (issue 18 step 3, docs/varlen.md). The varlen entry points no
longer call it; it stays as a tested reference of the padded formulation (right alignment, bias
channels), which the CPU tier checks against the per-sequence fp64 reference.

Layer: Python package, over the differentiable dense op (ops.attention) and bias_tensor.py. Torch
operations only, no host read of a device tensor (no sync; CUDA-graph capturable for fixed shapes):

1. each sequence's queries and keys are gathered into a padded dense batch [B, max_seqlen, H, D]
   **right-aligned** (row i of sequence b at position max_seqlen - len_b + i, zeros in front);
2. the dense forward runs over it. Bottom-right alignment of the dense masks then gives every
   sequence its own causal bound, window and ALiBi distances; the zero keys in front contribute
   sigma(z) * 0 = 0 (sigmoid attention is linear in its key set, docs/math.md), and the zero query
   rows in front are computed and dropped;
3. the real rows are gathered back into the packed layout. Autograd flows through both gathers, so
   the backward is the dense backward: padded rows get no gradient.

A per-sequence bias ("auto" = -log(seqlen_k of the sequence), or a [B] tensor) rides in two extra
head-dim channels (bias_tensor.py), so one dense call serves every sequence.

Cost: B * max_seqlen_q * max_seqlen_k scores instead of sum_b len_q * len_k, plus the copies. For
lengths within a small factor of each other that is modest; for one long sequence among many short
ones it is not, which the kernels' own varlen (step 3) removes.
"""
import torch

from . import bias_tensor as _bias
from . import ops as _ops


def _padded_index(cu, max_len, total):
    """(source row [B, max_len], valid [B, max_len], lengths [B]) of the right-aligned padded layout."""
    lengths = (cu[1:] - cu[:-1]).long()
    positions = torch.arange(max_len, device=cu.device)[None, :]
    start = (max_len - lengths)[:, None]
    source = cu[:-1].long()[:, None] + positions - start
    valid = positions >= start
    return source.clamp(0, max(total - 1, 0)), valid, lengths


def _gather_padded(t, source, valid):
    """t [total, H, D] -> [B, max_len, H, D], zeros where not valid."""
    if t.shape[0] == 0:
        return t.new_zeros(source.shape + t.shape[1:])
    padded = t[source]
    return torch.where(valid[:, :, None, None], padded, torch.zeros((), dtype=t.dtype, device=t.device))


def varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, bias, bias_per_batch,
                  bias_auto, causal, window_left, window_right, alibi_slopes, deterministic):
    """The packed result [total_q, Hq, D] on checked arguments (varlen.py checks them)."""
    batch = cu_seqlens_q.shape[0] - 1
    total_q = q.shape[0]
    if total_q == 0 or batch == 0:
        return q * 0  # nothing to compute; keeps the graph connected for autograd
    src_q, valid_q, len_q = _padded_index(cu_seqlens_q, max_seqlen_q, total_q)
    src_k, valid_k, len_k = _padded_index(cu_seqlens_k, max_seqlen_k, k.shape[0])
    qd = _gather_padded(q, src_q, valid_q)
    kd = _gather_padded(k, src_k, valid_k)
    vd = _gather_padded(v, src_k, valid_k)
    d = q.shape[-1]
    if bias_auto or bias_per_batch is not None:
        if bias_auto:
            n = len_k.float()
            per_batch = torch.where(n > 0, -torch.log(n.clamp(min=1)), torch.zeros_like(n))
        else:
            per_batch = bias_per_batch.float()
        rows = per_batch.view(batch, 1, 1).expand(batch, max_seqlen_q, q.shape[1])
        qd, kd, vd = _bias.augment_rows(qd, kd, vd, rows + bias, scale)
        bias = 0.0
    out = _ops.attention(qd, kd, vd, scale, bias, causal, window_left, window_right, alibi_slopes,
                         _ops.SCORE_FUNCTIONS["exp2"], 0, "", deterministic)[..., :d]
    # Packed row r of sequence b sits at padded position max_seqlen_q - len_b + (r - cu_b).
    rows = torch.arange(total_q, device=q.device)
    seq = torch.searchsorted(cu_seqlens_q[1:].long(), rows, right=True)
    pos = max_seqlen_q - len_q[seq] + (rows - cu_seqlens_q[:-1].long()[seq])
    return out[seq, pos]

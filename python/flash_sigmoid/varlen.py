"""flash-attn 2.5.6's varlen entry points (packed sequences) with a trailing `sigmoid_bias`.

Layer: Python package, over flash_attn_interface's dense path. This first step (issue 18) serves
CPU tensors only, by running the dense CPU op once per sequence and concatenating the outputs:
each sequence is its own problem, so causal and window are bottom-right aligned per sequence,
GQA/MQA and ALiBi ([Hq] or [B, Hq]) carry over, and autograd flows through the slices and the
concatenation. It needs the lengths on the host, which is free for CPU tensors. CUDA tensors raise
NotImplementedError: the GPU kernels do not yet read cu_seqlens (docs/varlen.md has the plan,
which keeps the GPU path free of host syncs).

sigmoid_bias: a float (every sequence), "auto" (-log(seqlen_k) of each sequence; a sequence with
no keys has no scores, so its bias is irrelevant), or a [B] tensor (one per sequence).
"""
import math
import numbers

import torch

from . import flash_attn_interface as _dense


def _check_cu_seqlens(name, cu, total, total_name, device):
    """cu_seqlens: int32, 1-D [B+1], on `device`, 0 first, non-decreasing, last == total rows."""
    if not isinstance(cu, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype != torch.int32:
        raise TypeError(f"{name}: expected dtype torch.int32, got {cu.dtype}")
    if cu.device != device:
        raise ValueError(f"{name}: expected device {device} like q, got {cu.device}")
    if cu.dim() != 1 or cu.shape[0] < 2:
        raise ValueError(f"{name}: expected shape [batch + 1] with batch >= 1, got {tuple(cu.shape)}")
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: expected the first entry to be 0, got {values[0]}")
    for b in range(len(values) - 1):
        if values[b + 1] < values[b]:
            raise ValueError(f"{name}: expected non-decreasing entries, got {values[b]} then {values[b + 1]} "
                             f"at index {b}")
    if values[-1] != total:
        raise ValueError(f"{name}: expected the last entry to equal {total_name} ({total}), got {values[-1]}")
    return values


def _check_max(name, max_seqlen, cu_name, lengths):
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(max_seqlen).__name__}")
    longest = max(lengths)
    if max_seqlen < longest:
        raise ValueError(f"{name}: expected at least the longest sequence of {cu_name} ({longest}), "
                         f"got {max_seqlen}")


def _biases(sigmoid_bias, lengths_k, device):
    """One float per sequence."""
    batch = len(lengths_k)
    if isinstance(sigmoid_bias, str):
        if sigmoid_bias != "auto":
            raise ValueError(f"sigmoid_bias: expected a number, \"auto\" or a [batch] tensor, got {sigmoid_bias!r}")
        return [-math.log(n) if n > 0 else 0.0 for n in lengths_k]
    if isinstance(sigmoid_bias, torch.Tensor) and sigmoid_bias.dim() == 1:
        if sigmoid_bias.shape[0] != batch:
            raise ValueError(f"sigmoid_bias: expected shape ({batch},) (one per sequence), "
                             f"got {tuple(sigmoid_bias.shape)}")
        values = sigmoid_bias.tolist()
        return [_dense._ops.as_float(f"sigmoid_bias[{b}]", x) for b, x in enumerate(values)]
    bias = _dense._ops.as_float("sigmoid_bias", sigmoid_bias)
    return [bias] * batch


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
            causal, window_size, alibi_slopes, deterministic, return_attn_probs, sigmoid_bias, names):
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name}: expected 3 dims [total_tokens, heads, head_dim], got shape {tuple(t.shape)}")
    if q.is_cuda:
        raise NotImplementedError("flash_attn_varlen_func: CUDA tensors are not supported yet (the GPU kernels "
                                  "do not read cu_seqlens; see docs/varlen.md); CPU tensors are")
    off_q = _check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.shape[0], f"{names[0]}.shape[0]", q.device)
    off_k = _check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, k.shape[0], f"{names[1]}.shape[0]", q.device)
    if len(off_k) != len(off_q):
        raise ValueError(f"cu_seqlens_k: expected shape ({len(off_q)},) like cu_seqlens_q, "
                         f"got {tuple(cu_seqlens_k.shape)}")
    len_q = [off_q[b + 1] - off_q[b] for b in range(len(off_q) - 1)]
    len_k = [off_k[b + 1] - off_k[b] for b in range(len(off_k) - 1)]
    _check_max("max_seqlen_q", max_seqlen_q, "cu_seqlens_q", len_q)
    _check_max("max_seqlen_k", max_seqlen_k, "cu_seqlens_k", len_k)
    if v.shape != k.shape:
        raise ValueError(f"{names[2]}: expected the shape of {names[1]} {tuple(k.shape)}, got {tuple(v.shape)}")
    batch = len(len_q)
    if alibi_slopes is not None and isinstance(alibi_slopes, torch.Tensor) and alibi_slopes.dim() == 2 \
            and alibi_slopes.shape[0] != batch:
        raise ValueError(f"alibi_slopes: expected shape ({q.shape[1]},) or ({batch}, {q.shape[1]}), "
                         f"got {tuple(alibi_slopes.shape)}")
    biases = _biases(sigmoid_bias, len_k, q.device)
    outs = []
    for b in range(batch):
        qb = q[off_q[b]:off_q[b + 1]].unsqueeze(0)
        kb = k[off_k[b]:off_k[b + 1]].unsqueeze(0)
        vb = v[off_k[b]:off_k[b + 1]].unsqueeze(0)
        slopes = alibi_slopes
        if isinstance(alibi_slopes, torch.Tensor) and alibi_slopes.dim() == 2:
            slopes = alibi_slopes[b:b + 1]
        if len_q[b] == 0:
            outs.append(q[off_q[b]:off_q[b + 1]])
            continue
        if len_k[b] == 0:
            # No keys: every row is fully masked, O = 0 (and no gradient reaches k or v).
            outs.append(q[off_q[b]:off_q[b + 1]] * 0)
            continue
        ob = _dense._attention(qb, kb, vb, dropout_p, softmax_scale, causal, window_size, slopes, deterministic,
                               return_attn_probs, biases[b], names)
        outs.append(ob[0])
    return torch.cat(outs, dim=0) if outs else q.new_zeros(q.shape)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """Sigmoid attention over packed sequences: q (total_q, nheads, headdim), k, v
    (total_k, nheads_k, headdim); sequence b is rows cu_seqlens_q[b]:cu_seqlens_q[b+1] of q and
    cu_seqlens_k[b]:cu_seqlens_k[b+1] of k and v (cu_seqlens_* int32 [batch + 1]). Masks are
    bottom-right aligned per sequence; a sequence with no keys gives O = 0. sigmoid_bias: float,
    "auto" (-log(seqlen_k) per sequence) or a (batch,) tensor. CPU tensors only for now.
    Returns out (total_q, nheads, headdim)."""
    return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                   causal, window_size, alibi_slopes, deterministic, return_attn_probs, sigmoid_bias,
                   ("q", "k", "v"))


def _unpack(name, packed, parts):
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(packed).__name__}")
    if packed.dim() != 4 or packed.shape[1] != parts:
        layout = "[total, 3, heads, head_dim]" if parts == 3 else "[total_k, 2, heads_kv, head_dim]"
        raise ValueError(f"{name}: expected shape {layout}, got {tuple(packed.shape)}")
    return packed.unbind(1)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                    softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                                    deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """flash_attn_varlen_func with kv (total_k, 2, nheads_k, headdim)."""
    k, v = _unpack("kv", kv, 2)
    return _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                   causal, window_size, alibi_slopes, deterministic, return_attn_probs, sigmoid_bias,
                   ("q", "kv[:, 0]", "kv[:, 1]"))


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None, causal=False,
                                     window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                     return_attn_probs=False, sigmoid_bias=0.0):
    """flash_attn_varlen_func with qkv (total, 3, nheads, headdim) and one cu_seqlens for q and k."""
    q, k, v = _unpack("qkv", qkv, 3)
    return _varlen(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                   window_size, alibi_slopes, deterministic, return_attn_probs, sigmoid_bias,
                   ("qkv[:, 0]", "qkv[:, 1]", "qkv[:, 2]"))

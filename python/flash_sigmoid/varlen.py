"""flash-attn 2.5.6's varlen entry points (packed sequences) with a trailing `sigmoid_bias`.

Layer: Python package, over the flash_sigmoid::varlen_fwd/varlen_bwd ops (src/torch/ops.cpp). One op
call serves the whole packed batch (one graph node under torch.compile); the C++ CPU
implementation loops over the sequences, and the GPU kernels (both families, forward and backward)
read each sequence's offsets and lengths on the device (docs/varlen.md): each sequence is its own problem, so
causal and window are bottom-right aligned per sequence, ALiBi ([Hq] or [B, Hq]) uses the
sequence's lengths, GQA/MQA carries over. Differentiable in q, k, v (the varlen_bwd op).

Checks here read only metadata (types, dtypes, devices, shapes), which torch.compile traces. In
eager mode the offsets' values are checked here too (a CPU tensor's values are on the host: no
sync), raising ValueError naming the argument; under torch.compile that check is left to the op,
which reads the host offsets and raises RuntimeError with the same wording. On CUDA tensors the
offsets' values are not checked (a check would synchronize; the kernels size their grids by
max_seqlen_*, so a call is CUDA-graph capturable), as flash-attn does not check them.

sigmoid_bias: a float (every sequence), "auto" (-log(seqlen_k) of each sequence, computed by the
op from the offsets; a sequence with no keys has no scores, so its bias is irrelevant), or a [B]
tensor (one per sequence, a constant). Window bounds >= max_seqlen_k are unbounded, as in
flash-attn's mha_varlen_fwd.

dropout_p as in flash_attn_func (docs/dropout.md): one seed per call from torch's generator; sequence
b is dropped exactly as batch entry b of a dense call with its lengths and the same seed tensor
(positions within the sequence, the sequence's index as batch), so its mask is
ops.dropout_mask(seed, p, 1, heads_q, len_q[b], len_k[b], batch_index=b).
"""
import numbers

import torch

from . import flash_attn_interface as _dense
from . import ops as _ops
from ._library import ops as _lib


def _check_return_attn_probs(return_attn_probs):
    if return_attn_probs:
        raise NotImplementedError(
            "return_attn_probs: the varlen functions do not return attention probabilities yet (flash_attn_func "
            "does: call it per sequence on small problems); pass return_attn_probs=False")


def _check_cu_meta(name, cu, device):
    """cu_seqlens: an int32 1-D [B+1] tensor on `device` (metadata only)."""
    _ops.check_int32(name, cu, device)
    if cu.dim() != 1 or cu.shape[0] < 2:
        raise ValueError(f"{name}: expected shape [batch + 1] with batch >= 1, got {tuple(cu.shape)}")


def _check_cu_values(name, cu, total, total_name):
    """0 first, non-decreasing, last == total rows; returns the sequence lengths."""
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}: expected the first entry to be 0, got {values[0]}")
    for b in range(len(values) - 1):
        if values[b + 1] < values[b]:
            raise ValueError(f"{name}: expected non-decreasing entries, got {values[b]} then {values[b + 1]} "
                             f"at index {b}")
    if values[-1] != total:
        raise ValueError(f"{name}: expected the last entry to equal {total_name} ({total}), got {values[-1]}")
    return [values[b + 1] - values[b] for b in range(len(values) - 1)]


def _check_max_type(name, max_seqlen):
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{name}: expected an int, got {type(max_seqlen).__name__}")
    if max_seqlen < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {max_seqlen}")


def _check_max(name, max_seqlen, cu_name, lengths):
    longest = max(lengths)
    if max_seqlen < longest:
        raise ValueError(f"{name}: expected at least the longest sequence of {cu_name} ({longest}), "
                         f"got {max_seqlen}")


def _check_packed(q, k, v, names):
    """dtypes, devices and shapes of q [total_q, Hq, D], k and v [total_k, Hkv, D]."""
    for name, t in zip(names[1:], (k, v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} like {names[0]}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like {names[0]}, got {t.device}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"{names[0]}: expected dtype float16, bfloat16 or float32 on cpu, got {q.dtype}")
    if v.shape != k.shape:
        raise ValueError(f"{names[2]}: expected the shape of {names[1]} {tuple(k.shape)}, got {tuple(v.shape)}")
    hkv, d = k.shape[1], k.shape[2]
    if q.shape[2] != d:
        raise ValueError(f"{names[1]}: expected head_dim {q.shape[2]} like {names[0]}, got shape {tuple(k.shape)}")
    if hkv < 1 or q.shape[1] % hkv != 0:
        raise ValueError(f"{names[1]}: expected heads ({hkv}) to divide the query heads ({q.shape[1]})")
    if not 1 <= d <= 256:
        raise ValueError(f"{names[0]}: expected head_dim 1..256, got {d}")


def _bias_args(sigmoid_bias, batch, device, check_values):
    """(scalar, [B] fp32 tensor or None, auto) for the op."""
    if isinstance(sigmoid_bias, str):
        if sigmoid_bias != "auto":
            raise ValueError(f"sigmoid_bias: expected a number, \"auto\" or a [batch] tensor, got {sigmoid_bias!r}")
        return 0.0, None, True
    if isinstance(sigmoid_bias, torch.Tensor) and sigmoid_bias.dim() == 1:
        if sigmoid_bias.shape[0] != batch:
            raise ValueError(f"sigmoid_bias: expected shape ({batch},) (one per sequence), "
                             f"got {tuple(sigmoid_bias.shape)}")
        if sigmoid_bias.device != device:
            raise ValueError(f"sigmoid_bias: expected device {device} like q, got {sigmoid_bias.device}")
        biases = sigmoid_bias.detach().to(torch.float32)
        if check_values:
            for b, x in enumerate(biases.tolist()):
                _ops.as_float(f"sigmoid_bias[{b}]", x)
        return 0.0, biases, False
    return _ops.as_float("sigmoid_bias", sigmoid_bias), None, False


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
            causal, window_size, alibi_slopes, deterministic, return_attn_probs, sigmoid_bias, names):
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name}: expected 3 dims [total_tokens, heads, head_dim], got shape {tuple(t.shape)}")
    _ops.check_dropout(dropout_p)
    _check_return_attn_probs(return_attn_probs)
    _check_cu_meta("cu_seqlens_q", cu_seqlens_q, q.device)
    _check_cu_meta("cu_seqlens_k", cu_seqlens_k, q.device)
    # The offsets' values are checked where they are on the host already: CPU tensors, eagerly (under
    # torch.compile the CPU op checks them). On CUDA a check would sync: they are documented, not checked.
    eager = not torch.compiler.is_compiling() and not q.is_cuda
    if eager:
        # The offsets' values, on the host already (CPU tensors); under torch.compile the op checks them.
        len_q = _check_cu_values("cu_seqlens_q", cu_seqlens_q, q.shape[0], f"{names[0]}.shape[0]")
        len_k = _check_cu_values("cu_seqlens_k", cu_seqlens_k, k.shape[0], f"{names[1]}.shape[0]")
    if cu_seqlens_k.shape != cu_seqlens_q.shape:
        raise ValueError(f"cu_seqlens_k: expected shape ({cu_seqlens_q.shape[0]},) like cu_seqlens_q, "
                         f"got {tuple(cu_seqlens_k.shape)}")
    _check_max_type("max_seqlen_q", max_seqlen_q)
    _check_max_type("max_seqlen_k", max_seqlen_k)
    _check_packed(q, k, v, names)
    batch = cu_seqlens_q.shape[0] - 1
    _ops.check_alibi(alibi_slopes, q, batch, q.shape[1])  # packed q: [total, heads, head_dim]
    if eager:
        _check_max("max_seqlen_q", max_seqlen_q, "cu_seqlens_q", len_q)
        _check_max("max_seqlen_k", max_seqlen_k, "cu_seqlens_k", len_k)
    bias, bias_per_batch, bias_auto = _bias_args(sigmoid_bias, batch, q.device, eager)
    left, right = _dense._flash_window(window_size, bool(causal), max_seqlen_k)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else _ops.as_float("softmax_scale", softmax_scale)
    dropout_p, seed = _dense._dropout(dropout_p, q.device)
    # CPU and CUDA tensors alike: the CPU implementation loops over the sequences, the GPU kernels
    # read cu_seqlens on the device (docs/varlen.md).
    return _lib.varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, bias,
                           bias_per_batch, bias_auto, bool(causal), left, right, alibi_slopes,
                           _ops.SCORE_FUNCTIONS["exp2"], 0, "", bool(deterministic), dropout_p, seed)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), alibi_slopes=None,
                           deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """Sigmoid attention over packed sequences: q (total_q, nheads, headdim), k, v
    (total_k, nheads_k, headdim); sequence b is rows cu_seqlens_q[b]:cu_seqlens_q[b+1] of q and
    cu_seqlens_k[b]:cu_seqlens_k[b+1] of k and v (cu_seqlens_* int32 [batch + 1]). Masks are
    bottom-right aligned per sequence; a sequence with no keys gives O = 0. sigmoid_bias: float,
    "auto" (-log(seqlen_k) per sequence) or a (batch,) tensor. Window bounds >= max_seqlen_k are
    unbounded (flash-attn's rule). CPU and CUDA tensors; on CUDA the offsets' values and
    max_seqlen_* are not checked (a check would synchronize), as in flash-attn. dropout_p as in
    flash_attn_func (each sequence dropped as its own batch index). Returns out (total_q, nheads,
    headdim)."""
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

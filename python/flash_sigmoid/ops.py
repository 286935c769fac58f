"""Sigmoid attention on torch tensors: argument checks, head-dim padding, and the calls to the ops.

Layer: Python package. Checks torch-level arguments, raising ValueError/TypeError that name the
argument (before anything is launched, and traceable by torch.compile); pads head dims that are
not a multiple of 8 for the GPU kernels and slices the result back (padding and slicing are
differentiable torch ops, so autograd and torch.compile see through them). Strides need no care
here: the C++ ops read any strides with a contiguous head dim and copy what the kernels cannot
read. Knows nothing of kernel internals.

`forward`/`backward` speak this library's conventions (docs/math.md): causal is the window (-1, 0)
and may not be combined with another right bound. flash_attn_interface.py maps flash-attn's onto
them.

Attention dropout (docs/dropout.md) is a probability `dropout_p` and a seed tensor: int64 [2] on q's
device, whose bits are the uint64 pair {seed, offset} of the Philox mask. `new_dropout_seed` draws
one from torch's default generator of that device (graph-safe: inside a CUDA graph capture the draw
is a captured kernel that advances the generator's offset on every replay); forward and backward
given the same tensor drop the same entries. `dropout_mask` returns the mask itself.
"""
import math
import operator
import numbers

import torch

from ._library import ops

SCORE_FUNCTIONS = {"exp2": 0, "tanh": 1}
_CPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_GPU_DTYPES = (torch.float16, torch.bfloat16)


def check_qkv(q, k, v, names=("q", "k", "v")):
    """Ranks, dtypes, devices and shapes of q [B, Sq, Hq, D], k and v [B, Sk, Hkv, D]."""
    for name, t in zip(names, (q, k, v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for name, t in zip(names, (q, k, v)):
        if t.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [batch, seqlen, heads, head_dim], got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} like {names[0]}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like {names[0]}, got {t.device}")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{names[0]}: expected a CPU or CUDA tensor, got device {q.device}")
    allowed = _GPU_DTYPES if q.is_cuda else _CPU_DTYPES
    if q.dtype not in allowed:
        text = "float16 or bfloat16" if q.is_cuda else "float16, bfloat16 or float32"
        raise TypeError(f"{names[0]}: expected dtype {text} on {q.device.type}, got {q.dtype}")
    b, _, hkv, d = k.shape
    if q.shape[0] != b or q.shape[3] != d:
        raise ValueError(f"{names[1]}: expected batch {q.shape[0]} and head_dim {q.shape[3]} like {names[0]}, "
                         f"got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{names[2]}: expected the shape of {names[1]} {tuple(k.shape)}, got {tuple(v.shape)}")
    if hkv < 1 or q.shape[2] % hkv != 0:
        raise ValueError(f"{names[1]}: expected heads ({hkv}) to divide the query heads ({q.shape[2]})")
    if not 1 <= d <= 256:
        raise ValueError(f"{names[0]}: expected head_dim 1..256, got {d}")


def check_int32(name, t, device):
    """An int32 tensor on `device` (index and length tensors: cu_seqlens, cache_seqlens, ...)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device} like q, got {t.device}")


def check_alibi(alibi_slopes, q, batch=None, heads=None):
    """Slopes None, or fp32 [heads] / [batch, heads] on q's device; batch and heads default to the
    dense layout's (q [batch, seqlen, heads, head_dim])."""
    if alibi_slopes is None:
        return
    if not isinstance(alibi_slopes, torch.Tensor):
        raise TypeError(f"alibi_slopes: expected a torch.Tensor or None, got {type(alibi_slopes).__name__}")
    if alibi_slopes.dtype != torch.float32:
        raise TypeError(f"alibi_slopes: expected dtype float32, got {alibi_slopes.dtype}")
    if alibi_slopes.device != q.device:
        raise ValueError(f"alibi_slopes: expected device {q.device} like q, got {alibi_slopes.device}")
    b = q.shape[0] if batch is None else batch
    hq = q.shape[2] if heads is None else heads
    if tuple(alibi_slopes.shape) not in ((hq,), (b, hq)):
        raise ValueError(f"alibi_slopes: expected shape ({hq},) or ({b}, {hq}), got {tuple(alibi_slopes.shape)}")


def as_float(name, value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)  # like Apple's np.float32(sigmoid_bias): a constant, never trained
    if isinstance(value, (numbers.Real, torch.SymFloat, torch.SymInt)) and not isinstance(value, bool):
        value = value * 1.0  # a float, or under torch.compile with dynamic floats a SymFloat
        if value - value == 0:  # finite: inf - inf and nan - nan are nan (traceable, unlike math.isfinite)
            return value
    raise ValueError(f"{name}: expected a finite number, got {value!r}")


def check_dropout(dropout_p):
    """dropout_p as a float in [0, 1): TypeError for a non-number, ValueError outside the range."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(f"dropout_p: expected a float, got {type(dropout_p).__name__} ({dropout_p!r})")
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:  # also rejects nan
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p!r}")
    return p


def new_dropout_seed(device):
    """A fresh {seed, offset} pair for one dropout call: int64 [2] on `device`, drawn from torch's
    default generator of that device (torch.manual_seed reproduces it; a captured CUDA graph draws
    a new pair at every replay, as eager calls do)."""
    return torch.randint(-2 ** 63, 2 ** 63 - 1, (2,), dtype=torch.int64, device=device)


def check_dropout_seed(dropout_p, dropout_seed, device):
    """None without dropout; else an int64 [2] tensor on `device` (required when dropout_p > 0)."""
    if dropout_seed is None:
        if dropout_p > 0:
            raise ValueError(f"dropout_seed: expected an int64 tensor of shape (2,) ({{seed, offset}}) on {device} "
                             f"when dropout_p > 0 (dropout_p = {dropout_p}), got None; new_dropout_seed(device) "
                             "draws one")
        return None
    if not isinstance(dropout_seed, torch.Tensor):
        raise TypeError(f"dropout_seed: expected a torch.Tensor or None, got {type(dropout_seed).__name__}")
    if dropout_seed.dtype != torch.int64 or tuple(dropout_seed.shape) != (2,):
        raise ValueError(f"dropout_seed: expected an int64 tensor of shape (2,), got {dropout_seed.dtype} "
                         f"{tuple(dropout_seed.shape)}")
    if dropout_seed.device != device:
        raise ValueError(f"dropout_seed: expected device {device} like q, got {dropout_seed.device}")
    return dropout_seed


def dropout_rescale(dropout_p):
    """The factor kept entries get: p is rounded to t / 256 (t = round(256 p), at most 255) and kept
    entries are scaled by 256 / (256 - t), the inverse of the true keep rate (docs/dropout.md)."""
    t = min(int(check_dropout(dropout_p) * 256.0 + 0.5), 255)
    return 256.0 / (256 - t)


def dropout_mask(dropout_seed, dropout_p, batch, heads_q, seqlen_q, seqlen_k, batch_index=0):
    """The keep mask a call with this seed tensor and dropout_p applies: bool
    [batch, heads_q, seqlen_q, seqlen_k] on the seed's device, True where kept, for the batch entries
    batch_index .. batch_index + batch - 1. A packed (varlen) sequence s is dropped as batch entry s
    of a dense call with its lengths: dropout_mask(seed, p, 1, heads_q, len_q[s], len_k[s], s).
    The mask depends only on positions (attention masks do not change it). Computed on the CPU (a
    CUDA seed is copied to the host, which synchronizes)."""
    p = check_dropout(dropout_p)
    if not isinstance(dropout_seed, torch.Tensor):
        raise TypeError(f"dropout_seed: expected a torch.Tensor, got {type(dropout_seed).__name__}")
    seed = check_dropout_seed(p, dropout_seed, dropout_seed.device)
    mask = ops.dropout_mask(seed.cpu(), p, int(batch_index), int(batch), int(heads_q), int(seqlen_q), int(seqlen_k))
    return mask.to(seed.device)


def check_window(window_size):
    """(left, right) as two ints >= -1; -1 means unbounded."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size: expected a pair of ints (left, right), got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window_size: expected each bound >= -1 (-1: unbounded), got {(left, right)}")
    return left, right


def _pad_head_dim(t, d_pad):
    d = t.shape[-1]
    return t if d == d_pad else torch.nn.functional.pad(t, (0, d_pad - d))


def padded_head_dim(q):
    """The head dim the kernels see: a multiple of 8 on the GPU, unchanged on the CPU."""
    d = q.shape[-1]
    return (d + 7) // 8 * 8 if q.is_cuda else d


def attention(q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function,
              kernel_arch, kernel_variant, deterministic, dropout_p=0.0, dropout_seed=None, alibi_offset=0):
    """The differentiable fwd op on checked arguments, with GPU head-dim padding."""
    d, d_pad = q.shape[-1], padded_head_dim(q)
    q, k, v = (_pad_head_dim(t, d_pad) for t in (q, k, v))
    out = ops.fwd(q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function,
                  kernel_arch, kernel_variant, deterministic, dropout_p, dropout_seed, alibi_offset)
    return out if d_pad == d else out[..., :d]


def _checked(q, k, v, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function, kernel_arch,
             kernel_variant):
    check_qkv(q, k, v)
    check_alibi(alibi_slopes, q)
    left, right = check_window(window_size)
    if causal and right not in (-1, 0):
        raise ValueError(f"window_size: expected a right bound of -1 or 0 with causal=True, got {(left, right)}")
    if score_function not in SCORE_FUNCTIONS:
        raise ValueError(f"score_function: expected one of {sorted(SCORE_FUNCTIONS)}, got {score_function!r}")
    if kernel_arch not in (0, 80, 90):
        raise ValueError(f"kernel_arch: expected 0 (best available), 80 or 90, got {kernel_arch!r}")
    if not isinstance(kernel_variant, str):
        raise ValueError(f"kernel_variant: expected a str ('' for the default mainloop), got {kernel_variant!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else as_float("scale", scale)
    return (scale, as_float("sigmoid_bias", sigmoid_bias), bool(causal), left, right, alibi_slopes,
            SCORE_FUNCTIONS[score_function], int(kernel_arch), kernel_variant)


def check_alibi_offset(alibi_offset):
    """alibi_offset as an int in (-2^30, 2^30) (anything with __index__: numpy ints, 0-dim integer
    tensors)."""
    if isinstance(alibi_offset, bool):
        raise TypeError(f"alibi_offset: expected an int, got {alibi_offset!r}")
    try:
        value = operator.index(alibi_offset)
    except TypeError:
        raise TypeError(f"alibi_offset: expected an int, got {type(alibi_offset).__name__}") from None
    if not -(1 << 30) < value < (1 << 30):
        raise ValueError(f"alibi_offset: expected |alibi_offset| < 2^30, got {value}")
    return value


def forward(q, k, v, scale=None, sigmoid_bias=0.0, causal=False, window_size=(-1, -1), alibi_slopes=None,
            score_function="exp2", kernel_arch=0, kernel_variant="", out=None, dropout_p=0.0, dropout_seed=None,
            alibi_offset=0):
    """out[b, i, h] = sum_j sigmoid(scale q_i.k_j + bias - alibi) v_j, masks bottom-right aligned.

    Differentiable (the backward is `backward`). `out`, if given, receives the result in place (shape
    and dtype of q; not with autograd, nor with a GPU head dim that is not a multiple of 8).
    `kernel_arch` and `kernel_variant` pick a GPU kernel family and mainloop by name (for A/B
    measurement; docs/python.md); the CPU implementation ignores them. `dropout_p` > 0 drops P's
    entries with the mask of `dropout_seed` (int64 [2] on q's device, e.g. new_dropout_seed; pass
    the same tensor to `backward`) and scales the kept ones by dropout_rescale(dropout_p).
    `alibi_offset` shifts the ALiBi distances to |i + (Sk - Sq) + alibi_offset - j| (the mask keeps
    its alignment): queries and keys that are pieces of a longer sequence, at global positions q0..
    and k0.., take alibi_offset = (q0 - k0) - (Sk - Sq) (flash_sigmoid.parallel does)."""
    params = _checked(q, k, v, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function, kernel_arch,
                      kernel_variant)
    dropout_p = check_dropout(dropout_p)
    dropout_seed = check_dropout_seed(dropout_p, dropout_seed, q.device)
    alibi_offset = check_alibi_offset(alibi_offset)
    if out is None:
        return attention(q, k, v, *params, False, dropout_p, dropout_seed, alibi_offset)
    if not isinstance(out, torch.Tensor) or out.shape != q.shape or out.dtype != q.dtype or out.device != q.device:
        raise ValueError(f"out: expected shape {tuple(q.shape)}, dtype {q.dtype} and device {q.device} like q")
    if padded_head_dim(q) != q.shape[-1]:
        raise ValueError(f"out: not supported with head_dim {q.shape[-1]} on the GPU (padded to "
                         f"{padded_head_dim(q)}); pass out=None")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise ValueError("out: not supported when q, k or v requires grad; pass out=None")
    ops.fwd_out(q, k, v, *params, out, dropout_p, dropout_seed, alibi_offset)
    return out


def backward(dout, q, k, v, scale=None, sigmoid_bias=0.0, causal=False, window_size=(-1, -1), alibi_slopes=None,
             score_function="exp2", kernel_arch=0, kernel_variant="", deterministic=False, dropout_p=0.0,
             dropout_seed=None, alibi_offset=0):
    """(dq, dk, dv) of forward() for the output gradient dout; dk, dv summed over each GQA group.
    With dropout, pass the forward's dropout_p and seed tensor: the backward regenerates its mask."""
    params = _checked(q, k, v, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function, kernel_arch,
                      kernel_variant)
    dropout_p = check_dropout(dropout_p)
    dropout_seed = check_dropout_seed(dropout_p, dropout_seed, q.device)
    alibi_offset = check_alibi_offset(alibi_offset)
    if not isinstance(dout, torch.Tensor) or dout.shape != q.shape or dout.dtype != q.dtype or dout.device != q.device:
        raise ValueError(f"dout: expected shape {tuple(q.shape)}, dtype {q.dtype} and device {q.device} like q")
    d, d_pad = q.shape[-1], padded_head_dim(q)
    dout, q, k, v = (_pad_head_dim(t, d_pad) for t in (dout, q, k, v))
    dq, dk, dv = ops.bwd(dout, q, k, v, *params, bool(deterministic), dropout_p, dropout_seed, alibi_offset)
    if d_pad != d:
        dq, dk, dv = dq[..., :d], dk[..., :d], dv[..., :d]
    return dq, dk, dv

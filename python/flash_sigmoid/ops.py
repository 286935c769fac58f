"""Sigmoid attention on torch tensors through the C API (GPU kernels or the CPU implementation).

Layer: Python package. Checks torch-level arguments (raising ValueError/TypeError that name the
argument), pads head dims that are not a multiple of 8 for the GPU, passes strides through, and
launches on the current CUDA stream. Knows nothing of kernel internals.
"""
import math

import torch

from . import _capi

_DTYPES = {torch.float16: _capi.FLOAT16, torch.bfloat16: _capi.BFLOAT16, torch.float32: _capi.FLOAT32}
_SCORE_FUNCTIONS = {"exp2": _capi.SIGMOID_VIA_EXP2, "tanh": _capi.SIGMOID_VIA_TANH}


def _tensor(t):
    if t is None:
        return _capi.Tensor(None, 0, 0, 0, 1)
    s = t.stride()
    return _capi.Tensor(t.data_ptr() or None, s[0], s[1], s[2], s[3])


def _check_inputs(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [batch, seqlen, heads, head_dim], got shape {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} like q, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like q, got {t.device}")
    if q.dtype not in _DTYPES or (q.is_cuda and q.dtype == torch.float32):
        allowed = "float16 or bfloat16" if q.is_cuda else "float16, bfloat16 or float32"
        raise TypeError(f"q: expected dtype {allowed} on {q.device.type}, got {q.dtype}")
    b, sk, hkv, d = k.shape
    if q.shape[0] != b or q.shape[3] != d:
        raise ValueError(f"k: expected batch {q.shape[0]} and head_dim {q.shape[3]} like q, got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    if q.shape[2] % hkv != 0:
        raise ValueError(f"k: expected heads ({hkv}) to divide the query heads ({q.shape[2]})")
    if d > 256:
        raise ValueError(f"q: expected head_dim <= 256, got {d}")


def _padded(t, d_pad):
    t = t if t.stride(-1) == 1 else t.contiguous()
    if t.shape[-1] == d_pad:
        return t
    return torch.nn.functional.pad(t, (0, d_pad - t.shape[-1]))


def _problem(q, k, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function, kernel_arch):
    b, sq, hq, d = q.shape
    p = _capi.Problem()
    p.dtype = _DTYPES[q.dtype]
    p.batch, p.seqlen_q, p.seqlen_k, p.heads_q, p.heads_kv = b, sq, k.shape[1], hq, k.shape[2]
    p.head_dim = d
    p.scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    p.sigmoid_bias = float(sigmoid_bias)
    p.causal = int(bool(causal))
    p.window_left, p.window_right = int(window_size[0]), int(window_size[1])
    if causal and p.window_right not in (-1, 0):
        raise ValueError(f"window_size: expected a right bound of -1 or 0 with causal=True, got {window_size}")
    if alibi_slopes is not None:
        if alibi_slopes.dtype != torch.float32:
            raise TypeError(f"alibi_slopes: expected dtype float32, got {alibi_slopes.dtype}")
        if alibi_slopes.device != q.device:
            raise ValueError(f"alibi_slopes: expected device {q.device}, got {alibi_slopes.device}")
        if alibi_slopes.shape not in ((hq,), (b, hq)) or alibi_slopes.stride(-1) != 1:
            raise ValueError(f"alibi_slopes: expected shape ({hq},) or ({b}, {hq}) with a contiguous last dim, "
                             f"got {tuple(alibi_slopes.shape)}")
        p.alibi_slopes = alibi_slopes.data_ptr()
        p.alibi_stride_batch = alibi_slopes.stride(0) if alibi_slopes.dim() == 2 else 0
    if score_function not in _SCORE_FUNCTIONS:
        raise ValueError(f"score_function: expected one of {sorted(_SCORE_FUNCTIONS)}, got {score_function!r}")
    p.score_function = _SCORE_FUNCTIONS[score_function]
    p.kernel_arch = int(kernel_arch)
    return p


def forward(q, k, v, scale=None, sigmoid_bias=0.0, causal=False, window_size=(-1, -1), alibi_slopes=None,
            score_function="exp2", kernel_arch=0, out=None):
    """out[b, i, h] = sum_j sigmoid(scale q_i.k_j + bias - alibi) v_j, masks bottom-right aligned.

    `out`, if given, receives the result (shape and dtype of q, contiguous last dim; not with a GPU
    head dim that needs padding to a multiple of 8)."""
    _check_inputs(q, k, v)
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    d_pad = (d + 7) // 8 * 8 if q.is_cuda else d
    qp, kp, vp = (_padded(t, d_pad) for t in (q, k, v))
    if out is None:
        out = torch.empty(qp.shape, dtype=q.dtype, device=q.device)
    elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
        raise ValueError(f"out: expected shape {tuple(q.shape)}, dtype {q.dtype}, device {q.device} and a "
                         f"contiguous last dim, got {tuple(out.shape)}, {out.dtype}, {out.device}")
    elif d_pad != d:
        raise ValueError(f"out: not supported with head_dim {d} on the GPU (padded to {d_pad}); pass out=None")
    args = _capi.ForwardArgs()
    args.problem = _problem(qp, kp, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function,
                            kernel_arch)
    args.q, args.k, args.v, args.out = _tensor(qp), _tensor(kp), _tensor(vp), _tensor(out)
    lib = _capi.lib()
    if q.is_cuda:
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream().cuda_stream
            _capi.check(lib.flash_sigmoid_forward(args, None, 0, stream))
    else:
        _capi.check(lib.flash_sigmoid_cpu_forward(args, 0))
    return out if d_pad == d else out[..., :d]


def backward(dout, q, k, v, scale=None, sigmoid_bias=0.0, causal=False, window_size=(-1, -1), alibi_slopes=None,
             score_function="exp2", kernel_arch=0, deterministic=False):
    """(dq, dk, dv) of forward() for the output gradient dout; dk, dv summed over each GQA group."""
    _check_inputs(q, k, v)
    if dout.shape != q.shape or dout.dtype != q.dtype or dout.device != q.device:
        raise ValueError(f"dout: expected shape {tuple(q.shape)}, dtype {q.dtype} and device {q.device} like q")
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    d_pad = (d + 7) // 8 * 8 if q.is_cuda else d
    qp, kp, vp, dop = (_padded(t, d_pad) for t in (q, k, v, dout))
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (qp, kp, vp))
    args = _capi.BackwardArgs()
    args.problem = _problem(qp, kp, scale, sigmoid_bias, causal, window_size, alibi_slopes, score_function,
                            kernel_arch)
    args.q, args.k, args.v, args.dout = _tensor(qp), _tensor(kp), _tensor(vp), _tensor(dop)
    args.dq, args.dk, args.dv = _tensor(dq), _tensor(dk), _tensor(dv)
    args.deterministic = int(bool(deterministic))
    lib = _capi.lib()
    if q.is_cuda:
        import ctypes
        nbytes = ctypes.c_size_t(0)
        _capi.check(lib.flash_sigmoid_backward_workspace_size(args, ctypes.byref(nbytes)))
        workspace = torch.empty(max(nbytes.value, 1), dtype=torch.uint8, device=q.device)
        with torch.cuda.device(q.device):
            stream = torch.cuda.current_stream().cuda_stream
            _capi.check(lib.flash_sigmoid_backward(args, workspace.data_ptr(), nbytes.value, stream))
    else:
        _capi.check(lib.flash_sigmoid_cpu_backward(args, 0))
    if d_pad != d:
        dq, dk, dv = dq[..., :d], dk[..., :d], dv[..., :d]
    return dq, dk, dv

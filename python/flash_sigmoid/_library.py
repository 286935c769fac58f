"""Loads the op library (libflash_sigmoid_torch.so) and registers what torch needs from Python.

Layer: Python package (low level). The ops themselves are registered in C++ (src/torch/ops.cpp,
torch's stable ABI); this module finds and loads that library, then registers their fake (meta)
functions, so torch.compile and FakeTensor can trace them, and the autograd formulas of `fwd` and
`varlen_fwd` (`kvcache_fwd` is forward-only).
Knows the op schemas; nothing of kernels.
"""
import os
import pathlib

import torch

_LIBRARY = "libflash_sigmoid_torch.so"


def _candidates():
    env = os.environ.get("FLASH_SIGMOID_TORCH_LIBRARY")
    if env:
        yield pathlib.Path(env)
    env = os.environ.get("FLASH_SIGMOID_LIBRARY")  # libflash_sigmoid.so of a build tree: look beside it
    if env:
        yield pathlib.Path(env).parent / _LIBRARY
    here = pathlib.Path(__file__).resolve().parent
    yield here / "lib" / _LIBRARY  # installed by pip
    root = here.parent.parent
    for build in ("build", "build-gpu", "build-test"):
        yield root / build / _LIBRARY


def _load():
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file():
            torch.ops.load_library(str(path))
            return path
    raise ImportError(f"{_LIBRARY} not found: install the package (README, 'Python') or build it with CMake "
                      "(FLASH_SIGMOID_BUILD_TORCH=ON) and set FLASH_SIGMOID_TORCH_LIBRARY. Tried: " + ", ".join(tried))


library_path = _load()
ops = torch.ops.flash_sigmoid


# Fake functions: shapes, dtypes and devices of the outputs, exactly as the C++ ops allocate them
# (contiguous, dtype and device of q). Every fwd/bwd ends in dropout_p, dropout_seed (docs/dropout.md:
# an int64 [2] tensor {seed, offset} on q's device, required when dropout_p > 0); the dense ones
# also in alibi_offset (a shift of the ALiBi distances, for a piece of a longer sequence: parallel.py).
@torch.library.register_fake("flash_sigmoid::fwd")
def _fwd_fake(q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function,
              kernel_arch, kernel_variant, deterministic, dropout_p=0.0, dropout_seed=None, alibi_offset=0):
    return q.new_empty(q.shape)


@torch.library.register_fake("flash_sigmoid::fwd_out")
def _fwd_out_fake(q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function,
                  kernel_arch, kernel_variant, out, dropout_p=0.0, dropout_seed=None, alibi_offset=0):
    return None


@torch.library.register_fake("flash_sigmoid::bwd")
def _bwd_fake(dout, q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function,
              kernel_arch, kernel_variant, deterministic, dropout_p=0.0, dropout_seed=None, alibi_offset=0):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


# The keep mask (CPU, bool [batch, heads_q, seqlen_q, seqlen_k]).
@torch.library.register_fake("flash_sigmoid::dropout_mask")
def _dropout_mask_fake(dropout_seed, dropout_p, batch_index, batch, heads_q, seqlen_q, seqlen_k):
    return dropout_seed.new_empty((batch, heads_q, seqlen_q, seqlen_k), dtype=torch.bool)


def _with_dropout_defaults(inputs, count, defaults=(0.0, None)):
    """The op's inputs with the trailing defaulted arguments (dropout_p, dropout_seed[, ...]) filled in
    where the caller left them out."""
    inputs = tuple(inputs)
    return inputs + tuple(defaults)[len(inputs) - count:]


# Autograd of fwd: save q, k, v (sigmoid attention needs no output and no row statistics, see
# docs/math.md), the dropout seed tensor (the backward regenerates the mask from it) and the
# parameters; the backward is the bwd op. The slopes, the seed and the scalar parameters get no
# gradient; a second derivative is not provided.
def _fwd_setup_context(ctx, inputs, output):
    q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes, score_function, \
        kernel_arch, kernel_variant, deterministic, dropout_p, dropout_seed, alibi_offset = \
        _with_dropout_defaults(inputs, 13, (0.0, None, 0))
    ctx.save_for_backward(q, k, v, alibi_slopes, dropout_seed)
    ctx.params = (scale, sigmoid_bias, causal, window_left, window_right, score_function, kernel_arch, kernel_variant,
                  deterministic, dropout_p, alibi_offset)


def _fwd_backward(ctx, dout):
    q, k, v, alibi_slopes, dropout_seed = ctx.saved_tensors
    scale, sigmoid_bias, causal, window_left, window_right, score_function, kernel_arch, kernel_variant, \
        deterministic, dropout_p, alibi_offset = ctx.params
    dq, dk, dv = ops.bwd(dout, q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes,
                         score_function, kernel_arch, kernel_variant, deterministic, dropout_p, dropout_seed,
                         alibi_offset)
    return (dq, dk, dv) + (None,) * 13


torch.library.register_autograd("flash_sigmoid::fwd", _fwd_backward, setup_context=_fwd_setup_context)


# The varlen ops (packed sequences, docs/varlen.md): outputs shaped like the packed inputs.
@torch.library.register_fake("flash_sigmoid::varlen_fwd")
def _varlen_fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, sigmoid_bias,
                     sigmoid_bias_per_batch, sigmoid_bias_auto, causal, window_left, window_right, alibi_slopes,
                     score_function, kernel_arch, kernel_variant, deterministic, dropout_p=0.0, dropout_seed=None):
    return q.new_empty(q.shape)


# The KV-cache op (CPU tensors, docs/kvcache.md): writes k_cache/v_cache in place, returns out like q.
@torch.library.register_fake("flash_sigmoid::kvcache_fwd")
def _kvcache_fwd_fake(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, block_table,
                      scale, sigmoid_bias, causal, window_left, window_right, rotary_interleaved, rotary_q_steps,
                      alibi_slopes, num_splits=0):
    return q.new_empty(q.shape)


@torch.library.register_fake("flash_sigmoid::varlen_bwd")
def _varlen_bwd_fake(dout, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, sigmoid_bias,
                     sigmoid_bias_per_batch, sigmoid_bias_auto, causal, window_left, window_right, alibi_slopes,
                     score_function, kernel_arch, kernel_variant, deterministic, dropout_p=0.0, dropout_seed=None):
    return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)


# Autograd of varlen_fwd, as of fwd: q, k, v, the offsets, the slopes, the per-sequence biases and
# the dropout seed are saved; only q, k, v get gradients.
def _varlen_fwd_setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, sigmoid_bias, sigmoid_bias_per_batch, \
        sigmoid_bias_auto, causal, window_left, window_right, alibi_slopes, score_function, kernel_arch, \
        kernel_variant, deterministic, dropout_p, dropout_seed = _with_dropout_defaults(inputs, 19)
    ctx.save_for_backward(q, k, v, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_per_batch, alibi_slopes, dropout_seed)
    ctx.params = (max_seqlen_q, max_seqlen_k, scale, sigmoid_bias, sigmoid_bias_auto, causal, window_left,
                  window_right, score_function, kernel_arch, kernel_variant, deterministic, dropout_p)


def _varlen_fwd_backward(ctx, dout):
    q, k, v, cu_seqlens_q, cu_seqlens_k, sigmoid_bias_per_batch, alibi_slopes, dropout_seed = ctx.saved_tensors
    max_seqlen_q, max_seqlen_k, scale, sigmoid_bias, sigmoid_bias_auto, causal, window_left, window_right, \
        score_function, kernel_arch, kernel_variant, deterministic, dropout_p = ctx.params
    dq, dk, dv = ops.varlen_bwd(dout, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                                sigmoid_bias, sigmoid_bias_per_batch, sigmoid_bias_auto, causal, window_left,
                                window_right, alibi_slopes, score_function, kernel_arch, kernel_variant,
                                deterministic, dropout_p, dropout_seed)
    return (dq, dk, dv) + (None,) * 18


torch.library.register_autograd("flash_sigmoid::varlen_fwd", _varlen_fwd_backward,
                                setup_context=_varlen_fwd_setup_context)


def build_info():
    """Version, CUDA runtime, built architectures and every compiled kernel key, one per line."""
    return ops.build_info()

"""The flash-attn-compatible interface: a drop-in for Apple's FlashSigmoid.

Layer: Python package (public interface). The signatures and semantics of Apple's FlashSigmoid,
which are flash-attn 2.5.6's plus a trailing `sigmoid_bias`, positionally or by keyword:

    from flash_sigmoid import flash_attn_func
    out = flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                          window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                          return_attn_probs=False, sigmoid_bias=0.0)

flash-attn conventions kept here (and mapped onto the library's in ops.py):
- causal is bottom-right aligned and forces the window's right bound to 0 (whatever is passed);
- a window bound that is negative, or >= seqlen_k, is unbounded (flash-attn clamps both);
- alibi_slopes [Hq] or [B, Hq], fp32: score -= slope * |i + Sk - Sq - j|;
- head dims that are not a multiple of 8 are padded (GPU) and the result sliced back.

dropout_p (docs/dropout.md): each entry of P is dropped with probability dropout_p (rounded to a
multiple of 1/256) and the kept ones are scaled by the inverse of the keep rate
(ops.dropout_rescale). Every call with dropout_p > 0 draws its {seed, offset} pair from torch's
default generator of q's device (ops.new_dropout_seed: torch.manual_seed reproduces a run, and a
captured CUDA graph draws a new pair at every replay) and saves it for the backward, which
regenerates the same mask. As in flash-attn, dropout is applied whenever dropout_p > 0: pass 0.0 in
evaluation. Both GPU kernel families and the CPU implementation apply it, forward and backward
(docs/dropout.md); on CUDA only the exp2 score function has it (tanh with dropout_p > 0 raises
RuntimeError, Unsupported, naming problem.score_function).

return_attn_probs=True returns flash-attn's triple (out, None, S_dmask): no log-sum-exp exists, so
its slot is None, and S_dmask [B, Hq, Sq, Sk] is P = sigma(z) (undropped and unscaled), formed
separately for testing on small problems (bias_tensor.py); with dropout the entries the call dropped
are negated (flash-attn's convention), so the applied P' is S_dmask.clamp(min=0) *
ops.dropout_rescale(dropout_p). sigmoid_bias may be a number, a 0-dim tensor or a [Hq] tensor (per
head), trainable (bias_tensor.py says how and at what cost). varlen.py and kvcache.py hold the
packed and KV-cache variants.

CPU tensors (fp32, fp16, bf16) run the CPU implementation; CUDA tensors (fp16, bf16) the kernels.
"""
import torch

from . import bias_tensor as _bias
from . import ops as _ops

__all__ = ["flash_attn_func", "flash_attn_kvpacked_func", "flash_attn_qkvpacked_func"]


def _dropout(dropout_p, device):
    """(p, seed tensor or None): a fresh seed from torch's generator whenever p > 0."""
    p = _ops.check_dropout(dropout_p)
    return p, (_ops.new_dropout_seed(device) if p > 0 else None)


def _flash_window(window_size, causal, seqlen_k):
    """flash-attn 2.5.6's window rules (mha_fwd): bounds >= seqlen_k and negative bounds are
    unbounded; causal sets the right bound to 0."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size: expected a pair of ints (left, right), got {window_size!r}") from None
    left = -1 if left < 0 or left >= seqlen_k else left
    right = -1 if right < 0 or right >= seqlen_k else right
    if causal:
        right = 0
    return left, right


def _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
               return_attn_probs, sigmoid_bias, names):
    _ops.check_dropout(dropout_p)
    _ops.check_qkv(q, k, v, names)
    _ops.check_alibi(alibi_slopes, q)
    left, right = _flash_window(window_size, bool(causal), k.shape[1])
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else _ops.as_float("softmax_scale", softmax_scale)
    bias_h = _bias.per_head_bias(sigmoid_bias, q.shape[2], q.device)
    if bias_h is None:
        sigmoid_bias = _ops.as_float("sigmoid_bias", sigmoid_bias)
    # Drawn once every argument is checked, so that a rejected call leaves the generator alone.
    dropout_p, seed = _dropout(dropout_p, q.device)
    if bias_h is not None:  # a per-head or trainable bias: two extra channels carry it (bias_tensor.py)
        qa, ka, va = _bias.augment(q, k, v, bias_h, scale)
        out = _ops.attention(qa, ka, va, scale, 0.0, bool(causal), left, right, alibi_slopes,
                             _ops.SCORE_FUNCTIONS["exp2"], 0, "", bool(deterministic), dropout_p,
                             seed)[..., :q.shape[-1]]
    else:
        out = _ops.attention(q, k, v, scale, sigmoid_bias, bool(causal), left, right, alibi_slopes,
                             _ops.SCORE_FUNCTIONS["exp2"], 0, "", bool(deterministic), dropout_p, seed)
    if return_attn_probs:
        # flash-attn's (out, softmax_lse, S_dmask): no log-sum-exp exists here, so its slot is None.
        with torch.no_grad():
            probs = _bias.probabilities(q, k, scale, sigmoid_bias, bool(causal), left, right, alibi_slopes)
            if seed is not None:
                probs = _bias.negate_dropped(probs, seed, dropout_p)
        return out, None, probs
    return out


def _unpack(name, packed, parts):
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(packed).__name__}")
    if packed.dim() != 5 or packed.shape[2] != parts:
        layout = "[batch, seqlen, 3, heads, head_dim]" if parts == 3 else "[batch, seqlen, 2, heads_kv, head_dim]"
        raise ValueError(f"{name}: expected shape {layout}, got {tuple(packed.shape)}")
    return packed.unbind(2)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    alibi_slopes=None, deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """Sigmoid attention: out = sigmoid(softmax_scale * q @ k^T + sigmoid_bias - alibi) @ v.

    Arguments:
        q: (batch, seqlen_q, nheads, headdim); k, v: (batch, seqlen_k, nheads_k, headdim), with
            nheads % nheads_k == 0 (MQA/GQA: query head h reads kv head h // (nheads // nheads_k)).
            Any strides with a contiguous last dim; fp16/bf16 on CUDA, fp16/bf16/fp32 on CPU.
        dropout_p: attention dropout probability in [0, 1), rounded to a multiple of 1/256; kept
            entries are scaled by the inverse keep rate. Applied whenever > 0 (pass 0.0 in eval);
            each call draws its seed from torch's default generator of q's device, so
            torch.manual_seed reproduces it. CPU and CUDA tensors.
        softmax_scale: the scale of q @ k^T; default 1 / sqrt(headdim).
        causal: bottom-right aligned causal mask (key j visible from query i iff
            j <= i + seqlen_k - seqlen_q); forces window_size[1] = 0.
        window_size: (left, right): key j visible iff
            i + seqlen_k - seqlen_q - left <= j <= i + seqlen_k - seqlen_q + right; -1 unbounded.
        alibi_slopes: (nheads,) or (batch, nheads), fp32: the score gets
            -slope * |i + seqlen_k - seqlen_q - j|.
        deterministic: bitwise-reproducible backward.
        return_attn_probs: True also returns the probabilities: (out, None, S_dmask) with S_dmask
            (batch, nheads, seqlen_q, seqlen_k) = P = sigmoid(z) in q's dtype (undropped and
            unscaled), 0 where masked, and with dropout negated where the call dropped the entry
            (flash-attn's convention; the applied P' is S_dmask.clamp(min=0) * the rescale).
            O(B H Sq Sk) memory: for small problems. There is no log-sum-exp: the middle slot is None.
        sigmoid_bias: b added to every score; the paper recommends -log(seqlen_k). A number, or a
            0-dim or (nheads,) tensor (one per query head), trained when it requires grad (a
            constant 0-dim tensor is a number).
    Returns:
        out: (batch, seqlen_q, nheads, headdim), or (out, None, S_dmask) with return_attn_probs.
    A row whose keys are all masked gives 0. Differentiable in q, k, v.
    """
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                      return_attn_probs, sigmoid_bias, ("q", "k", "v"))


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             alibi_slopes=None, deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """flash_attn_func with k, v stacked: kv is (batch, seqlen_k, 2, nheads_k, headdim); dropout_p and
    return_attn_probs as there."""
    k, v = _unpack("kv", kv, 2)
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                      return_attn_probs, sigmoid_bias, ("q", "kv[:, :, 0]", "kv[:, :, 1]"))


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              alibi_slopes=None, deterministic=False, return_attn_probs=False, sigmoid_bias=0.0):
    """flash_attn_func with q, k, v stacked: qkv is (batch, seqlen, 3, nheads, headdim); dropout_p and
    return_attn_probs as there."""
    q, k, v = _unpack("qkv", qkv, 3)
    return _attention(q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                      return_attn_probs, sigmoid_bias, ("qkv[:, :, 0]", "qkv[:, :, 1]", "qkv[:, :, 2]"))

"""nn.Module layers over the flash-attn-compatible interface.

Layer: Python package (public interface). `SigmoidSelfAttention`: multi-head sigmoid self-attention
with a fused qkv projection, GQA/MQA, causal and sliding-window masks, ALiBi, optional QK-norm and
rotary position embedding. Knows flash_attn_func and torch.nn; nothing of kernels.
"""
import math

import torch
from torch import nn

from .flash_attn_interface import flash_attn_func
from .ops import check_dropout

__all__ = ["SigmoidSelfAttention", "alibi_slopes", "apply_rotary"]


def alibi_slopes(num_heads, device=None):
    """The ALiBi paper's slopes (Press et al.): 2^(-8 i / n), i = 1..n, for n a power of two; else
    those of the largest power of two c < n followed by every other slope of 2c heads. fp32,
    [num_heads], built on `device` with torch ops (no host-to-device copy, so CUDA graphs capture it)."""
    closest = 2 ** math.floor(math.log2(num_heads))
    first = torch.exp2(torch.arange(1, closest + 1, device=device, dtype=torch.float32) * (-8.0 / closest))
    if closest == num_heads:
        return first
    odd = torch.arange(1, 2 * (num_heads - closest), 2, device=device, dtype=torch.float32)
    return torch.cat((first, torch.exp2(odd * (-4.0 / closest))))


def apply_rotary(x, cos, sin):
    """Rotary embedding of x [batch, seqlen, heads, head_dim] (this library's layout), rotating the
    pairs (x[..., c], x[..., c + r/2]) of the first r = 2 * cos.shape[-1] channels by the angle of
    position s: cos, sin are [seqlen, r/2], broadcast over batch and heads. Computed in fp32."""
    half = cos.shape[-1]
    cos = cos[None, :, None, :]  # (1, seqlen, 1, r/2): positions run along dim 1, not the heads
    sin = sin[None, :, None, :]
    xf = x.float()
    x1, x2, rest = xf[..., :half], xf[..., half:2 * half], xf[..., 2 * half:]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)
    return rotated.to(x.dtype)


class SigmoidSelfAttention(nn.Module):
    """Multi-head sigmoid self-attention, out = W_o · sigmoid(scale · q kᵀ + b − alibi) v.

    Args:
        embed_dim: model width E (input and output feature size).
        num_heads: query heads Hq.
        num_kv_heads: key/value heads Hkv (GQA/MQA); must divide num_heads. Default num_heads.
        head_dim: per-head size D; default embed_dim // num_heads.
        causal: bottom-right aligned causal mask.
        window_size: (left, right) sliding window, -1 unbounded (flash-attn semantics).
        alibi: add ALiBi with the paper's slopes (`alibi_slopes(num_heads)`, one per query head).
        qk_norm: False, "rms" (or True) or "layer": normalise q and k over the head dim (learned
            scale) before the rotary embedding and the dot product.
        rotary: apply the rotary position embedding to q and k (along the sequence axis).
        rotary_dim: channels rotated per head (even, default head_dim); rotary_base: its θ base.
        sigmoid_bias: "auto" (−log seqlen, the paper's recommendation) or a float.
        learnable_bias: train one bias per query head (an fp32 parameter `learned_bias` [num_heads],
            its gradient from the backward kernels; flash_attn_func's tensor bias), initialised at
            sigmoid_bias, or at −log(bias_init_seqlen) when sigmoid_bias is "auto". Keep it fp32
            (module.to(dtype) casts parameters too).
        bias_init_seqlen: the sequence length whose −log initialises a learnable "auto" bias.
        softmax_scale: score scale, default 1/sqrt(head_dim).
        dropout: attention dropout probability in [0, 1) (docs/dropout.md), applied in training
            mode only (module.train()); eval mode attends without it.
        bias: whether the projections have biases.

    Input x: [batch, seqlen, embed_dim]; output the same shape. CPU tensors (fp32/fp16/bf16) run
    the CPU implementation, CUDA tensors (fp16/bf16) the kernels.

    Example::

        >>> import torch
        >>> from flash_sigmoid import SigmoidSelfAttention
        >>> layer = SigmoidSelfAttention(256, num_heads=8, num_kv_heads=2, causal=True,
        ...                              qk_norm=True, rotary=True)
        >>> x = torch.randn(2, 100, 256)
        >>> y = layer(x)                      # sigmoid_bias = -log(100)
        >>> y.shape
        torch.Size([2, 100, 256])
        >>> y.sum().backward()
    """

    def __init__(self, embed_dim, num_heads, num_kv_heads=None, head_dim=None, *, causal=False,
                 window_size=(-1, -1), alibi=False, qk_norm=False, rotary=False, rotary_dim=None,
                 rotary_base=10000.0, sigmoid_bias="auto", softmax_scale=None, bias=False, learnable_bias=False,
                 bias_init_seqlen=None, dropout=0.0, device=None, dtype=None):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        head_dim = embed_dim // num_heads if head_dim is None else head_dim
        if num_heads < 1 or num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_kv_heads: expected a divisor of num_heads ({num_heads}), got {num_kv_heads}")
        if head_dim < 1:
            raise ValueError(f"head_dim: expected >= 1, got {head_dim}")
        if not (sigmoid_bias == "auto" or isinstance(sigmoid_bias, (int, float))):
            raise ValueError(f"sigmoid_bias: expected 'auto' or a float, got {sigmoid_bias!r}")
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if rotary and (rotary_dim % 2 != 0 or not 2 <= rotary_dim <= head_dim):
            raise ValueError(f"rotary_dim: expected an even number in 2..{head_dim}, got {rotary_dim}")
        norms = {False: None, None: None, True: nn.RMSNorm, "rms": nn.RMSNorm, "layer": nn.LayerNorm}
        if qk_norm not in norms:
            raise ValueError(f"qk_norm: expected False, True, 'rms' or 'layer', got {qk_norm!r}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim = embed_dim, num_heads, num_kv_heads, head_dim
        self.causal, self.window_size = causal, tuple(window_size)
        self.sigmoid_bias, self.softmax_scale = sigmoid_bias, softmax_scale
        try:
            self.dropout = check_dropout(dropout)
        except (TypeError, ValueError) as e:
            raise type(e)(str(e).replace("dropout_p:", "dropout:", 1)) from None
        self.qkv = nn.Linear(embed_dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=bias, **factory)
        self.out = nn.Linear(num_heads * head_dim, embed_dim, bias=bias, **factory)
        norm = norms[qk_norm]
        self.q_norm = norm(head_dim, eps=1e-6, **factory) if norm else None
        self.k_norm = norm(head_dim, eps=1e-6, **factory) if norm else None
        self.rotary_dim, self.rotary_base = (rotary_dim if rotary else 0), rotary_base
        self.alibi = bool(alibi)
        self.learned_bias = None
        if learnable_bias:
            if sigmoid_bias == "auto":
                if not isinstance(bias_init_seqlen, int) or isinstance(bias_init_seqlen, bool) or bias_init_seqlen < 1:
                    raise ValueError("bias_init_seqlen: expected the sequence length (an int >= 1) whose -log "
                                     f"initialises the learnable 'auto' bias, got {bias_init_seqlen!r}")
                start = -math.log(bias_init_seqlen)
            else:
                start = float(sigmoid_bias)
            self.learned_bias = nn.Parameter(torch.full((num_heads,), start, dtype=torch.float32, device=device))

    # The ALiBi slopes and rotary frequencies are computed on the fly in fp32 rather than kept as
    # buffers: module.to(torch.bfloat16) would otherwise round them, and fp32 is what the kernels
    # and the rotation need.
    def rotary_cos_sin(self, seqlen, device):
        """cos, sin of position s times each frequency: [seqlen, rotary_dim / 2], fp32."""
        channels = torch.arange(0, self.rotary_dim, 2, device=device, dtype=torch.float32)
        inv_freq = torch.pow(self.rotary_base, -channels / self.rotary_dim)
        positions = torch.arange(seqlen, device=device, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)
        return angles.cos(), angles.sin()

    def project_qkv(self, x):
        """q [B, S, Hq, D], k and v [B, S, Hkv, D] as attended: projected, normalised, rotated."""
        b, s, _ = x.shape
        qkv = self.qkv(x).view(b, s, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary_dim:
            cos, sin = self.rotary_cos_sin(s, x.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def resolved_sigmoid_bias(self, seqlen):
        return -math.log(max(seqlen, 1)) if self.sigmoid_bias == "auto" else float(self.sigmoid_bias)

    def forward(self, x):
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x: expected shape [batch, seqlen, {self.embed_dim}], got {tuple(x.shape)}")
        b, s, _ = x.shape
        q, k, v = self.project_qkv(x)
        slopes = alibi_slopes(self.num_heads, x.device) if self.alibi else None
        out = flash_attn_func(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                              softmax_scale=self.softmax_scale, causal=self.causal,
                              window_size=self.window_size, alibi_slopes=slopes,
                              sigmoid_bias=self.resolved_sigmoid_bias(s) if self.learned_bias is None
                              else self.learned_bias)
        return self.out(out.reshape(b, s, self.num_heads * self.head_dim))

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, causal={self.causal}, window_size={self.window_size}, "
                f"alibi={self.alibi}, rotary_dim={self.rotary_dim}, sigmoid_bias={self.sigmoid_bias!r}, "
                f"dropout={self.dropout}")

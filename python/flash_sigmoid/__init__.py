"""FlashSigmoid: fused sigmoid self-attention, out = sigmoid(scale q k^T + bias - alibi) v.

- `flash_attn_func`, `flash_attn_kvpacked_func`, `flash_attn_qkvpacked_func`: a drop-in for Apple's
  FlashSigmoid (flash-attn 2.5.6's interface plus a trailing `sigmoid_bias`).
- `flash_attn_varlen_func` and its packed variants: packed sequences (CPU and CUDA tensors;
  docs/varlen.md).
- `SigmoidSelfAttention`: an nn.Module layer (qkv projection, GQA, masks, ALiBi, QK-norm, rotary).
- `forward`, `backward`: the library's own conventions (docs/math.md), score function and kernel
  family selectable.
- `torch.ops.flash_sigmoid.{fwd, bwd, fwd_out}`: the ops, registered in C++; torch.compile and
  CUDA graphs see them as single nodes.

CUDA tensors run the GPU kernels, CPU tensors the CPU implementation. See docs/python.md.
"""
from ._library import build_info, library_path
from .flash_attn_interface import flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func
from .varlen import (flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                     flash_attn_varlen_qkvpacked_func)
from .kvcache import flash_attn_with_kvcache
from .modules import SigmoidSelfAttention, alibi_slopes, apply_rotary
from .ops import backward, forward

__all__ = ["flash_attn_func", "flash_attn_kvpacked_func", "flash_attn_qkvpacked_func",
           "flash_attn_varlen_func", "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func",
           "flash_attn_with_kvcache",
           "SigmoidSelfAttention",
           "alibi_slopes", "apply_rotary", "forward", "backward", "build_info", "library_path"]
__version__ = "0.1.0"

"""FlashSigmoid: fused sigmoid self-attention, out = sigmoid(scale q k^T + bias) v.

`forward` / `backward` run the GPU kernels on CUDA tensors and the CPU implementation on CPU
tensors (see docs/). The flash_attn-compatible interface is tracked in issue 5.
"""
from ._capi import FlashSigmoidError, build_info
from .ops import backward, forward

__all__ = ["forward", "backward", "build_info", "FlashSigmoidError"]
__version__ = "0.1.0"

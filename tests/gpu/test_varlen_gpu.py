"""GPU tier: the varlen entry points on CUDA tensors. The GPU kernels do not read cu_seqlens yet
(docs/varlen.md, step 3), so CUDA tensors must raise NotImplementedError naming the function —
never silently run per sequence with a host sync, and never return a wrong result. This test is
replaced by the varlen grid when the kernels land."""
import pytest
import torch

from flash_sigmoid import flash_attn_varlen_func

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_tensors_raise_not_implemented():
    q = torch.randn(7, 2, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(9, 2, 64, device="cuda", dtype=torch.bfloat16)
    cq = torch.tensor([0, 3, 7], device="cuda", dtype=torch.int32)
    ck = torch.tensor([0, 5, 9], device="cuda", dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="flash_attn_varlen_func: CUDA tensors"):
        flash_attn_varlen_func(q, k, k, cq, ck, 4, 5)

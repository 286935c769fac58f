"""GPU tier: flash_attn_with_kvcache on CUDA tensors (fp16/bf16) against the fp64 reference on the
assembled dense cache (tests/gpu/kvcache_cases.py): appends land where flash-attn puts them, paged
(page sizes 16-256) and not, rotary, masks, GQA, zero-length caches; and no host sync (the call is
captured in a CUDA graph and replayed)."""
import math

import pytest
import torch

from kernels import skip_unless_built
from kvcache_cases import check, make_case, rotary_tables

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("page_size", [None, 16, 64, 256])
def test_append_and_attend(dtype, page_size):
    skip_unless_built("fwd", dtype, 64)
    c = make_case(3, 8, 2, 64, dtype, lengths=[0, 37, 130], seqlen_new=3, seqlen_q=3, page_size=page_size,
                  capacity=160, permute_rows=page_size is None)
    check(c, dtype, device="cuda", causal=True, window_size=(50, 0), alibi_slopes=torch.rand(8),
          sigmoid_bias=-math.log(160), rotary=rotary_tables(c["capacity"], 32), interleaved=page_size != 16)


@pytest.mark.parametrize("d", [64, 128, 256])
def test_decode_one_token(d):
    skip_unless_built("fwd", torch.bfloat16, d)
    c = make_case(4, 8, 2, d, torch.bfloat16, lengths=[1, 255, 64, 0], seqlen_new=1, seqlen_q=1, capacity=256)
    check(c, torch.bfloat16, device="cuda", causal=True)


def test_cuda_graph_capture_and_replay():
    # Fixed shapes, device-side cache_seqlens: the whole call (append + attend) is graph-capturable.
    from flash_sigmoid import flash_attn_with_kvcache
    skip_unless_built("fwd", torch.bfloat16, 64)
    g = torch.Generator(device="cuda").manual_seed(2)
    kc = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(2, 64, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    q = torch.randn(2, 1, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 1, 2, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    lens = torch.tensor([5, 40], dtype=torch.int32, device="cuda")
    eager = flash_attn_with_kvcache(q, kc.clone(), vc.clone(), k, k, cache_seqlens=lens, causal=True)
    kc2, vc2 = kc.clone(), vc.clone()
    flash_attn_with_kvcache(q, kc2, vc2, k, k, cache_seqlens=lens, causal=True)  # warm up outside the graph
    kc2.copy_(kc), vc2.copy_(vc)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flash_attn_with_kvcache(q, kc2, vc2, k, k, cache_seqlens=lens, causal=True)
    kc2.copy_(kc), vc2.copy_(vc)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)

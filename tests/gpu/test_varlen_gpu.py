"""GPU tier: the varlen entry points on CUDA tensors (fp16, bf16). Until the kernels read cu_seqlens
(docs/varlen.md, step 3) they run the padded dense path (python/flash_sigmoid/varlen_padded.py);
this checks it against the per-sequence fp64 reference, forward and gradients, on every shared case
(lengths with 0 and 1, Sq != Sk, masks, ALiBi, GQA/MQA, bias float / "auto" / [B]), that the packed
variants agree, and that the call is CUDA-graph capturable (no host sync)."""
import pytest
import torch

from flash_sigmoid import flash_attn_varlen_func, flash_attn_varlen_kvpacked_func
from kernels import skip_unless_built
from varlen_cases import CASES, IDS, bias_arg, cu, make, per_sequence_reference, slopes

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forward_and_gradients_against_per_sequence_fp64(case, dtype):
    lq, lk, hq, hkv, d, causal, window, alibi_kind, bias_kind = case
    skip_unless_built("fwd", dtype, d + 2)
    skip_unless_built("bwd", dtype, d + 2)
    q, k, v = make(lq, lk, hq, hkv, d, dtype)
    alibi = slopes(alibi_kind, len(lq), hq)
    bias = bias_arg(bias_kind, lk)
    qs, ks, vs = (t.cuda().requires_grad_() for t in (q, k, v))
    out = flash_attn_varlen_func(qs, ks, vs, cu(lq).cuda(), cu(lk).cuda(), max(lq), max(lk), causal=causal,
                                 window_size=window, alibi_slopes=None if alibi is None else alibi.cuda(),
                                 sigmoid_bias=bias.cuda() if isinstance(bias, torch.Tensor) else bias)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = per_sequence_reference(q64, k64, v64, lq, lk, causal, window, alibi, bias_kind)
    scale = max(1.0, ref.abs().max().item())
    assert (out.double().cpu() - ref).abs().max().item() <= 3e-2 * scale
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    got = torch.autograd.grad(out, (qs, ks, vs), g.cuda())
    want = torch.autograd.grad(ref, (q64, k64, v64), g.double(), allow_unused=True)
    for name, a, b in zip(("dq", "dk", "dv"), got, want):
        b = torch.zeros_like(a, dtype=torch.float64, device="cpu") if b is None else b
        assert (a.double().cpu() - b).abs().max().item() <= 3e-2 * max(1.0, b.abs().max().item()), name


def test_kvpacked_equals_unpacked_and_graph_capture():
    skip_unless_built("fwd", torch.bfloat16, 64)
    lq, lk = [5, 0, 130, 17], [9, 3, 200, 0]
    q, k, v = (t.cuda() for t in make(lq, lk, 8, 2, 64, torch.bfloat16, seed=2))
    cq, ck = cu(lq).cuda(), cu(lk).cuda()
    out = flash_attn_varlen_func(q, k, v, cq, ck, max(lq), max(lk), causal=True, sigmoid_bias="auto")
    kv = torch.stack((k, v), dim=1)
    assert torch.equal(flash_attn_varlen_kvpacked_func(q, kv, cq, ck, max(lq), max(lk), causal=True,
                                                       sigmoid_bias="auto"), out)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = flash_attn_varlen_func(q, k, v, cq, ck, max(lq), max(lk), causal=True, sigmoid_bias="auto")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, out)

"""Packed-sequence cases shared by the CPU tier (tests/python/test_varlen_cpu.py,
test_varlen_padded_cpu.py) and the GPU tier (tests/gpu/test_varlen_gpu.py): lengths with zeros and
ones, Sq != Sk per sequence, masks, ALiBi, GQA/MQA, the three bias kinds, and an fp64 reference run
sequence by sequence, written without the varlen code under test."""
import math

import torch

from reference import attention_reference

CASES = [
    # lengths q, lengths k, hq, hkv, d, causal, window, alibi, bias
    ([5, 0, 17, 1], [9, 3, 17, 0], 4, 2, 32, False, (-1, -1), None, 0.0),
    ([17, 1, 40, 3], [17, 30, 13, 3], 4, 1, 24, True, (-1, -1), "heads", "auto"),
    ([0, 33, 7], [0, 65, 7], 2, 2, 64, True, (7, -1), "batch_heads", "tensor"),
    ([29, 0, 12], [29, 4, 12], 3, 3, 8, False, (4, 2), None, -1.5),
]
IDS = [f"case{i}" for i in range(len(CASES))]


def cu(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.int32)


def make(lq, lk, hq, hkv, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lq), hq, d, generator=g).to(dtype)
    k = torch.randn(sum(lk), hkv, d, generator=g).to(dtype)
    v = torch.randn(sum(lk), hkv, d, generator=g).to(dtype)
    return q, k, v


def slopes(kind, b, hq):
    g = torch.Generator().manual_seed(1)
    if kind is None:
        return None
    return torch.rand(hq, generator=g) if kind == "heads" else torch.rand(b, hq, generator=g)


def bias_arg(kind, lk):
    if kind == "tensor":
        return torch.linspace(-3.0, 0.5, len(lk))
    return kind


def bias_of(kind, lk, b):
    if kind == "auto":
        return -math.log(lk[b]) if lk[b] > 0 else 0.0
    if kind == "tensor":
        return float(torch.linspace(-3.0, 0.5, len(lk))[b])
    return kind


def per_sequence_reference(q, k, v, lq, lk, causal, window, alibi, bias_kind):
    """The fp64 reference run sequence by sequence, written without the varlen code under test."""
    outs = []
    oq, ok = 0, 0
    for b in range(len(lq)):
        qb = q[oq:oq + lq[b]].unsqueeze(0)
        kb, vb = k[ok:ok + lk[b]].unsqueeze(0), v[ok:ok + lk[b]].unsqueeze(0)
        if lk[b] == 0:
            outs.append(torch.zeros(lq[b], q.shape[1], q.shape[2], dtype=torch.float64) + 0 * qb[0].double())
        else:
            s = alibi if alibi is None or alibi.dim() == 1 else alibi[b:b + 1]
            win = (window[0], 0) if causal else window
            outs.append(attention_reference(qb, kb, vb, sigmoid_bias=bias_of(bias_kind, lk, b), causal=causal,
                                            window_size=win, alibi_slopes=s)[0])
        oq, ok = oq + lq[b], ok + lk[b]
    return torch.cat(outs, 0)

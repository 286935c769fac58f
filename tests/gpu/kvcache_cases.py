"""flash_attn_with_kvcache cases shared by the CPU tier (tests/python/test_kvcache_cpu.py) and the
GPU tier (tests/gpu/test_kvcache_gpu.py): caches with random tokens below each row's length and NaN
past it, an fp64 reference on the assembled dense cache written without the code under test, and the
expected caches after the append."""
import torch

from flash_sigmoid import flash_attn_with_kvcache
from reference import attention_reference


def rotate_reference(x, positions, cos, sin, interleaved):
    """x [S, H, D] (fp64) rotated at positions [S], written without the code under test."""
    out = x.clone()
    half = cos.shape[1]
    for s, p in enumerate(positions):
        for i in range(half):
            c, n = float(cos[p, i]), float(sin[p, i])
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + half)
            out[s, :, a] = x[s, :, a] * c - x[s, :, b] * n
            out[s, :, b] = x[s, :, b] * c + x[s, :, a] * n
    return out


def make_case(batch, hq, hkv, d, dtype, lengths, seqlen_new, seqlen_q, page_size=None, capacity=24, seed=0,
              permute_rows=False):
    """Caches holding random tokens below each row's length and NaN elsewhere; returns a dict."""
    g = torch.Generator().manual_seed(seed)
    c = dict(lengths=lengths, seqlen_new=seqlen_new, page_size=page_size, batch=batch)
    c["q"] = torch.randn(batch, seqlen_q, hq, d, generator=g).to(dtype)
    if seqlen_new:
        c["k"] = torch.randn(batch, seqlen_new, hkv, d, generator=g).to(dtype)
        c["v"] = torch.randn(batch, seqlen_new, hkv, d, generator=g).to(dtype)
    if page_size is None:
        rows = torch.randperm(batch + 1, generator=g)[:batch] if permute_rows else torch.arange(batch)
        c["rows"] = rows
        shape = (batch + 1, capacity, hkv, d)
        where = [[(int(rows[b]), p) for p in range(capacity)] for b in range(batch)]
    else:
        pages_per_row = -(-capacity // page_size)
        num_pages = batch * pages_per_row + 2  # two pages nobody uses
        table = torch.randperm(num_pages, generator=g)[:batch * pages_per_row].view(batch, pages_per_row)
        c["block_table"] = table.to(torch.int32)
        shape = (num_pages, page_size, hkv, d)
        capacity = pages_per_row * page_size
        where = [[(int(table[b, p // page_size]), p % page_size) for p in range(capacity)] for b in range(batch)]
    c["capacity"], c["where"] = capacity, where
    for name in ("k_cache", "v_cache"):
        cache = torch.full(shape, float("nan"), dtype=dtype)
        for b in range(batch):
            for p in range(lengths[b]):
                cache[where[b][p]] = torch.randn(hkv, d, generator=g).to(dtype)
        c[name] = cache
    return c


def call(c, cache_seqlens="tensor", device="cpu", **kw):
    """The call under test on `device`; the caches are updated in c (copied back from the device)."""
    on = {name: c[name].to(device) for name in ("q", "k_cache", "v_cache")}
    new = [c[name].to(device) if name in c else None for name in ("k", "v")]
    seqlens = torch.tensor(c["lengths"], dtype=torch.int32, device=device) if cache_seqlens == "tensor" else cache_seqlens
    extra = {}
    if c["page_size"] is not None:
        extra["block_table"] = c["block_table"].to(device)
    elif not torch.equal(c["rows"], torch.arange(c["batch"])):
        extra["cache_batch_idx"] = c["rows"].to(torch.int32).to(device)
    kw = {key: (val.to(device) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
    out = flash_attn_with_kvcache(on["q"], on["k_cache"], on["v_cache"], *new, cache_seqlens=seqlens, **extra, **kw)
    c["k_cache"].copy_(on["k_cache"])
    c["v_cache"].copy_(on["v_cache"])
    return out.cpu()


def reference(c, k_cache0, v_cache0, causal=False, window=(-1, -1), alibi=None, bias=0.0, rotary=None,
              interleaved=True):
    """fp64 output and the expected caches after the append, from the caches before the call."""
    k_exp, v_exp = k_cache0.clone(), v_cache0.clone()
    outs = []
    local = tuple(window) != (-1, -1)
    for b in range(c["batch"]):
        L, n, sq = c["lengths"][b], c["seqlen_new"], c["q"].shape[1]
        k_new = c["k"][b].double() if n else None
        q = c["q"][b].double()
        if rotary is not None:
            cos, sin = rotary
            q_pos = [L + i if (causal or local) else L for i in range(sq)]
            q = rotate_reference(q, q_pos, cos, sin, interleaved)
            if n:
                k_new = rotate_reference(k_new, [L + i for i in range(n)], cos, sin, interleaved)
        for i in range(n):
            k_exp[c["where"][b][L + i]] = k_new[i].to(k_exp.dtype)
            v_exp[c["where"][b][L + i]] = c["v"][b, i]
        keys = torch.stack([k_exp[c["where"][b][p]] for p in range(L + n)]) if L + n else None
        vals = torch.stack([v_exp[c["where"][b][p]] for p in range(L + n)]) if L + n else None
        if keys is None:
            outs.append(torch.zeros_like(q))
            continue
        s = alibi if alibi is None or alibi.dim() == 1 else alibi[b:b + 1]
        win = (window[0], 0) if causal else window
        outs.append(attention_reference(q[None], keys[None], vals[None], sigmoid_bias=bias, causal=causal,
                                        window_size=win, alibi_slopes=s)[0])
    return torch.stack(outs), k_exp, v_exp


def rotary_tables(capacity, d_rot, seed=3):
    g = torch.Generator().manual_seed(seed)
    angles = torch.rand(capacity + 8, d_rot // 2, generator=g) * 6.0
    return angles.cos(), angles.sin()


def check(c, dtype, device="cpu", **kw):
    k0, v0 = c["k_cache"].clone(), c["v_cache"].clone()
    rotary = kw.pop("rotary", None)
    interleaved = kw.pop("interleaved", True)
    ref_kw = dict(kw)
    if rotary is not None:
        kw.update(rotary_cos=rotary[0], rotary_sin=rotary[1], rotary_interleaved=interleaved)
    out = call(c, device=device, **kw)
    ref, k_exp, v_exp = reference(c, k0, v0, causal=kw.get("causal", False), window=kw.get("window_size", (-1, -1)),
                                  alibi=kw.get("alibi_slopes"), bias=kw.get("sigmoid_bias", 0.0), rotary=rotary,
                                  interleaved=interleaved)
    assert out.shape == c["q"].shape and out.dtype == dtype
    assert torch.isfinite(out).all(), "a slot past a row's length (NaN) leaked into the output"
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert (out.double() - ref).abs().max().item() <= tol * max(1.0, ref.abs().max().item())
    # The caches after the append: v bitwise; k bitwise without rotary (with it, fp32 vs fp64 rotation).
    torch.testing.assert_close(c["v_cache"], v_exp, rtol=0, atol=0, equal_nan=True)
    if rotary is None:
        torch.testing.assert_close(c["k_cache"], k_exp, rtol=0, atol=0, equal_nan=True)
    else:
        torch.testing.assert_close(c["k_cache"].double(), k_exp.double(), rtol=0, atol=tol * 4, equal_nan=True)

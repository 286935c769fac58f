"""A small forward and backward per mask type and head dim 64 / 128 through the Python package, for
compute-sanitizer. (The C++ GPU test covers the forward without torch; this adds the backward
kernels: on an H100 the sm90 family in the default mode, the sm80 family in the deterministic mode
and by name; and the KV-cache append and decode kernels, index values out of range included.)"""
import math
import sys

import torch

sys.path.insert(0, "python")
import flash_sigmoid  # noqa: E402

torch.manual_seed(0)
for d in (64, 128):
    for causal, window, alibi in ((False, (-1, -1), False), (True, (-1, -1), False), (False, (9, 4), True)):
        q = torch.randn(2, 77, 4, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, 131, 2, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(2, 131, 2, d, device="cuda", dtype=torch.bfloat16)
        slopes = torch.rand(4, device="cuda") if alibi else None
        kw = dict(sigmoid_bias=-math.log(131), causal=causal, window_size=window, alibi_slopes=slopes)
        flash_sigmoid.forward(q, k, v, **kw)
        if torch.cuda.get_device_capability() == (9, 0):
            for variant in ("cp_async", "ws_lockstep", "ws_wide", "ws_deep", "ws_persistent", "ws_relu", "ws_mix4"):  # the sm90 forward's variants, where built
                if f"sm90a_fwd_{variant}_bf16_hdim{d}_mask_none" in flash_sigmoid.build_info():
                    flash_sigmoid.forward(q, k, v, kernel_arch=90, kernel_variant=variant, **kw)
        for deterministic, arch in ((False, 0), (True, 0), (False, 80)):
            if f"_bwd_bf16_hdim{d}_" not in flash_sigmoid.build_info():  # a forward-only build
                continue
            flash_sigmoid.backward(torch.randn_like(q), q, k, v, deterministic=deterministic, kernel_arch=arch, **kw)
# The KV-cache path (docs/kvcache.md): the append kernel then the split-KV decode kernel, rows and
# pages, rotary, GQA packing with two row chunks, and index values out of range (a token with no
# slot, a page and rows outside the cache), which must neither read nor write outside.
if "_decode_bf16_hdim" in flash_sigmoid.build_info():
    from flash_sigmoid import flash_attn_with_kvcache
    for d in (64, 128):
        if f"_decode_bf16_hdim{d}" not in flash_sigmoid.build_info():
            continue
        cos, sin = torch.rand(96, 16, device="cuda"), torch.rand(96, 16, device="cuda")
        for paged in (False, True):
            shape = (3 * 96 // 16 + 1, 16, 2, d) if paged else (4, 96, 2, d)
            kc = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
            vc = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
            q = torch.randn(3, 2, 40, d, device="cuda", dtype=torch.bfloat16)  # 2 x 20 = 40 rows: two chunks
            k = torch.randn(3, 2, 2, d, device="cuda", dtype=torch.bfloat16)
            lens = torch.tensor([0, 33, 94], dtype=torch.int32, device="cuda")
            extra = {}
            if paged:
                extra["block_table"] = torch.randperm(18, device="cuda").to(torch.int32).view(3, 6)
            else:
                extra["cache_batch_idx"] = torch.tensor([2, 0, 3], dtype=torch.int32, device="cuda")
            flash_attn_with_kvcache(q, kc, vc, k, k, rotary_cos=cos, rotary_sin=sin, cache_seqlens=lens, causal=True,
                                    num_splits=3, **extra)
            bad = torch.tensor([96, 95, -4], dtype=torch.int32, device="cuda")  # no slot, half a slot, negative
            if paged:
                extra["block_table"][1, 5] = -1
                extra["block_table"][2, 0] = 1000
            else:
                extra["cache_batch_idx"] = torch.tensor([9, -1, 1], dtype=torch.int32, device="cuda")
            flash_attn_with_kvcache(q, kc, vc, k, k, cache_seqlens=bad, **extra)
torch.cuda.synchronize()
print("sanitize case done")

// Layer: common kernel parts. The KV-cache append on the GPU (flash_attn_with_kvcache's first
// step, docs/kvcache.md): the new k, v tokens written into the cache in place, rotary applied to
// the new k and to q (into q_rotated), and the forward's key counts cache_seqlens + seqlen_new --
// one launch, so a decode step with new tokens costs the decode kernel plus this one.
//
// Owns: the arithmetic, which is the CPU implementation's (src/cpu/kvcache_cpu.cpp): each rotary
// product rounded to fp32, then one addition, then one rounding to the element type (no FMA
// contraction), so CPU and GPU rotate bitwise alike. Owns the device-side rules for values the
// host never reads: a token whose position is outside 0..seqlen_k - 1, or whose cache row or page
// is outside k_cache, is not written; rotary positions are clamped to the table; the key counts to
// 0..seqlen_k (which also keeps the decode kernel's reads inside the cache).
// Does not own: validation (the API), which kernels exist (the decode key's translation units
// instantiate this per dtype).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/launch.hpp"
#include "common/params.hpp"

namespace flash_sigmoid {

inline constexpr int kAppendThreads = 128;

#if defined(__CUDACC__)
namespace append_detail {

// Channel c of a row at `src` (head_dim elements), rotated by table row `pos` when c < rotary_dim.
template <class Element>
__device__ Element rotated_channel(const AppendParams& a, const Element* src, int c, int pos) {
  if (c >= a.rotary_dim) return src[c];
  const float x = static_cast<float>(src[c]);
  const int half = a.rotary_dim / 2;
  int i, partner;
  bool first;
  if (a.rotary_interleaved) {  // pairs (2i, 2i + 1)
    i = c / 2, first = (c & 1) == 0, partner = first ? c + 1 : c - 1;
  } else {  // pairs (i, i + half)
    first = c < half, i = first ? c : c - half, partner = first ? c + half : c - half;
  }
  const float y = static_cast<float>(src[partner]);
  const float cos = a.rotary_cos[pos * a.rotary_stride + i];
  const float sin = a.rotary_sin[pos * a.rotary_stride + i];
  // first: x1 cos - x2 sin; second: x2 cos + x1 sin (x is this channel, y its partner).
  const float r = first ? __fsub_rn(__fmul_rn(x, cos), __fmul_rn(y, sin))
                        : __fadd_rn(__fmul_rn(x, cos), __fmul_rn(y, sin));
  return static_cast<Element>(r);
}

__device__ inline int clamp_position(const AppendParams& a, int64_t pos) {
  return static_cast<int>(pos < 0 ? 0 : (pos >= a.rotary_seqlen ? a.rotary_seqlen - 1 : pos));
}

}  // namespace append_detail

// Block (b, y, h) takes tokens t = y, y + gridDim.y, ... of head h: t < seqlen_new appends new
// token t of batch entry b (kv head h), the next seqlen_q rotate q's tokens (query head h). One
// head per block keeps every thread's loads independent (a block looping over all heads waited
// out ~30 dependent load latencies: 23 us per decode step on the H200). Block (b, 0, 0) also
// writes b's key count.
template <class Element>
__device__ void append_token(const AppendParams& a, int b, int t, int h, int64_t cached, bool rotary) {
  if (t < a.seqlen_new) {
    const int64_t pos = cached + t;
    if (pos < 0 || pos >= a.seqlen_k) return;
    int64_t row = a.kv_batch_idx != nullptr ? a.kv_batch_idx[b] : b, slot = pos;
    if (a.block_table != nullptr) {
      row = a.block_table[b * a.block_table_stride_batch + pos / a.page_size];
      slot = pos % a.page_size;
    }
    if (row < 0 || row >= a.kv_rows || h >= a.heads_kv) return;
    const int table_pos = rotary ? append_detail::clamp_position(a, pos) : 0;
    for (int c = threadIdx.x; c < a.head_dim; c += kAppendThreads) {
      const Element* k_src = static_cast<const Element*>(a.k_new.ptr) + b * a.k_new.stride_batch +
                             t * a.k_new.stride_seq + h * a.k_new.stride_head;
      const Element* v_src = static_cast<const Element*>(a.v_new.ptr) + b * a.v_new.stride_batch +
                             t * a.v_new.stride_seq + h * a.v_new.stride_head;
      Element* k_dst = static_cast<Element*>(a.k_cache.ptr) + row * a.k_cache.stride_batch +
                       slot * a.k_cache.stride_seq + h * a.k_cache.stride_head;
      Element* v_dst = static_cast<Element*>(a.v_cache.ptr) + row * a.v_cache.stride_batch +
                       slot * a.v_cache.stride_seq + h * a.v_cache.stride_head;
      k_dst[c] = rotary ? append_detail::rotated_channel(a, k_src, c, table_pos) : k_src[c];
      v_dst[c] = v_src[c];
    }
    return;
  }
  const int i = t - a.seqlen_new;  // q's token
  if (i >= a.seqlen_q || !rotary || h >= a.heads_q) return;
  const int table_pos = append_detail::clamp_position(a, cached + (a.q_steps ? i : 0));
  for (int c = threadIdx.x; c < a.head_dim; c += kAppendThreads) {
    const Element* src =
        static_cast<const Element*>(a.q.ptr) + b * a.q.stride_batch + i * a.q.stride_seq + h * a.q.stride_head;
    Element* dst = static_cast<Element*>(a.q_rotated.ptr) + b * a.q_rotated.stride_batch +
                   i * a.q_rotated.stride_seq + h * a.q_rotated.stride_head;
    dst[c] = append_detail::rotated_channel(a, src, c, table_pos);
  }
}

template <class Element>
__global__ void __launch_bounds__(kAppendThreads) kvcache_append_kernel(const AppendParams a) {
  const int b = blockIdx.x;
  const int64_t cached = a.cache_seqlens[b];
  if (blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0 && a.seqused_k_out != nullptr) {
    const int64_t keys = cached + a.seqlen_new;
    a.seqused_k_out[b] = static_cast<int32_t>(keys < 0 ? 0 : (keys > a.seqlen_k ? a.seqlen_k : keys));
  }
  const bool rotary = a.rotary_cos != nullptr && a.rotary_seqlen > 0;
  for (int t = blockIdx.y; t < a.seqlen_new + a.seqlen_q; t += gridDim.y) {
    append_token<Element>(a, b, t, static_cast<int>(blockIdx.z), cached, rotary);
  }
}

// One launch on `stream`: a block per (batch entry, new token or q token, head), up to 65535 tokens;
// one token row when there is nothing to append but the key counts are asked for.
template <class Element>
cudaError_t launch_kvcache_append(const AppendParams& params, cudaStream_t stream) {
  int tokens = params.seqlen_new + params.seqlen_q;
  if (tokens > 65535) tokens = 65535;  // grid.y's limit; blocks loop over the rest
  if (tokens == 0 && params.seqused_k_out != nullptr) tokens = 1;
  const int heads = params.seqlen_q > 0 && params.heads_q > params.heads_kv ? params.heads_q : params.heads_kv;
  const LaunchShape shape{dim3(static_cast<unsigned>(params.batch), static_cast<unsigned>(tokens),
                               static_cast<unsigned>(heads > 0 ? heads : 1)),
                          kAppendThreads, 0};
  return launch_kernel(&kvcache_append_kernel<Element>, shape, stream, params);
}
#endif

}  // namespace flash_sigmoid

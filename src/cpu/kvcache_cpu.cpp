// Layer: CPU implementation. The KV-cache append and rotary (see kvcache_cpu.hpp).
#include "kvcache_cpu.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_convert.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

// The element offset of (batch entry b, position pos, kv head h) in a cache tensor: through the
// row map or the pages exactly as the forward reads it (cpu_sequences.cpp, key_rows_tile).
int64_t cache_offset(const FlashSigmoidProblem& p, const FlashSigmoidTensor& t, int64_t b, int64_t pos, int64_t h) {
  if (p.block_table != nullptr) {
    const int64_t page = p.block_table[b * p.block_table_stride_batch + pos / p.page_size];
    return page * t.stride_batch + (pos % p.page_size) * t.stride_seq + h * t.stride_head;
  }
  const int64_t row = p.kv_batch_idx != nullptr ? p.kv_batch_idx[b] : b;
  return row * t.stride_batch + pos * t.stride_seq + h * t.stride_head;
}

// A view of one row of t at element offset `offset` (load_row/store_row address row [0, 0, 0]).
FlashSigmoidTensor row_at(const FlashSigmoidTensor& t, int64_t offset, int64_t element_bytes) {
  FlashSigmoidTensor r = t;
  r.data = static_cast<char*>(t.data) + offset * element_bytes;
  return r;
}

// row[0, rotary_dim) rotated in place by table row `pos`; channels past rotary_dim untouched.
void rotate(const FlashSigmoidKvAppendArgs& a, int64_t pos, float* row) {
  const int64_t half = a.rotary_dim / 2;
  const float* cos = a.rotary_cos + pos * a.rotary_stride;
  const float* sin = a.rotary_sin + pos * a.rotary_stride;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t i1 = a.rotary_interleaved ? 2 * i : i;
    const int64_t i2 = a.rotary_interleaved ? 2 * i + 1 : i + half;
    const float x1 = row[i1], x2 = row[i2];
    const float x1c = x1 * cos[i], x2s = x2 * sin[i], x2c = x2 * cos[i], x1s = x1 * sin[i];
    row[i1] = x1c - x2s;
    row[i2] = x2c + x1s;
  }
}

}  // namespace

bool kvcache_append(const FlashSigmoidKvAppendArgs& args) noexcept {
  try {
    const FlashSigmoidProblem& p = args.problem;
    const int64_t eb = p.dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2;
    const size_t row_bytes = static_cast<size_t>(p.head_dim * eb);
    const bool rotary = args.rotary_cos != nullptr;
    std::vector<float> row(static_cast<size_t>(p.head_dim));
    if (args.seqused_k_out != nullptr) {  // the host checked cache_seqlens + seqlen_new <= seqlen_k
      for (int64_t b = 0; b < p.batch; ++b) {
        args.seqused_k_out[b] = static_cast<int32_t>(args.cache_seqlens[b] + args.seqlen_new);
      }
    }
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t i = 0; i < args.seqlen_new; ++i) {
        const int64_t pos = args.cache_seqlens[b] + i;
        for (int64_t h = 0; h < p.heads_kv; ++h) {
          const FlashSigmoidTensor k_src = row_at(args.k_new, row_offset(args.k_new, b, i, h), eb);
          const FlashSigmoidTensor k_dst = row_at(args.k_cache, cache_offset(p, args.k_cache, b, pos, h), eb);
          if (rotary) {
            load_row(k_src, p.dtype, 0, 0, 0, p.head_dim, row.data());
            rotate(args, pos, row.data());
            store_row(k_dst, p.dtype, 0, 0, 0, p.head_dim, row.data());
          } else {
            std::memcpy(k_dst.data, k_src.data, row_bytes);
          }
          const FlashSigmoidTensor v_src = row_at(args.v_new, row_offset(args.v_new, b, i, h), eb);
          const FlashSigmoidTensor v_dst = row_at(args.v_cache, cache_offset(p, args.v_cache, b, pos, h), eb);
          std::memcpy(v_dst.data, v_src.data, row_bytes);
        }
      }
    }
    if (!rotary || args.q.data == nullptr) return true;
    // flash-attn 2.5.6: with causal or a window q's token i sits at cache_seqlens[b] + i; a
    // non-causal query block is one position, cache_seqlens[b].
    const bool q_steps = p.causal || p.window_left != -1 || p.window_right != -1;
    for (int64_t b = 0; b < p.batch; ++b) {
      for (int64_t i = 0; i < p.seqlen_q; ++i) {
        const int64_t pos = args.cache_seqlens[b] + (q_steps ? i : 0);
        for (int64_t h = 0; h < p.heads_q; ++h) {
          load_row(args.q, p.dtype, b, i, h, p.head_dim, row.data());
          rotate(args, pos, row.data());
          store_row(args.q_rotated, p.dtype, b, i, h, p.head_dim, row.data());
        }
      }
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

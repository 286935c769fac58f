// Layer: sm80 (mma.sync and cp.async; runs on sm_80 and sm_90). The split-KV decode kernel of
// flash_attn_with_kvcache (docs/kvcache.md, "Step 2") and the kernel that sums its splits.
//
// One block per (batch row, kv head, split, row chunk). Its 16 M rows are packed query rows: the
// heads_q / heads_kv query heads of the kv head times the seqlen_q tokens (row r is token
// r / group, query head kv_head * group + r % group), so a decode step's GQA group shares one
// pass over the keys. K and V stream from the cache (rows through kv_batch_idx, or pages through
// block_table) by cp.async, kStages tiles of kDecodeBlockN keys in flight, each 16-byte chunk with
// its own address (a page's slots are contiguous; pages are gathered key by key, so any page size
// works). Keys at or past the row's length are never read: their chunks are zero-filled.
//
//   warp w    S = Q K^T   (16 rows x keys 16w..16w+15 of the tile; ldmatrix Q and K, mma.sync)
//             P = sigma(scale S + bias - alibi), 0 where the mask hides (row, key)
//             O_w += P V  (P re-used as the A operand from registers; V by ldmatrix.trans)
//   end       O = sum over warps (shared memory), written as the output (one split) or as this
//             split's fp32 partial sum; decode_combine_kernel sums the splits in a fixed order.
//
// No row statistics: sigmoid attention is linear in its key set (docs/math.md), so the splits and
// the warps' key slices combine by a plain fp32 sum with no rescaling. Decode reads each key once
// and does 2 * 16 * D multiply-adds with it, so the kernel is bound by HBM, not by the MMAs: the
// 16-row M tile (4 live rows for 32/8 heads) costs only registers.
// Does not own: the launch plan (common/decode_plan.hpp), validation (the API layer), the append.
#pragma once

#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cutlass/numeric_types.h>

#include "base/math.hpp"
#include "common/decode_plan.hpp"
#include "common/params.hpp"
#include "policies/sigmoid.hpp"

namespace flash_sigmoid::sm80 {
namespace decode_detail {

// The 16-bit operand type: packing two fp32 values (round to nearest) and the m16n8k16 MMA.
template <class Element>
struct Operand;

template <>
struct Operand<cutlass::half_t> {
  __device__ static uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    uint32_t u;
    std::memcpy(&u, &h, sizeof(u));
    return u;
  }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

template <>
struct Operand<cutlass::bfloat16_t> {
  __device__ static uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    std::memcpy(&u, &h, sizeof(u));
    return u;
  }
  __device__ static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

__device__ inline uint32_t smem_address(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros and reads nothing.
__device__ inline void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// Shared-memory tiles are [rows, kHeadDim] of 16-byte chunks, chunk c of row r stored at
// c ^ (r % 8): the 8 rows one ldmatrix phase reads then hit 8 different bank groups.
template <int kHeadDim>
__device__ inline int swizzled(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

template <class Element>
__device__ inline void store4(Element* dst, float a, float b, float c, float d) {
  const uint2 v{Operand<Element>::pack(a, b), Operand<Element>::pack(c, d)};
  *reinterpret_cast<uint2*>(dst) = v;
}

}  // namespace decode_detail

template <class Element, int kHeadDim, class ScoreFunction>
__global__ void __launch_bounds__(kDecodeThreads) sm80_decode_kernel(const DecodeParams params) {
  using namespace decode_detail;
  using Op = Operand<Element>;
  constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  constexpr int kStages = decode_stages(kHeadDim);
  constexpr int kRowsPerPass = kDecodeThreads / kChunks;  // K/V rows the block copies per pass
  constexpr int kPasses = kDecodeBlockN / kRowsPerPass;
  constexpr int kTileElems = kDecodeBlockN * kHeadDim;
  static_assert(kHeadDim % 64 == 0, "the swizzle needs >= 8 chunks per row");
  static_assert(kDecodeThreads % kChunks == 0 && kDecodeBlockN % kRowsPerPass == 0, "copy shape");
  static_assert(kDecodeWarps * kDecodeRows * kHeadDim * 4 <= decode_smem_bytes(kHeadDim), "epilogue reuse");

  extern __shared__ uint4 smem_raw[];
  Element* sQ = reinterpret_cast<Element*>(smem_raw);  // (kDecodeRows, kHeadDim)
  Element* sK = sQ + kDecodeRows * kHeadDim;            // (kDecodeBlockN, kHeadDim, kStages)
  Element* sV = sK + kStages * kTileElems;              // (kDecodeBlockN, kHeadDim, kStages)

  const ProblemParams& pr = params.forward.problem;
  const KvCacheParams& kv = params.kv;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int batch_idx = blockIdx.y;
  int block = blockIdx.x;
  const int chunk_idx = block % params.row_chunks;
  block /= params.row_chunks;
  const int split_idx = block % params.num_splits;
  const int head_kv_idx = block / params.num_splits;
  const int group = pr.group_size;
  const int row0 = chunk_idx * kDecodeRows;
  const int rows = min(kDecodeRows, pr.seqlen_q * group - row0);

  // This row's keys (read on the device: the launch does not depend on them), and the key range
  // the chunk's rows may see: the first token's left bound to the last token's right bound.
  // Clamped to the capacity: the values are not checked on the host, and no read may leave the cache.
  const int seqlen_k = kv.seqused_k != nullptr ? min(max(kv.seqused_k[batch_idx], 0), pr.seqlen_k) : pr.seqlen_k;
  const int offset = seqlen_k - pr.seqlen_q;
  const bool has_left = kv.window_left >= 0, has_right = kv.window_right >= 0;
  const int first_token = row0 / group, last_token = (row0 + rows - 1) / group;
  const int k_lo = has_left ? max(0, first_token + offset - kv.window_left) : 0;
  const int k_hi = has_right ? min(seqlen_k, last_token + offset + kv.window_right + 1) : seqlen_k;
  const int t_begin = k_lo / kDecodeBlockN;
  const int t_end = k_hi > k_lo ? (k_hi + kDecodeBlockN - 1) / kDecodeBlockN : t_begin;
  const int per_split = (t_end - t_begin + params.num_splits - 1) / params.num_splits;
  const int tile_begin = min(t_end, t_begin + split_idx * per_split);
  const int n_tiles = min(t_end, tile_begin + per_split) - tile_begin;

  float bias = pr.bias;
  if (kv.bias_per_batch != nullptr) bias = kv.bias_per_batch[batch_idx];
  else if (kv.bias_auto) bias = seqlen_k > 0 ? -logf(static_cast<float>(seqlen_k)) : 0.f;
  const float scale_x = pr.scale * ScoreFunction::kInputScale;
  const float bias_x = bias * ScoreFunction::kInputScale;

  // The two rows this thread's accumulator fragments hold (g and g + 8): their visible keys
  // [key_lo, key_hi] (the mask band and the row's length) and ALiBi's slope and diagonal.
  const int g = lane >> 2, t4 = lane & 3;
  int key_lo[2], key_hi[2], diag[2];
  float slope[2];
  FLASH_SIGMOID_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    const int r = g + 8 * rr;
    key_lo[rr] = 1, key_hi[rr] = 0, diag[rr] = 0, slope[rr] = 0.f;  // padding rows see nothing
    if (r < rows) {
      const int token = (row0 + r) / group;
      const int head_idx = head_kv_idx * group + (row0 + r) % group;
      diag[rr] = token + offset;
      key_lo[rr] = has_left ? max(0, diag[rr] - kv.window_left) : 0;
      key_hi[rr] = has_right ? min(seqlen_k - 1, diag[rr] + kv.window_right) : seqlen_k - 1;
      if (pr.alibi_slopes != nullptr) {
        slope[rr] = pr.alibi_slopes[batch_idx * pr.alibi_stride_batch + head_idx] * ScoreFunction::kInputScale;
      }
    }
  }

  const StridedPtr& q = params.forward.q;
  const StridedPtr& k = params.forward.k;
  const StridedPtr& v = params.forward.v;
  const Element* k_base = static_cast<const Element*>(k.ptr);
  const Element* v_base = static_cast<const Element*>(v.ptr);
  const bool paged = kv.block_table != nullptr;
  // A cache row or page outside the cache (a value the host never checks on the GPU) is never read:
  // the last row or page is read in its place, so such a row's output is unspecified but no read
  // leaves k and v.
  const int64_t cache_row = min(static_cast<uint32_t>(kv.kv_batch_idx != nullptr ? kv.kv_batch_idx[batch_idx] : batch_idx),
                                static_cast<uint32_t>(kv.kv_rows - 1));
  const int32_t* pages = paged ? kv.block_table + batch_idx * kv.block_table_stride_batch : nullptr;
  const int page_shift = paged ? __ffs(kv.page_size) - 1 : 0;  // page_size is a power of two
  const int copy_chunk = tid % kChunks;
  const bool chunk_in_head = copy_chunk * 8 < pr.head_dim;

  // Q's rows: zeros past the chunk's rows and past head_dim (one cp.async group with tile 0's).
  for (int idx = tid; idx < kDecodeRows * kChunks; idx += kDecodeThreads) {
    const int r = idx / kChunks, c = idx % kChunks;
    const bool valid = r < rows && c * 8 < pr.head_dim;
    const Element* src = static_cast<const Element*>(q.ptr);
    if (valid) {
      const int token = (row0 + r) / group;
      const int head_idx = head_kv_idx * group + (row0 + r) % group;
      src += batch_idx * q.stride_batch + token * q.stride_seq + head_idx * q.stride_head + c * 8;
    }
    cp_async_16(smem_address(sQ + swizzled<kHeadDim>(r, c)), src, valid ? 16 : 0);
  }

  // Tile `tile` of the row's keys into `stage`. Only keys below seqlen_k are read (and only their
  // pages looked up: block_table entries past the row's length may be anything).
  auto load_tile = [&](int tile, int stage) {
    FLASH_SIGMOID_UNROLL
    for (int pass = 0; pass < kPasses; ++pass) {
      const int r = tid / kChunks + pass * kRowsPerPass;
      const int key = tile * kDecodeBlockN + r;
      const bool valid = key < seqlen_k && chunk_in_head;
      int64_t k_at = 0, v_at = 0;
      if (valid) {
        int64_t row = cache_row, slot = key;
        if (paged) {
          // A page outside the pool reads the last page instead (see cache_row): one unsigned min.
          row = min(static_cast<uint32_t>(pages[key >> page_shift]), static_cast<uint32_t>(kv.kv_rows - 1));
          slot = key & (kv.page_size - 1);
        }
        k_at = row * k.stride_batch + slot * k.stride_seq + head_kv_idx * k.stride_head + copy_chunk * 8;
        v_at = row * v.stride_batch + slot * v.stride_seq + head_kv_idx * v.stride_head + copy_chunk * 8;
      }
      const int at = stage * kTileElems + swizzled<kHeadDim>(r, copy_chunk);
      cp_async_16(smem_address(sK + at), k_base + k_at, valid ? 16 : 0);
      cp_async_16(smem_address(sV + at), v_base + v_at, valid ? 16 : 0);
    }
  };

  float o[kHeadDim / 8][4];  // this warp's O over its key slices: (row g | g + 8, d = 8 nt + 2 t4 + {0, 1})
  FLASH_SIGMOID_UNROLL
  for (int nt = 0; nt < kHeadDim / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

  FLASH_SIGMOID_UNROLL
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_tiles) load_tile(tile_begin + s, s);
    cp_async_commit();  // empty groups too: the wait below counts groups
  }

  const int key_slice = warp * 16;  // this warp's 16 keys of each tile
  // ldmatrix row addresses (lane l feeds row l % 8 of matrix l / 8; see the fragment comments).
  const int q_row = ((lane >> 3) & 1) * 8 + (lane & 7), q_chunk = lane >> 4;
  const int k_row = key_slice + (lane >> 4) * 8 + (lane & 7), k_chunk = (lane >> 3) & 1;
  const int v_row = key_slice + ((lane >> 3) & 1) * 8 + (lane & 7), v_chunk = lane >> 4;

  for (int it = 0; it < n_tiles; ++it) {
    // Tile it has landed for every thread; every warp is done with the stage refilled below
    // (it was read in iteration it - 1).
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if (it + kStages - 1 < n_tiles) load_tile(tile_begin + it + kStages - 1, (it + kStages - 1) % kStages);
    cp_async_commit();

    const int stage = it % kStages;
    const Element* sk = sK + stage * kTileElems;
    const Element* sv = sV + stage * kTileElems;

    // S (16 rows x 16 keys) = Q K^T. A: matrices (rows 0-7 | 8-15) x (d 0-7 | 8-15) of the k-step;
    // B: (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15).
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    FLASH_SIGMOID_UNROLL
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t a[4], b[4];
      ldmatrix_x4(a, smem_address(sQ + swizzled<kHeadDim>(q_row, 2 * kk + q_chunk)));
      ldmatrix_x4(b, smem_address(sk + swizzled<kHeadDim>(k_row, 2 * kk + k_chunk)));
      Op::mma(s[0], a, b[0], b[1]);
      Op::mma(s[1], a, b[2], b[3]);
    }

    // P = sigma(z), then the mask. s[nt][c] is row g + 8 (c / 2), key 8 nt + 2 t4 + c % 2 of the slice.
    const int key0 = (tile_begin + it) * kDecodeBlockN + key_slice + 2 * t4;
    float x[8];
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < 8; ++j) {
      const int rr = (j & 3) >> 1;
      const int key = key0 + (j >> 2) * 8 + (j & 1);
      const int distance = diag[rr] - key;
      x[j] = s[j >> 2][j & 3] * scale_x + bias_x - slope[rr] * static_cast<float>(distance < 0 ? -distance : distance);
    }
    ScoreFunction::template values_prescaled<8>(x);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < 8; ++j) {
      const int rr = (j & 3) >> 1;
      const int key = key0 + (j >> 2) * 8 + (j & 1);
      if (key < key_lo[rr] || key > key_hi[rr]) x[j] = 0.f;
    }
    // The accumulator layout of S is the A-operand layout of P (m16n8k16, keys as k).
    const uint32_t p[4] = {Op::pack(x[0], x[1]), Op::pack(x[2], x[3]), Op::pack(x[4], x[5]), Op::pack(x[6], x[7])};

    // O += P V. B (via .trans): (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15).
    FLASH_SIGMOID_UNROLL
    for (int dp = 0; dp < kHeadDim / 16; ++dp) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, smem_address(sv + swizzled<kHeadDim>(v_row, 2 * dp + v_chunk)));
      Op::mma(o[2 * dp], p, b[0], b[1]);
      Op::mma(o[2 * dp + 1], p, b[2], b[3]);
    }
  }

  // The warps' sums meet in shared memory (the pipeline's buffers: every copy has landed and every
  // warp has finished reading them after this barrier).
  cp_async_wait<0>();
  __syncthreads();
  float* sO = reinterpret_cast<float*>(smem_raw);  // (kDecodeWarps, kDecodeRows, kHeadDim)
  FLASH_SIGMOID_UNROLL
  for (int nt = 0; nt < kHeadDim / 8; ++nt) {
    const int d = nt * 8 + 2 * t4;
    *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g) * kHeadDim + d) = make_float2(o[nt][0], o[nt][1]);
    *reinterpret_cast<float2*>(sO + (warp * kDecodeRows + g + 8) * kHeadDim + d) = make_float2(o[nt][2], o[nt][3]);
  }
  __syncthreads();
  const StridedPtr& out = params.forward.out;
  for (int idx = tid; idx < kDecodeRows * kHeadDim / 4; idx += kDecodeThreads) {
    const int r = idx / (kHeadDim / 4), d = (idx % (kHeadDim / 4)) * 4;
    if (r >= rows || d >= pr.head_dim) continue;
    float4 acc = *reinterpret_cast<const float4*>(sO + r * kHeadDim + d);
    FLASH_SIGMOID_UNROLL
    for (int w = 1; w < kDecodeWarps; ++w) {
      const float4 part = *reinterpret_cast<const float4*>(sO + (w * kDecodeRows + r) * kHeadDim + d);
      acc.x += part.x, acc.y += part.y, acc.z += part.z, acc.w += part.w;
    }
    const int token = (row0 + r) / group;
    const int head_idx = head_kv_idx * group + (row0 + r) % group;
    if (params.num_splits == 1) {
      Element* dst = static_cast<Element*>(out.ptr) + batch_idx * out.stride_batch + token * out.stride_seq +
                     head_idx * out.stride_head + d;
      store4(dst, acc.x, acc.y, acc.z, acc.w);
    } else {
      const int64_t at = ((static_cast<int64_t>(split_idx) * pr.batch + batch_idx) * pr.seqlen_q + token) * pr.heads_q +
                         head_idx;
      *reinterpret_cast<float4*>(params.partial + at * pr.head_dim + d) = acc;
    }
  }
}

// out = sum over splits of the partial sums, in split order (deterministic), converted to Element.
// One thread per 4 output elements.
template <class Element>
__global__ void sm80_decode_combine_kernel(const DecodeParams params) {
  const ProblemParams& pr = params.forward.problem;
  const int quads = pr.head_dim / 4;
  const int64_t total = static_cast<int64_t>(pr.batch) * pr.seqlen_q * pr.heads_q * quads;
  const float4* partial = reinterpret_cast<const float4*>(params.partial);
  const StridedPtr& out = params.forward.out;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float4 acc = partial[idx];
    for (int s = 1; s < params.num_splits; ++s) {
      const float4 part = partial[s * total + idx];
      acc.x += part.x, acc.y += part.y, acc.z += part.z, acc.w += part.w;
    }
    int64_t rest = idx / quads;
    const int d = static_cast<int>(idx % quads) * 4;
    const int head_idx = static_cast<int>(rest % pr.heads_q);
    rest /= pr.heads_q;
    const int token = static_cast<int>(rest % pr.seqlen_q);
    const int batch_idx = static_cast<int>(rest / pr.seqlen_q);
    Element* dst = static_cast<Element*>(out.ptr) + batch_idx * out.stride_batch + token * out.stride_seq +
                   head_idx * out.stride_head + d;
    decode_detail::store4(dst, acc.x, acc.y, acc.z, acc.w);
  }
}

}  // namespace flash_sigmoid::sm80

// Layer: common kernel parts. The split-KV decode kernel's tile shape per head-dim bucket and its
// launch plan (docs/kvcache.md, "Step 2"): how many query rows one block packs, how many splits of
// the key range each (batch row, kv head, row chunk) gets, and the fp32 workspace the splits sum
// into. Host code only reads shapes and the device's SM count, never device memory, so a launch is
// fixed for fixed shapes (CUDA-graph safe). Used by the API (workspace size) and by the launcher.
// Does not own: the kernel (sm80/decode_kernel.hpp) or which buckets are built (kernel_table.py).
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/host_device.hpp"

namespace flash_sigmoid {

// One block computes kDecodeRows packed query rows (q tokens x query heads of one kv head: GQA
// packing, docs/kvcache.md) against kDecodeBlockN keys per pipeline stage, one 16-key slice per warp.
inline constexpr int kDecodeRows = 16;  // one m16n8k16 M tile
inline constexpr int kDecodeBlockN = 64;
inline constexpr int kDecodeWarps = kDecodeBlockN / 16;
inline constexpr int kDecodeThreads = 32 * kDecodeWarps;
// Packed rows (seqlen_q * heads_q / heads_kv) the decode kernel takes: up to four row chunks per kv
// head (each chunk's blocks read the same keys, which L2 mostly serves). Longer queries are a
// prefill, which the dense kernels serve better (the Python package takes its composed path).
inline constexpr int64_t kDecodeMaxRows = 4 * kDecodeRows;
// Enough splits that every (row, kv head) can spread over the SMs; more only adds partial sums.
inline constexpr int kDecodeMaxSplits = 128;

// cp.async stages per head-dim bucket: ~100-200 KB of K/V in flight per SM (HBM needs ~40 KB per
// SM at 4.8 TB/s and ~1 us latency, so the margin covers the compute between loads).
FLASH_SIGMOID_HOST_DEVICE constexpr int decode_stages(int head_dim_bucket) { return head_dim_bucket <= 64 ? 4 : 3; }

FLASH_SIGMOID_HOST_DEVICE constexpr int decode_smem_bytes(int head_dim_bucket) {
  return (kDecodeRows + decode_stages(head_dim_bucket) * 2 * kDecodeBlockN) * head_dim_bucket * 2;
}

// Blocks of the decode kernel resident per SM (228 KB of shared memory per SM on sm_90, 164 KB on
// sm_80; 1 KB per block is reserved by the hardware).
inline int decode_blocks_per_sm(int head_dim_bucket, int smem_per_sm_bytes) {
  const int per_block = decode_smem_bytes(head_dim_bucket) + 1024;
  const int blocks = smem_per_sm_bytes / per_block;
  return blocks < 1 ? 1 : blocks;
}

struct DecodePlan {
  int row_chunks = 1;  // ceil(seqlen_q * group / kDecodeRows)
  int num_splits = 1;  // splits of each row's key tiles; 1 writes the output directly
  size_t workspace_bytes = 0;  // fp32 [num_splits, batch, seqlen_q, heads_q, head_dim] when num_splits > 1
};

// The plan for a problem of `capacity` keys per row. requested_splits > 0 is the caller's
// (flash-attn's num_splits), clamped to [1, kDecodeMaxSplits]; 0 chooses from shapes only: the
// fewest splits whose blocks fill every resident slot of the GPU at least once and whose last wave
// is at least 90% full, within the limit of 4 key tiles per split. (Each split then covers
// 1/num_splits of its own row's tiles, counted on the device from that row's length.)
inline DecodePlan decode_plan(int64_t batch, int64_t seqlen_q, int64_t heads_q, int64_t heads_kv, int64_t head_dim,
                              int64_t capacity, int requested_splits, int sm_count, int blocks_per_sm) {
  DecodePlan plan;
  const int64_t rows = seqlen_q * (heads_q / heads_kv);
  plan.row_chunks = static_cast<int>((rows + kDecodeRows - 1) / kDecodeRows);
  const int64_t tiles = (capacity + kDecodeBlockN - 1) / kDecodeBlockN;
  int splits = requested_splits;
  if (splits <= 0) {
    const int64_t base = batch * heads_kv * plan.row_chunks;
    const int64_t slots = int64_t{sm_count} * blocks_per_sm;
    const int64_t most = tiles / 4 < kDecodeMaxSplits ? tiles / 4 : kDecodeMaxSplits;
    splits = 1;
    for (int64_t s = 1; s <= most && base > 0; ++s) {
      const int64_t blocks = base * s;
      const int64_t waves = (blocks + slots - 1) / slots;
      splits = static_cast<int>(s);
      if (blocks >= slots && 10 * blocks >= 9 * waves * slots) break;
    }
  }
  plan.num_splits = splits < 1 ? 1 : splits > kDecodeMaxSplits ? kDecodeMaxSplits : splits;
  if (plan.num_splits > 1) {
    plan.workspace_bytes = static_cast<size_t>(plan.num_splits) * static_cast<size_t>(batch * seqlen_q * heads_q) *
                           static_cast<size_t>(head_dim) * sizeof(float);
  }
  return plan;
}

}  // namespace flash_sigmoid

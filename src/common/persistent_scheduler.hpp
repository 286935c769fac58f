// Layer: common kernel parts. A persistent query-tile scheduler: a grid of at most one block per
// SM, each block taking the tiles blockIdx.x, blockIdx.x + gridDim.x, ... of one linear order.
//
// Without a right bound every tile of a head has about the same work, and the order is the one
// QueryTileScheduler's grid launches (tile_scheduler.hpp): query tile fastest, then query head,
// then batch, so blocks running together share a head's K and V in L2.
//
// Under a right bound (causal) the last query tile of a head has the most key tiles and the first
// the fewest, and a per-head order leaves the grid's last wave with long tiles (measured: the
// persistent kernel lost up to 27% causal with it). There the order is longest-first across heads,
// in sections: (head, batch) pairs are grouped into sections whose K and V fit in kL2Budget bytes,
// and within a section the query tiles go from the last to the first, all heads of the section at
// each step (FlashAttention-3's LPT order with L2 sections). The tail of the whole grid is then
// the short tiles of the last section.
//
// Owns: the order of the tiles and which block takes which. Does not own: what a tile is (the
// kernel's traits) or the work per tile.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

#include "base/host_device.hpp"
#include "common/block_range.hpp"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"

namespace flash_sigmoid {

template <int kBlockM>
struct PersistentQueryTileScheduler {
  using WorkTile = QueryTileWork;

  FLASH_SIGMOID_HOST_DEVICE static int64_t num_tiles(const ProblemParams& problem) {
    return int64_t(ceil_div_int(problem.seqlen_q, kBlockM)) * problem.heads_q * problem.batch;
  }

  // At most one block per SM of the current device (so every block is resident at once).
  static dim3 grid(const ProblemParams& problem, int num_sms) {
    const int64_t tiles = num_tiles(problem);
    return dim3(static_cast<unsigned>(tiles < num_sms ? tiles : num_sms));
  }

  // L2 bytes a section's K and V may take (the H100/H200 L2 holds 50/60 MB; the rest is left to
  // Q, O and the other kernels' traffic).
  static constexpr int64_t kL2Budget = int64_t(32) << 20;

  // (head, batch) pairs per section: as many as have their K and V (2-byte elements) in the budget,
  // at least one. Query heads of a GQA group share K and V but are counted apart (a bound, not exact).
  FLASH_SIGMOID_HOST_DEVICE static int64_t section_pairs(const ProblemParams& problem, int64_t pairs) {
    const int64_t kv_bytes = int64_t(2) * problem.seqlen_k * problem.head_dim * 2;
    int64_t section = kv_bytes > 0 ? kL2Budget / kv_bytes : pairs;
    if (section < 1) section = 1;
    return section < pairs ? section : pairs;
  }

#if defined(__CUDACC__)
  // The tile of linear index `tile` (tile < num_tiles).
  __device__ __forceinline__ static WorkTile decode(const ProblemParams& problem, int64_t tile) {
    const int m_blocks = ceil_div_int(problem.seqlen_q, kBlockM);
    int64_t head_batch;
    WorkTile w;
    if (problem.mask.kind == MaskKind::kRight) {
      const int64_t pairs = int64_t(problem.heads_q) * problem.batch;
      const int64_t section = section_pairs(problem, pairs);
      const int64_t first = tile / (section * m_blocks) * section;  // the section's first (head, batch) pair
      const int64_t width = pairs - first < section ? pairs - first : section;
      const int64_t within = tile - first * m_blocks;  // tiles before this one in its section
      w.m_block = m_blocks - 1 - static_cast<int>(within / width);
      head_batch = first + within % width;
    } else {
      head_batch = tile / m_blocks;
      w.m_block = m_blocks - 1 - static_cast<int>(tile - head_batch * m_blocks);
    }
    w.head_idx = static_cast<int>(head_batch % problem.heads_q);
    w.batch_idx = static_cast<int>(head_batch / problem.heads_q);
    w.kv_head_idx = w.head_idx / problem.group_size;
    return w;
  }
#endif
};

}  // namespace flash_sigmoid

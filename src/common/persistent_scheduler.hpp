// Layer: common kernel parts. A persistent query-tile scheduler: a grid of at most one block per
// SM, each block taking the tiles blockIdx.x, blockIdx.x + gridDim.x, ... of the same linear order
// that QueryTileScheduler's grid launches (tile_scheduler.hpp): query tile fastest, longest first
// (the last query tile of a head first, which under a causal mask has the most key tiles), then
// query head, then batch. Consecutive tiles share a head, so blocks running together share its K
// and V in L2, as the one-tile-per-block grid does.
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

#if defined(__CUDACC__)
  // The tile of linear index `tile` (tile < num_tiles).
  __device__ __forceinline__ static WorkTile decode(const ProblemParams& problem, int64_t tile) {
    const int m_blocks = ceil_div_int(problem.seqlen_q, kBlockM);
    const int64_t head_batch = tile / m_blocks;
    WorkTile w;
    w.m_block = m_blocks - 1 - static_cast<int>(tile - head_batch * m_blocks);
    w.head_idx = static_cast<int>(head_batch % problem.heads_q);
    w.batch_idx = static_cast<int>(head_batch / problem.heads_q);
    w.kv_head_idx = w.head_idx / problem.group_size;
    return w;
  }
#endif
};

}  // namespace flash_sigmoid

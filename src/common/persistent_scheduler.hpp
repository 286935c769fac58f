// Layer: common kernel parts. A persistent query-tile scheduler: a grid of at most one block per
// SM, each block taking its tiles of one linear order in turns (next_tile).
//
// Without a right bound every tile of a head has about the same work: block b takes the tiles b,
// b + blocks, ... of the order QueryTileScheduler's grid launches (tile_scheduler.hpp): query tile
// fastest, then query head, then batch, so blocks running together share a head's K and V in L2.
//
// Under a right bound (causal) query tile m of a head has about m + 1 key tiles, and every static
// assignment of single tiles leaves the blocks far apart: a stride over a longest-first order gave
// one block 27% more key tiles than another at S = 16k (that order lost up to 9% against the
// hardware's dynamic block scheduling), and alternating the direction of the rounds 31%. So under
// a right bound, once there are at least two tiles per block, a block takes tiles in pairs: the
// last and the first tile of a head, then the second-to-last and the second, ... Every pair of a
// square problem has the same work (packed sequences of different lengths: about the same), and a
// stride over the pairs balances the blocks to the last round's remainder (about 3% at the
// benchmark's shapes). Within a pair the long tile goes first.
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

  // Whether the blocks take tiles in pairs (a right bound, and two tiles per block or more).
  FLASH_SIGMOID_HOST_DEVICE static bool paired(const ProblemParams& problem, int blocks) {
    return problem.mask.kind == MaskKind::kRight && num_tiles(problem) >= 2 * int64_t(blocks);
  }

  // The linear index of the tile block `block` of `blocks` takes at its round-th turn or, where
  // that turn has none (the missing partner of an odd head's middle tile), at the next turn that
  // has one, advancing `round` to it; -1 when the block has no more tiles. Paired, a head's
  // ceil(m_blocks / 2) pairs take two indices each (the second of the middle pair of an odd count
  // is the missing one), so the indices run to 2 ceil(m_blocks / 2) per head.
  FLASH_SIGMOID_HOST_DEVICE static int64_t next_tile(const ProblemParams& problem, int64_t& round, int block,
                                                     int blocks) {
    if (!paired(problem, blocks)) {
      const int64_t tile = round * blocks + block;
      return tile < num_tiles(problem) ? tile : -1;
    }
    const int m_blocks = ceil_div_int(problem.seqlen_q, kBlockM);
    const int64_t per_head = 2 * int64_t((m_blocks + 1) / 2);
    const int64_t slots = per_head * problem.heads_q * problem.batch;
    for (;; ++round) {
      const int64_t slot = ((round >> 1) * blocks + block) * 2 + (round & 1);
      if (slot >= slots) return -1;
      if (slot % per_head != m_blocks) return slot;  // (== m_blocks: the missing partner)
    }
  }

  // The tile of linear index `tile` (from next_tile with the same number of blocks).
  FLASH_SIGMOID_HOST_DEVICE static WorkTile decode(const ProblemParams& problem, int64_t tile, int blocks) {
    const int m_blocks = ceil_div_int(problem.seqlen_q, kBlockM);
    int64_t head_batch;
    WorkTile w;
    if (paired(problem, blocks)) {
      const int64_t per_head = 2 * int64_t((m_blocks + 1) / 2);
      head_batch = tile / per_head;
      const int within = static_cast<int>(tile - head_batch * per_head);
      const int pair = within >> 1;
      w.m_block = (within & 1) ? pair : m_blocks - 1 - pair;
    } else {
      head_batch = tile / m_blocks;
      w.m_block = m_blocks - 1 - static_cast<int>(tile - head_batch * m_blocks);
    }
    w.head_idx = static_cast<int>(head_batch % problem.heads_q);
    w.batch_idx = static_cast<int>(head_batch / problem.heads_q);
    w.kv_head_idx = w.head_idx / problem.group_size;
    return w;
  }
};

}  // namespace flash_sigmoid

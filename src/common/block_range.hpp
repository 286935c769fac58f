// Layer: common kernel parts. Tile ranges derived from a MaskBand (policies/mask_band.hpp).
//
// Forward: for query tile m_block (rows [m_block*kBlockM, ...)), the key tiles [begin, end) that
// hold any visible key, split into three consecutive segments
//     [begin, interior_begin)        masked: some element of the tile is hidden, apply the mask
//     [interior_begin, interior_end) interior: every (row < seqlen_q, key) pair is visible, no mask
//     [interior_end, end)            masked again
// Backward: the same for key tile n_block over query tiles. Pairs past either length (the tails of
// partial tiles) count as hidden, so a partial tile on either side is never interior: kernels need
// not rely on zero-filled tails for correctness.
// Backward, too: the order in which a key tile visits (query head of its GQA group, query tile):
// rotated (default), or descending (the deterministic mode's ordered dQ additions).
// Does not own: threads, fragments, or how a kernel walks the segments.
#pragma once

#include "base/host_device.hpp"
#include "policies/mask_band.hpp"

namespace flash_sigmoid {

struct BlockRange {
  int begin = 0;
  int interior_begin = 0;
  int interior_end = 0;
  int end = 0;

  FLASH_SIGMOID_HOST_DEVICE bool empty() const { return end <= begin; }
};

FLASH_SIGMOID_HOST_DEVICE int ceil_div_int(int a, int b) { return (a + b - 1) / b; }
FLASH_SIGMOID_HOST_DEVICE int clamp_int(int x, int lo, int hi) { return x < lo ? lo : (x > hi ? hi : x); }

// The three segments, given the union [lo, hi) of visible indices over the tile's rows and the
// intersection [common_lo, common_hi) of them (visible from every row), in units of kBlock.
FLASH_SIGMOID_HOST_DEVICE BlockRange make_block_range(int lo, int hi, int common_lo, int common_hi, int block) {
  BlockRange r;
  if (hi <= lo) return r;  // nothing visible: empty range
  r.begin = lo / block;
  r.end = ceil_div_int(hi, block);
  r.interior_begin = clamp_int(ceil_div_int(common_lo, block), r.begin, r.end);
  r.interior_end = clamp_int(common_hi / block, r.interior_begin, r.end);
  return r;
}

// Key tiles of width kBlockN seen by query tile m_block of height kBlockM.
template <int kBlockM, int kBlockN, class Mask>
FLASH_SIGMOID_HOST_DEVICE BlockRange key_block_range(const Mask& mask, int m_block) {
  const int first_row = m_block * kBlockM;
  const int last_row = clamp_int(first_row + kBlockM, 0, mask.seqlen_q) - 1;
  if (last_row < first_row) return BlockRange{};
  // k_begin and k_end are non-decreasing in the row, so every row's interval lies inside
  // [k_begin(first), k_end(last)) (empty if every row is), and the keys every row sees are
  // [k_begin(last), k_end(first)).
  int lo = mask.k_begin(first_row);
  int hi = mask.k_end(last_row);
  int common_lo = mask.k_begin(last_row);
  int common_hi = mask.k_end(first_row);
  // A query tile cut short by seqlen_q has hidden rows: no key tile is interior to it.
  if (first_row + kBlockM > mask.seqlen_q) common_hi = common_lo;
  return make_block_range(lo, hi, common_lo, common_hi, kBlockN);
}

// Query tiles of height kBlockM that see key tile n_block of width kBlockN.
template <int kBlockM, int kBlockN, class Mask>
FLASH_SIGMOID_HOST_DEVICE BlockRange query_block_range(const Mask& mask, int n_block) {
  const int first_key = n_block * kBlockN;
  const int end_key = clamp_int(first_key + kBlockN, 0, mask.seqlen_k);
  if (end_key <= first_key) return BlockRange{};
  const int last_key = end_key - 1;
  int lo = mask.q_begin(first_key);
  int hi = mask.q_end(last_key);
  int common_lo = mask.q_begin(last_key);
  int common_hi = mask.q_end(first_key);
  // A key tile cut short by seqlen_k has hidden columns: no query tile is interior to it.
  if (first_key + kBlockN > mask.seqlen_k) common_hi = common_lo;
  return make_block_range(lo, hi, common_lo, common_hi, kBlockM);
}

// The dK/dV mainloops' flattened loop for key tile n_block: the group's query heads one after the
// other, each over every query tile of the (non-empty) range, rotated to start at
// range.begin + n_block % num_m and wrapping at range.end. Without the rotation every block of a
// head would start at the same query tile and add its dQ into the same workspace addresses at the
// same time, and same-address atomics serialize in L2. The order is fixed per key tile, so the
// dK/dV sums stay deterministic.
struct QueryTileOrder {
  struct Tile {  // one step of the loop
    int head_idx;
    int m_block;
    int m_count;  // query tiles of this head visited before this one
  };

  int begin;  // the range's query tiles [begin, end)
  int end;
  int num_m;
  int num_steps;  // group size * num_m
  int first_m_block;
  int first_head_idx;

  FLASH_SIGMOID_HOST_DEVICE QueryTileOrder(const BlockRange& range, int n_block, int group, int kv_head_idx)
      : begin(range.begin),
        end(range.end),
        num_m(range.end - range.begin),
        num_steps(group * num_m),
        first_m_block(range.begin + n_block % num_m),
        first_head_idx(kv_head_idx * group) {}

  FLASH_SIGMOID_HOST_DEVICE Tile first() const { return Tile{first_head_idx, first_m_block, 0}; }

  // The step after `tile` (after the last step: the first tile of a head past the group).
  FLASH_SIGMOID_HOST_DEVICE Tile next(const Tile& tile) const {
    Tile next{tile.head_idx, tile.m_block + 1 == end ? begin : tile.m_block + 1, tile.m_count + 1};
    if (next.m_count == num_m) {
      next.m_count = 0;
      next.m_block = first_m_block;
      ++next.head_idx;
    }
    return next;
  }
};

// The deterministic backward's loop for key tile n_block (common/dq_semaphore.hpp: each query
// tile's dQ additions in ascending key-tile order): the query tiles from the last to the first,
// and at each the group's query heads in order, the same order for every key tile. Tile (h, m) is
// step (end - 1 - m) * group + h; the ranges of a band end at non-decreasing query tiles as the key
// tile grows, so key tile n - 1 reaches every (h, m) no later than key tile n does, and n waits
// about one step in all (not one per tile, as with the rotation above, an ascending order under a
// causal mask, or the heads as the outer loop: under a causal mask a later key tile has fewer
// query tiles per head and would reach the next head's tiles first).
struct DescendingQueryTileOrder {
  using Tile = QueryTileOrder::Tile;

  int begin;
  int end;
  int num_m;
  int num_steps;
  int first_head_idx;
  int group;

  FLASH_SIGMOID_HOST_DEVICE DescendingQueryTileOrder(const BlockRange& range, int /*n_block*/, int group,
                                                     int kv_head_idx)
      : begin(range.begin),
        end(range.end),
        num_m(range.end - range.begin),
        num_steps(group * num_m),
        first_head_idx(kv_head_idx * group),
        group(group) {}

  FLASH_SIGMOID_HOST_DEVICE Tile first() const { return Tile{first_head_idx, end - 1, 0}; }

  // (m_count: here the query tiles visited before this one, over all heads' turns at them.)
  FLASH_SIGMOID_HOST_DEVICE Tile next(const Tile& tile) const {
    Tile next{tile.head_idx + 1, tile.m_block, tile.m_count};
    if (next.head_idx == first_head_idx + group) {
      next.head_idx = first_head_idx;
      --next.m_block;
      ++next.m_count;
    }
    return next;
  }
};

}  // namespace flash_sigmoid

// Layer: common kernel parts. Attention dropout on a thread's accumulator fragment: every element
// whose entry of the mask (policies/dropout.hpp) is "drop" becomes 0, for the GPU kernels of both
// families (issue 20, docs/dropout.md).
//
// Owns: the walk from a fragment's coordinates to the mask's blocks, lanes and bytes, and the
// sharing of one Philox call among the elements that read it. Does not own: the mask itself
// (policies/dropout.hpp), the rescale by the inverse keep rate (each kernel folds it where it is
// cheapest: into O, into dV and dP), or which tiles exist.
//
// The fragment is seen through its coordinate tensor, as apply_score_variant sees it
// (score_variant.hpp): every coordinate is the thread's base coordinate (element 0) plus a
// compile-time offset. Two walks:
//  - DropoutWalk::kM16n8: the fragment holds S (rows = queries, columns = keys) with the m16n8
//    accumulator's ownership (mma.sync atoms, or one warp's 16 rows of a wgmma accumulator): the
//    thread's base is row lane / 4 of a 16-row block and column 2 (lane % 4) of an 8-column group,
//    every offset is (8 a, 8 b + {0, 1}), and the key tile starts at a multiple of 32. The mask's
//    layout is that ownership, so the thread's own lane names its Philox stream, and which call and
//    byte an element reads is known at compile time: one call per 16 elements, none repeated.
//  - DropoutWalk::kGeneral: any fragment and tile origin (an S^T fragment through swapped
//    coordinates, as the sm90 backward's): each element's block, lane and byte are computed, and a
//    call is made whenever they differ from the previous element's (its 16 bytes are kept).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "policies/dropout.hpp"

namespace flash_sigmoid {

enum class DropoutWalk { kM16n8, kGeneral };

// Byte `byte` (a compile-time value after unrolling on the fast walk) of 16 bytes: the selects
// between words fold away when it is constant.
CUTE_DEVICE uint32_t dropout_byte_of(const uint32_t (&bytes)[4], uint32_t byte) {
  const uint32_t word = byte >> 2;
  const uint32_t w = word == 0 ? bytes[0] : (word == 1 ? bytes[1] : (word == 2 ? bytes[2] : bytes[3]));
  return (w >> (8 * (byte & 3))) & 0xFFu;
}

// Calls on_element(i, keep) for every element i of a thread's fragment, keep = whether the mask
// keeps its (query, key) entry.
//   coords      (row, col) of each element inside its tile (an identity tensor partitioned like
//               the fragment, or one whose coordinates are swapped to read (query, key) of S^T)
//   row_base    the tile's first query, col_base its first key (sequence positions)
//   bh          batch (sequence) * heads_q + query head
template <DropoutWalk kWalk, class CoordEngine, class CoordLayout, class OnElement>
CUTE_DEVICE void for_each_dropout_keep(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                       int col_base, const DropoutParams& dropout, uint32_t bh,
                                       OnElement&& on_element) {
  constexpr int kSize = decltype(cute::size(coords))::value;
  const int row0 = cute::get<0>(coords(0));
  const int col0 = cute::get<1>(coords(0));
  if constexpr (kWalk == DropoutWalk::kM16n8) {
    const uint32_t lane = threadIdx.x % 32;
    // The thread's base (query, key) less its lane's part: a 16-row block and a 32-key block start.
    const uint32_t q16 = static_cast<uint32_t>(row_base + row0) - lane / 4;
    const uint32_t k32 = static_cast<uint32_t>(col_base + col0) - 2 * (lane % 4);
    uint32_t bytes[4] = {0, 0, 0, 0};
    int cached = -1;  // (row block offset, key block offset) of `bytes`, a compile-time value
    CUTE_UNROLL
    for (int i = 0; i < kSize; ++i) {
      const int dq = cute::get<0>(coords(i)) - row0;  // 8 a
      const int dk = cute::get<1>(coords(i)) - col0;  // 8 b + {0, 1}
      const int block = (dq / 16) * 4096 + dk / 32;
      if (block != cached) {
        dropout_block_bytes(dropout, bh, q16 / 16 + static_cast<uint32_t>(dq / 16),
                            k32 / 32 + static_cast<uint32_t>(dk / 32), lane, bytes);
        cached = block;
      }
      const uint32_t byte = static_cast<uint32_t>(((dq % 16) / 8) * 8 + ((dk % 32) / 8) * 2 + dk % 2);
      on_element(i, dropout_byte_of(bytes, byte) >= dropout.threshold);
    }
  } else {
    // Two calls' bytes are kept, the most recent in slot 0: an S^T fragment alternates between two
    // lanes of the mask from one element to the next (its column pairs are query pairs).
    uint32_t bytes[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    uint64_t tag[2] = {~uint64_t(0), ~uint64_t(0)};
    CUTE_UNROLL
    for (int i = 0; i < kSize; ++i) {
      const uint32_t row = static_cast<uint32_t>(row_base + cute::get<0>(coords(i)));
      const uint32_t key = static_cast<uint32_t>(col_base + cute::get<1>(coords(i)));
      const uint32_t r = row % kDropoutBlockRows, c = key % kDropoutBlockKeys;
      const uint32_t lane = (r % 8) * 4 + (c % 8) / 2;
      const uint32_t byte = (r / 8) * 8 + (c / 8) * 2 + c % 2;
      // (row block, key block, lane) as one tag: positions are below 2^30 (validation), so the
      // blocks fit in 26 and 25 bits.
      const uint32_t rb = row / kDropoutBlockRows, kb = key / kDropoutBlockKeys;
      const uint64_t t = (uint64_t(rb) << 37) | (uint64_t(kb) << 5) | lane;
      if (t == tag[0]) {
      } else if (t == tag[1]) {
        CUTE_UNROLL
        for (int w = 0; w < 4; ++w) {
          const uint32_t x = bytes[0][w];
          bytes[0][w] = bytes[1][w];
          bytes[1][w] = x;
        }
        tag[1] = tag[0];
        tag[0] = t;
      } else {
        CUTE_UNROLL
        for (int w = 0; w < 4; ++w) bytes[1][w] = bytes[0][w];
        tag[1] = tag[0];
        dropout_block_bytes(dropout, bh, rb, kb, lane, bytes[0]);
        tag[0] = t;
      }
      on_element(i, dropout_byte_of(bytes[0], byte) >= dropout.threshold);
    }
  }
}

// The forward's use: acc(i) <- 0 where the entry is dropped (the caller scales O by the keep rate).
template <DropoutWalk kWalk, class AccEngine, class AccLayout, class CoordEngine, class CoordLayout>
CUTE_DEVICE void apply_dropout(cute::Tensor<AccEngine, AccLayout>& acc,
                               cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base, int col_base,
                               const DropoutParams& dropout, uint32_t bh) {
  static_assert(decltype(cute::size(acc))::value == decltype(cute::size(coords))::value,
                "one coordinate per accumulator element");
  for_each_dropout_keep<kWalk>(coords, row_base, col_base, dropout, bh,
                               [&](int i, bool keep) { acc(i) = keep ? acc(i) : 0.f; });
}

// The backward's use: P' = M P / q for dV and dZ = M dP / q * sigma'(P) for dQ and dK, from P and
// dZ formed without the mask (sigma' takes the undropped P): both scaled by rescale where kept,
// 0 where dropped.
template <DropoutWalk kWalk, class PEngine, class PLayout, class ZEngine, class ZLayout, class CoordEngine,
          class CoordLayout>
CUTE_DEVICE void apply_dropout_backward(cute::Tensor<PEngine, PLayout>& p, cute::Tensor<ZEngine, ZLayout>& dz,
                                        cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                        int col_base, const DropoutParams& dropout, uint32_t bh) {
  static_assert(decltype(cute::size(p))::value == decltype(cute::size(coords))::value &&
                    decltype(cute::size(dz))::value == decltype(cute::size(coords))::value,
                "one coordinate per accumulator element");
  for_each_dropout_keep<kWalk>(coords, row_base, col_base, dropout, bh, [&](int i, bool keep) {
    const float m = keep ? dropout.rescale : 0.f;
    p(i) *= m;
    dz(i) *= m;
  });
}

}  // namespace flash_sigmoid

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
// (score_variant.hpp): an identity tensor (or a swapped one) partitioned like the fragment, whose
// layout is static. Each element's offset from element 0 is read from that layout at compile time,
// so which Philox call and byte an element reads is fixed when the kernel is compiled, the calls are
// independent (the scheduler interleaves their multiply chains) and none is made twice. Two ownerships:
//  - DropoutWalk::kM16n8: the fragment holds S (rows = queries, columns = keys) with the m16n8
//    accumulator's ownership (mma.sync atoms, or one warp's 16 rows of a wgmma accumulator): the
//    thread's base is row lane / 4 of a 16-row block and column 2 (lane % 4) of an 8-column group,
//    every offset is (8 a, 8 b + {0, 1}). The mask's layout is that ownership: the thread's own
//    lane names its Philox stream and every call serves 16 of its elements. The key base (the
//    thread's 8-column group) may sit at any multiple of kKeyAlign inside a 32-key block (tiles of
//    80 or 112 keys: 16; warps side by side along the keys: 8): the walk is instantiated once per
//    possible position and the warp-uniform position picks one.
//  - DropoutWalk::kM16n8Transposed: the fragment holds S^T (rows = keys, columns = queries) with the
//    m16n8 ownership, read through swapped coordinates (the sm90 backward's): the thread holds keys
//    k0, k0 + 8 and query pairs 2 (lane % 4) + {0, 1} of every 8 queries. Its elements of one
//    16-query block read two lanes' streams (query parity) and 4 bytes of each; the thread and its
//    partner lane ^ 4 need the same two streams, so each computes one and they swap 4 bytes with one
//    shuffle: one call per 8 elements (the other 8 bytes of a call are the keys of the neighbouring
//    warp, which computes the same call).
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include <cute/tensor.hpp>

#include "policies/dropout.hpp"

namespace flash_sigmoid {

enum class DropoutWalk { kM16n8, kM16n8Transposed };

namespace detail {

// Element I's (row, col) offset from element 0 of a coordinate tensor of layout L. The coordinate
// tensors are identity tensors (or swapped ones) partitioned with static layouts, so the offset is a
// compile-time value: every block, lane and byte below is fixed when the kernel is compiled.
template <class L, int I>
CUTE_HOST_DEVICE constexpr auto fragment_offset() {
  return cute::make_arithmetic_tuple(cute::Int<0>{}, cute::Int<0>{}) + L{}(cute::Int<I>{});
}
template <class L, int I>
inline constexpr int kOffsetRow = std::decay_t<decltype(cute::get<0>(fragment_offset<L, I>()))>::value;
template <class L, int I>
inline constexpr int kOffsetCol = std::decay_t<decltype(cute::get<1>(fragment_offset<L, I>()))>::value;

// 1 + the largest (row offset / kRows) and (col offset + kShift) / kCols over a fragment's elements:
// the extent of the grid of mask blocks it reads.
template <class L, int kRows, int... I>
constexpr int fragment_row_blocks(std::integer_sequence<int, I...>) {
  int m = 0;
  ((m = kOffsetRow<L, I> / kRows > m ? kOffsetRow<L, I> / kRows : m), ...);
  return m + 1;
}
template <class L, int kCols, int kShift, int... I>
constexpr int fragment_col_blocks(std::integer_sequence<int, I...>) {
  int m = 0;
  ((m = (kOffsetCol<L, I> + kShift) / kCols > m ? (kOffsetCol<L, I> + kShift) / kCols : m), ...);
  return m + 1;
}

// Whether byte kByte (0..3) of word w is at least the threshold: the byte is compared in place
// against the threshold shifted to it (thresholds[b] = threshold << 8 b), no extraction.
template <int kByte>
CUTE_DEVICE bool dropout_word_keeps(uint32_t w, const uint32_t (&thresholds)[4]) {
  if constexpr (kByte == 3) {
    return w >= thresholds[3];
  } else {
    return (w & (0xFFu << (8 * kByte))) >= thresholds[kByte];
  }
}

CUTE_DEVICE void dropout_thresholds(const DropoutParams& dropout, uint32_t (&thresholds)[4]) {
  CUTE_UNROLL
  for (int b = 0; b < 4; ++b) thresholds[b] = dropout.threshold << (8 * b);
}

// Calls f(Int<shift>{}) for the multiple of kAlign below 32 that equals `residue` (warp-uniform).
template <int kAlign, int kShift = 0, class F>
CUTE_DEVICE void dispatch_key_shift(uint32_t residue, F&& f) {
  static_assert(kAlign == 8 || kAlign == 16 || kAlign == 32, "key bases at multiples of 8, 16 or 32");
  if constexpr (kShift + kAlign >= 32) {
    f(cute::Int<kShift>{});
  } else if (residue == kShift) {
    f(cute::Int<kShift>{});
  } else {
    dispatch_key_shift<kAlign, kShift + kAlign>(residue, f);
  }
}

// kM16n8 with the thread's 8-column group at kShift keys into the 32-key block k32 (see above).
//   q16, k32   the thread's 16-row block start and 32-key block start; lane its Philox stream
template <int kShift, class CoordLayout, class OnElement>
CUTE_DEVICE void walk_m16n8(uint32_t q16, uint32_t k32, uint32_t lane, const DropoutParams& dropout, uint32_t bh,
                            OnElement& on_element) {
  constexpr int kSize = decltype(cute::size(CoordLayout{}))::value;
  using Seq = std::make_integer_sequence<int, kSize>;
  constexpr int kRowBlocks = fragment_row_blocks<CoordLayout, kDropoutBlockRows>(Seq{});
  constexpr int kKeyBlocks = fragment_col_blocks<CoordLayout, kDropoutBlockKeys, kShift>(Seq{});
  // One call per block of the grid; a block no element reads is never used, and its call is
  // removed as dead code.
  uint32_t bytes[kRowBlocks * kKeyBlocks][4];
  CUTE_UNROLL
  for (int s = 0; s < kRowBlocks * kKeyBlocks; ++s) {
    dropout_block_bytes(dropout, bh, q16 / 16 + static_cast<uint32_t>(s / kKeyBlocks),
                        k32 / 32 + static_cast<uint32_t>(s % kKeyBlocks), lane, bytes[s]);
  }
  uint32_t thresholds[4];
  dropout_thresholds(dropout, thresholds);
  cute::for_each(cute::make_int_sequence<kSize>{}, [&](auto i) {
    constexpr int kI = decltype(i)::value;
    constexpr int dq = kOffsetRow<CoordLayout, kI>;           // 8 a
    constexpr int dk = kOffsetCol<CoordLayout, kI> + kShift;  // 8 b + {0, 1}, from the 32-key block start
    static_assert(dq >= 0 && dk >= kShift, "element 0 is the fragment's first row and first column");
    constexpr int kSlot = (dq / 16) * kKeyBlocks + dk / 32;
    constexpr int kByte = ((dq % 16) / 8) * 8 + ((dk % 32) / 8) * 2 + dk % 2;
    on_element(kI, dropout_word_keeps<kByte % 4>(bytes[kSlot][kByte / 4], thresholds));
  });
}

// kM16n8Transposed (see above).
template <class CoordEngine, class CoordLayout, class OnElement>
CUTE_DEVICE void walk_m16n8_transposed(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                       int col_base, const DropoutParams& dropout, uint32_t bh,
                                       OnElement& on_element) {
  constexpr int kSize = decltype(cute::size(coords))::value;
  using Seq = std::make_integer_sequence<int, kSize>;
  constexpr int kBlocks = fragment_row_blocks<CoordLayout, kDropoutBlockRows>(Seq{});
  static_assert(fragment_col_blocks<CoordLayout, 16, 0>(Seq{}) == 1,
                "the thread's keys are k0 and k0 + 8 of one 16-key half of a mask block");
  // Element 0 is the thread's first key row and first query: query 2c of a 16-query block, key
  // 16 h + 2x + y of a 32-key block (c = lane % 4, 2x + y = lane / 4, h = the warp's half).
  const uint32_t q0 = static_cast<uint32_t>(row_base + cute::get<0>(coords(0)));
  const uint32_t k0 = static_cast<uint32_t>(col_base + cute::get<1>(coords(0)));
  const uint32_t c = (q0 % 8) / 2, x = (k0 % 8) / 2, y = k0 % 2, h = (k0 % 32) / 16;
  // The stream of query parity y: this thread's call; its partner (lane ^ 4) computes parity 1 - y.
  const uint32_t lane = 8 * c + 4 * y + x;
  // A call's bytes of this warp's half: words h (queries 0..7 of the block) and 2 + h (8..15), byte
  // 2 v + y' (v: key k0 + 8 v; y': the reading thread's y). Packed as [y'0 v0, y'0 v1, ...] per word.
  const uint32_t mine_sel = y ? 0x7531u : 0x6420u;
  const uint32_t theirs_sel = y ? 0x6420u : 0x7531u;
  uint32_t by_parity[kBlocks][2];  // [block][query parity]: bytes (u, v) at 2 u + v
  CUTE_UNROLL
  for (int b = 0; b < kBlocks; ++b) {
    uint32_t words[4];
    dropout_block_bytes(dropout, bh, q0 / 16 + static_cast<uint32_t>(b), k0 / 32, lane, words);
    const uint32_t lo = h ? words[1] : words[0];
    const uint32_t hi = h ? words[3] : words[2];
    const uint32_t mine = __byte_perm(lo, hi, mine_sel);
    const uint32_t theirs = __shfl_xor_sync(0xffffffffu, __byte_perm(lo, hi, theirs_sel), 4);
    by_parity[b][0] = y ? theirs : mine;
    by_parity[b][1] = y ? mine : theirs;
  }
  uint32_t thresholds[4];
  dropout_thresholds(dropout, thresholds);
  cute::for_each(cute::make_int_sequence<kSize>{}, [&](auto i) {
    constexpr int kI = decltype(i)::value;
    constexpr int dq = kOffsetRow<CoordLayout, kI>;  // 16 block + 8 u + 2 j + e
    constexpr int dk = kOffsetCol<CoordLayout, kI>;  // 8 v
    static_assert(dq >= 0 && dk >= 0, "element 0 is the fragment's first row and first column");
    constexpr int kByte = 2 * ((dq % 16) / 8) + dk / 8;
    on_element(kI, dropout_word_keeps<kByte>(by_parity[dq / 16][dq % 2], thresholds));
  });
}

}  // namespace detail

// Calls on_element(i, keep) for every element i of a thread's fragment, keep = whether the mask
// keeps its (query, key) entry.
//   coords      (query, key) of each element inside its tile (an identity tensor partitioned like
//               the fragment, or one whose coordinates are swapped to read S^T)
//   row_base    the tile's first query, col_base its first key (sequence positions)
//   bh          batch (sequence) * heads_q + query head
//   kKeyAlign   kM16n8: the multiple of 8 keys at which a thread's 8-column groups may start inside
//               a 32-key block (32: always at its start)
template <DropoutWalk kWalk, int kKeyAlign = 32, class CoordEngine, class CoordLayout, class OnElement>
CUTE_DEVICE void for_each_dropout_keep(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                       int col_base, const DropoutParams& dropout, uint32_t bh,
                                       OnElement&& on_element) {
  if constexpr (kWalk == DropoutWalk::kM16n8) {
    const uint32_t q0 = static_cast<uint32_t>(row_base + cute::get<0>(coords(0)));
    const uint32_t k0 = static_cast<uint32_t>(col_base + cute::get<1>(coords(0)));
    const uint32_t lane = 4 * (q0 % 8) + (k0 % 8) / 2;
    const uint32_t q16 = q0 - q0 % 16;
    const uint32_t k8 = k0 - k0 % 8;
    const uint32_t k32 = k8 - k8 % 32;
    detail::dispatch_key_shift<kKeyAlign>(k8 % 32, [&](auto shift) {
      detail::walk_m16n8<decltype(shift)::value, CoordLayout>(q16, k32, lane, dropout, bh, on_element);
    });
  } else {
    detail::walk_m16n8_transposed(coords, row_base, col_base, dropout, bh, on_element);
  }
}

// The forward's use: acc(i) <- 0 where the entry is dropped (the caller scales O by the keep rate).
template <DropoutWalk kWalk, int kKeyAlign = 32, class AccEngine, class AccLayout, class CoordEngine,
          class CoordLayout>
CUTE_DEVICE void apply_dropout(cute::Tensor<AccEngine, AccLayout>& acc,
                               cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base, int col_base,
                               const DropoutParams& dropout, uint32_t bh) {
  static_assert(decltype(cute::size(acc))::value == decltype(cute::size(coords))::value,
                "one coordinate per accumulator element");
  for_each_dropout_keep<kWalk, kKeyAlign>(coords, row_base, col_base, dropout, bh,
                                          [&](int i, bool keep) { acc(i) = keep ? acc(i) : 0.f; });
}

// The backward's use: P' = M P / q for dV and dZ = M dP / q * sigma'(P) for dQ and dK, from P and
// dZ formed without the mask (sigma' takes the undropped P): both scaled by rescale where kept,
// 0 where dropped.
template <DropoutWalk kWalk, int kKeyAlign = 32, class PEngine, class PLayout, class ZEngine, class ZLayout,
          class CoordEngine, class CoordLayout>
CUTE_DEVICE void apply_dropout_backward(cute::Tensor<PEngine, PLayout>& p, cute::Tensor<ZEngine, ZLayout>& dz,
                                        cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                        int col_base, const DropoutParams& dropout, uint32_t bh) {
  static_assert(decltype(cute::size(p))::value == decltype(cute::size(coords))::value &&
                    decltype(cute::size(dz))::value == decltype(cute::size(coords))::value,
                "one coordinate per accumulator element");
  for_each_dropout_keep<kWalk, kKeyAlign>(coords, row_base, col_base, dropout, bh, [&](int i, bool keep) {
    const float m = keep ? dropout.rescale : 0.f;
    p(i) *= m;
    dz(i) *= m;
  });
}

}  // namespace flash_sigmoid

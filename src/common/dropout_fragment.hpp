// Layer: common kernel parts. Attention dropout on a thread's score fragment: which of its elements
// the mask (policies/dropout.hpp) drops, applied to the packed pairs of Element that the kernels
// round P and dZ into, for the GPU kernels of both families (issue 20, docs/dropout.md).
//
// Owns: the walk from a fragment's coordinates to the mask's blocks, lanes and bytes, the sharing of
// one Philox call among the elements that read it, and the keep test on packed bytes. Does not own:
// the mask itself (policies/dropout.hpp), the rescale by the inverse keep rate (the kernels fold it
// into O, and into dV, dK and dQ where they leave the backward: the masked values here are
// unscaled), or which tiles exist.
//
// The fragment is seen through its coordinate tensor, as apply_score_variant sees it
// (score_variant.hpp): an identity tensor (or a swapped one) partitioned like the fragment, whose
// layout is static. Each element's offset from element 0 is read from that layout at compile time,
// so which Philox call and byte an element reads is fixed when the kernel is compiled, the calls are
// independent (the scheduler interleaves their multiply chains) and none is made twice. Two
// ownerships:
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
//
// Keep test. The mask keeps an entry when its byte b >= threshold t, i.e. when b + (256 - t)
// carries out of the byte. Four bytes at once: the low 7 bits' sums cannot carry into the next
// byte, and the carry out of bit 7 is the majority of the two bits 7 and the carry into it, so an
// AND, an add and one LOP3 flag a whole 32-bit word (bit 7 of each byte: keep). A pair of Element
// values (one 32-bit register) is then masked by one PRMT, which replicates two flag bytes' sign
// bits into 16-bit halves, and one AND: per 4 elements 3 + 2 + 2 instructions, against a compare
// and a select per fp32 element before the rounding.
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

// prmt.b32 in its default mode: selector nibbles with bit 3 set replicate the chosen byte's bit 7.
CUTE_DEVICE uint32_t byte_permute(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
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

// Calls f(Int<J>{}, mask) for every pair J of a kSize-element fragment whose flag words are
// `words` and whose element I sits in byte Map::template kByte<I> of word Map::template kWord<I>:
// mask holds 0xFFFF in the half of each element of the pair (elements 2 J, 2 J + 1) that is kept.
template <class Map, int kSize, int kWords, class F>
CUTE_DEVICE void for_each_pair_mask(const uint32_t (&words)[kWords], F&& f) {
  static_assert(kSize % 2 == 0, "elements in pairs");
  cute::for_each(cute::make_int_sequence<kSize / 2>{}, [&](auto j) {
    constexpr int kJ = decltype(j)::value;
    static_assert(Map::template kValid<2 * kJ> && Map::template kValid<2 * kJ + 1>,
                  "offsets from the fragment's first element (its first row and first column) are >= 0");
    constexpr uint32_t kLo = 8u | Map::template kByte<2 * kJ>;
    constexpr uint32_t kHi = 8u | (4u + Map::template kByte<2 * kJ + 1>);
    f(j, byte_permute(words[Map::template kWord<2 * kJ>], words[Map::template kWord<2 * kJ + 1>],
                      kLo | (kLo << 4) | (kHi << 8) | (kHi << 12)));
  });
}

// Whether element I's offsets from element 0 are non-negative (element 0 is the fragment's first
// row and first column, as the walks assume).
template <class L, int I>
inline constexpr bool kOffsetsFromOrigin = kOffsetRow<L, I> >= 0 && kOffsetCol<L, I> >= 0;

// Where element I of an m16n8 fragment (coordinate layout L, key base kShift keys into its 32-key
// block) finds its flag: word kWord of the flags (kKeyBlocks mask blocks per 16 rows, 4 words per
// block), byte kByte of it.
template <class L, int kShift, int kKeyBlocks>
struct M16n8Map {
  template <int I>
  static constexpr bool kValid = kOffsetsFromOrigin<L, I>;
  template <int I>
  static constexpr int kBlockByte = ((kOffsetRow<L, I> % 16) / 8) * 8 + (((kOffsetCol<L, I> + kShift) % 32) / 8) * 2 +
                                    (kOffsetCol<L, I> + kShift) % 2;
  template <int I>
  static constexpr int kWord =
      ((kOffsetRow<L, I> / 16) * kKeyBlocks + (kOffsetCol<L, I> + kShift) / 32) * 4 + kBlockByte<I> / 4;
  template <int I>
  static constexpr int kByte = kBlockByte<I> % 4;
};

// The transposed ownership's (see above): the word of query parity, byte (key half, 8-key group).
template <class L>
struct M16n8TransposedMap {
  template <int I>
  static constexpr bool kValid = kOffsetsFromOrigin<L, I>;
  template <int I>
  static constexpr int kWord = (kOffsetRow<L, I> / 16) * 2 + kOffsetRow<L, I> % 2;
  template <int I>
  static constexpr int kByte = 2 * ((kOffsetRow<L, I> % 16) / 8) + kOffsetCol<L, I> / 8;
};

}  // namespace detail

// The keep flags of one thread's fragment of one tile: compute() once per tile (the Philox calls),
// then mask_pairs() on each register tensor of Element rounded from a fragment of that layout
// (values 2 J and 2 J + 1 packed in register J, as convert_fragment and the relu pack leave them).
//   CoordLayout  the layout of the fragment's coordinate tensor (see above)
//   kKeyAlign    kM16n8: the multiple of 8 keys at which a thread's 8-column groups may start inside
//                a 32-key block (32: always at its start)
template <DropoutWalk kWalk, class CoordLayout, int kKeyAlign = 32>
struct DropoutMask;

template <class CoordLayout, int kKeyAlign>
struct DropoutMask<DropoutWalk::kM16n8, CoordLayout, kKeyAlign> {
  static constexpr int kSize = decltype(cute::size(CoordLayout{}))::value;
  using Seq = std::make_integer_sequence<int, kSize>;
  static constexpr int kRowBlocks = detail::fragment_row_blocks<CoordLayout, kDropoutBlockRows>(Seq{});
  // Storage for the largest key shift's grid (the grid grows with the shift).
  static constexpr int kKeyBlocks = detail::fragment_col_blocks<CoordLayout, kDropoutBlockKeys, 32 - kKeyAlign>(Seq{});
  uint32_t words[kRowBlocks * kKeyBlocks * 4];
  uint32_t key_shift;  // the thread's 8-column group's offset in its 32-key block (warp-uniform)

  //   coords     (query, key) of each element inside its tile
  //   row_base   the tile's first query, col_base its first key (sequence positions)
  //   bh         batch (sequence) * heads_q + query head
  template <class CoordEngine>
  CUTE_DEVICE void compute(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base, int col_base,
                           const DropoutParams& dropout, uint32_t bh) {
    const uint32_t q0 = static_cast<uint32_t>(row_base + cute::get<0>(coords(0)));
    const uint32_t k0 = static_cast<uint32_t>(col_base + cute::get<1>(coords(0)));
    const uint32_t lane = 4 * (q0 % 8) + (k0 % 8) / 2;
    const uint32_t q16 = q0 / 16;
    const uint32_t k8 = k0 - k0 % 8;
    const uint32_t k32 = k8 / 32;
    key_shift = k8 % 32;
    const DropoutComplement complement(dropout);
    detail::dispatch_key_shift<kKeyAlign>(key_shift, [&](auto shift) {
      // One call per block this shift's elements read; the rest of the storage stays unused.
      constexpr int kShift = decltype(shift)::value;
      constexpr int kBlocks = detail::fragment_col_blocks<CoordLayout, kDropoutBlockKeys, kShift>(Seq{});
      CUTE_UNROLL
      for (int r = 0; r < kRowBlocks; ++r) {
        CUTE_UNROLL
        for (int b = 0; b < kBlocks; ++b) {
          uint32_t bytes[4];
          dropout_block_bytes(dropout, bh, q16 + static_cast<uint32_t>(r), k32 + static_cast<uint32_t>(b), lane, bytes);
          CUTE_UNROLL
          for (int w = 0; w < 4; ++w) words[(r * kKeyBlocks + b) * 4 + w] = dropout_keep_flags(bytes[w], complement);
        }
      }
    });
  }

  // Every element kept: the other side of a branch that gives compute() a basic block of its own
  // (kernels with dropout are launched only with p > 0, so it is not taken). key_shift is left as
  // it is: with every word all ones each shift's map gives the same mask, and setting it changed
  // the D 256 forward's code (SASS compared with the H200-tested build).
  CUTE_DEVICE void keep_all() {
    CUTE_UNROLL
    for (int w = 0; w < kRowBlocks * kKeyBlocks * 4; ++w) words[w] = 0xFFFFFFFFu;
  }

  // Dropped elements of the packed fragment `packed` become 0.
  template <class Engine, class Layout>
  CUTE_DEVICE void mask_pairs(cute::Tensor<Engine, Layout>& packed) const {
    static_assert(decltype(cute::size(packed))::value == kSize, "one coordinate per element");
    uint32_t* pairs = reinterpret_cast<uint32_t*>(packed.data());
    detail::dispatch_key_shift<kKeyAlign>(key_shift, [&](auto shift) {
      using Map = detail::M16n8Map<CoordLayout, decltype(shift)::value, kKeyBlocks>;
      detail::for_each_pair_mask<Map, kSize>(words, [&](auto j, uint32_t mask) { pairs[decltype(j)::value] &= mask; });
    });
  }
};

template <class CoordLayout, int kKeyAlign>
struct DropoutMask<DropoutWalk::kM16n8Transposed, CoordLayout, kKeyAlign> {
  static constexpr int kSize = decltype(cute::size(CoordLayout{}))::value;
  using Seq = std::make_integer_sequence<int, kSize>;
  static constexpr int kBlocks = detail::fragment_row_blocks<CoordLayout, kDropoutBlockRows>(Seq{});
  static_assert(detail::fragment_col_blocks<CoordLayout, 16, 0>(Seq{}) == 1,
                "the thread's keys are k0 and k0 + 8 of one 16-key half of a mask block");
  uint32_t words[kBlocks * 2];  // [16-query block][query parity]: bytes (u, v) at 2 u + v

  template <class CoordEngine>
  CUTE_DEVICE void compute(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base, int col_base,
                           const DropoutParams& dropout, uint32_t bh) {
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
    const DropoutComplement complement(dropout);
    CUTE_UNROLL
    for (int b = 0; b < kBlocks; ++b) {
      uint32_t bytes[4];
      dropout_block_bytes(dropout, bh, q0 / 16 + static_cast<uint32_t>(b), k0 / 32, lane, bytes);
      const uint32_t lo = h ? bytes[1] : bytes[0];
      const uint32_t hi = h ? bytes[3] : bytes[2];
      const uint32_t mine = dropout_keep_flags(__byte_perm(lo, hi, mine_sel), complement);
      const uint32_t theirs =
          __shfl_xor_sync(0xffffffffu, dropout_keep_flags(__byte_perm(lo, hi, theirs_sel), complement), 4);
      words[2 * b] = y ? theirs : mine;
      words[2 * b + 1] = y ? mine : theirs;
    }
  }

  template <class Engine, class Layout>
  CUTE_DEVICE void mask_pairs(cute::Tensor<Engine, Layout>& packed) const {
    static_assert(decltype(cute::size(packed))::value == kSize, "one coordinate per element");
    uint32_t* pairs = reinterpret_cast<uint32_t*>(packed.data());
    detail::for_each_pair_mask<detail::M16n8TransposedMap<CoordLayout>, kSize>(
        words, [&](auto j, uint32_t mask) { pairs[decltype(j)::value] &= mask; });
  }
};

// kKeyAlign for key tiles of block_n keys whose threads' 8-column groups start where the tile does:
// tiles start at multiples of block_n, so inside a 32-key mask block they sit at multiples of the
// largest of 32, 16, 8 that divides block_n.
constexpr int dropout_key_align(int block_n) {
  return block_n % 32 == 0 ? 32 : (block_n % 16 == 0 ? 16 : 8);
}

// A tile's dropout when a kernel has none: nothing masked (callers compute flags only under
// `if constexpr (kDropout)`).
struct NoDropoutMask {
  template <class Packed>
  CUTE_DEVICE void mask_pairs(Packed&) const {}
};

// DropoutMask for a kernel built with dropout (kDropout), NoDropoutMask otherwise; Coords: the
// fragment's coordinate tensor type.
template <bool kDropout, DropoutWalk kWalk, class Coords, int kKeyAlign = 32>
using DropoutMaskOf =
    std::conditional_t<kDropout, DropoutMask<kWalk, typename Coords::layout_type, kKeyAlign>, NoDropoutMask>;

// The forward's use (P masked right after its rounding to Element) and the backward's (P for dV, dZ
// for dQ and dK): a tile's flags, then each rounded fragment masked. The kept values stay unscaled.
template <DropoutWalk kWalk, int kKeyAlign = 32, class CoordEngine, class CoordLayout, class... Packed>
CUTE_DEVICE void apply_dropout_packed(cute::Tensor<CoordEngine, CoordLayout> const& coords, int row_base,
                                      int col_base, const DropoutParams& dropout, uint32_t bh, Packed&... packed) {
  DropoutMask<kWalk, CoordLayout, kKeyAlign> mask;
  mask.compute(coords, row_base, col_base, dropout, bh);
  (mask.mask_pairs(packed), ...);
}

}  // namespace flash_sigmoid

// Layer: common kernel parts. Accumulator fragments seen through coordinates: the score variant of
// DESIGN §1 (scale, bias, ALiBi, score function, mask) applied to every element a thread holds, and
// the fp32 -> operand-dtype conversion of a fragment.
//
// Owns: how a policy bundle (ScoreVariant) is evaluated on a fragment, given a coordinate tensor
// that names the (row, col) of each accumulator element inside its tile, and the mask band in a
// fragment's own coordinates (FragmentBand). The coordinate tensor is the caller's identity tensor
// partitioned exactly like the accumulator (partition_C of an sm80 TiledMMA, or of an sm90
// warpgroup MMA), so nothing here knows an instruction or a thread layout.
// Does not own: the policies themselves (policies/), tile ranges (block_range.hpp), or which tiles
// need the mask (the caller passes kApplyMask).
//
// Contract on rows past seqlen_q: they are not masked (neither here nor, in interior tiles, by
// anyone), so their p is some finite value. Callers keep such rows out of every result: the
// forward never stores them, and P @ V mixes no rows; a backward must zero-fill their Q and dO.
#pragma once

#include <cmath>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

#include "common/params.hpp"
#include "policies/alibi.hpp"
#include "policies/mask_band.hpp"

namespace flash_sigmoid {

// The per-(batch, head) constants of the forward score, folded once: the score function's input
// scale is multiplied into scale, bias and the ALiBi slope, so each element costs one FFMA before
// the score function (two with ALiBi).
// kDropout_: the call applies attention dropout (a kernel built with it reads the seed and offset
// from device memory in make(), and applies the mask with common/dropout_fragment.hpp).
template <bool kEnabled>
struct DropoutTerm {
  static constexpr bool kDropout = false;
  CUTE_HOST_DEVICE static DropoutTerm make(const ProblemParams&, int, int) { return {}; }
};
template <>
struct DropoutTerm<true> {
  static constexpr bool kDropout = true;
  DropoutParams params;
  uint32_t bh = 0;  // the mask's (batch or sequence) * heads_q + head
  CUTE_HOST_DEVICE static DropoutTerm make(const ProblemParams& problem, int batch_idx, int head_idx) {
    DropoutTerm t;
    t.params = problem_dropout(problem);
    t.bh = static_cast<uint32_t>(batch_idx) * static_cast<uint32_t>(problem.heads_q) + static_cast<uint32_t>(head_idx);
    return t;
  }
};

template <class ScoreFunction_, bool kHasAlibi, class Mask_, bool kDropout_ = false>
struct ScoreVariant {
  using ScoreFunction = ScoreFunction_;
  using Mask = Mask_;
  using AlibiTerm = Alibi<kHasAlibi>;
  using Dropout = DropoutTerm<kDropout_>;
  static constexpr bool kDropout = kDropout_;

  float scale = 0.f;  // scale * kInputScale
  float bias = 0.f;   // bias * kInputScale
  AlibiTerm alibi;    // slope * kInputScale, offset = seqlen_k - seqlen_q + problem.alibi_offset
  Mask mask;
  Dropout dropout;

  CUTE_HOST_DEVICE static ScoreVariant make(const ProblemParams& problem, const Mask& mask, int batch_idx,
                                            int head_idx) {
    constexpr float kInputScale = ScoreFunction::kInputScale;
    ScoreVariant v;
    v.scale = problem.scale * kInputScale;
    // The mask holds the batch entry's own lengths (SeqlenInfo): a packed sequence's bias and ALiBi
    // distances are its own.
    v.bias = sequence_bias(problem, batch_idx, mask.seqlen_k) * kInputScale;
    v.alibi = AlibiTerm::make(problem.alibi_slopes, problem.alibi_stride_batch, batch_idx, head_idx,
                              mask.seqlen_k - mask.seqlen_q + problem.alibi_offset, kInputScale);
    v.mask = mask;
    v.dropout = Dropout::make(problem, batch_idx, head_idx);
    return v;
  }

  // The score function's input x = z * kInputScale for accumulator value s of a pair at signed
  // distance q_idx + offset - k_idx (given as a float; only read with ALiBi): one FFMA, two with
  // ALiBi. Masking is not applied here: see apply_score_variant.
  CUTE_HOST_DEVICE float input(float s, float signed_distance) const {
    float x = s * scale + bias;
    if constexpr (AlibiTerm::kEnabled) {
      // Alibi::term(q_idx, k_idx) = -slope * |q_idx + offset - k_idx|, from the float distance.
      x = x - alibi.slope * fabsf(signed_distance);
    }
    return x;
  }
};

// A MaskBand seen from one (query tile, key tile) pair, in the coordinates of one thread's
// fragment: element (dq, dk) (offsets from the thread's first element, at query q0 and key k0) is
// visible iff
//     kHasLeft  -> dk - dq >= diag_lo      (k_idx >= q_idx + offset - left)
//     kHasRight -> dk - dq <= diag_hi      (k_idx <= q_idx + offset + right)
//     dk < key_limit                       (k_idx < seqlen_k)
// which is MaskBand::visible with q_idx = q0 + dq, k_idx = k0 + dk, less its q_idx < seqlen_q
// clause (see the contract at the top of this file). dk - dq and dk are
// compile-time constants per element, so each clause is one compare against an immediate, and the
// three bounds are all that stays live across elements.
template <class Mask>
struct FragmentBand {
  int diag_lo = 0;
  int diag_hi = 0;
  int key_limit = 0;

  CUTE_HOST_DEVICE static FragmentBand make(const Mask& mask, int q0, int k0) {
    FragmentBand b;
    const int diag0 = q0 + mask.offset() - k0;  // k_idx - q_idx - offset at (dq, dk) = (0, 0) is -diag0
    if constexpr (Mask::kHasLeft) b.diag_lo = diag0 - mask.left;
    if constexpr (Mask::kHasRight) b.diag_hi = diag0 + mask.right;
    b.key_limit = mask.seqlen_k - k0;
    return b;
  }

  CUTE_HOST_DEVICE bool visible(int dq, int dk) const {
    bool ok = dk < key_limit;
    if constexpr (Mask::kHasLeft) ok = ok && dk - dq >= diag_lo;
    if constexpr (Mask::kHasRight) ok = ok && dk - dq <= diag_hi;
    return ok;
  }
};

// acc(i) <- sigma(variant.input(acc(i))), then 0 where the pair is hidden (kApplyMask), for every
// element of a thread's accumulator fragment.
//   acc     (MMA, MMA_M, MMA_N) fp32 scores of one (query tile, key tile) pair
//   coords  same shape, (row, col) of each element inside the tile (identity tensor, partitioned
//           like acc); q_base / k_base: the tile's first query row / key.
//
// Every coordinate is the thread's base coordinate (element 0) plus a static offset, so after
// unrolling dq = row(i) - row(0) and dk = col(i) - col(0) are compile-time constants; the mask
// (FragmentBand) and ALiBi are written in those terms.
//  - Masking sets p to exactly 0 after the score function (a select, never a product). Masked
//    elements go through it too and the result is discarded: zero-filled keys give finite scores,
//    and the keys a TMA tile reads past a packed sequence's end (the next sequence's, any value,
//    NaN included) give scores whose p is replaced by 0 whatever it was.
//  - ALiBi: the distance is d0 + (dq - dk) in float, d0 converted once per tile. That avoids one
//    int->float conversion per element, which issues at 16/clk/SM on sm80 and sm90 (the rate of
//    the score function's MUFU). Exact while |distance| < 2^24.
// kForDerivative: the backward's evaluation, accurate enough for derivative_from_value(p)
// (ScoreFunction::values_prescaled_for_derivative).
template <bool kApplyMask, bool kForDerivative = false, class Variant, class AccEngine, class AccLayout,
          class CoordEngine, class CoordLayout>
CUTE_HOST_DEVICE void apply_score_variant(cute::Tensor<AccEngine, AccLayout>& acc,
                                          cute::Tensor<CoordEngine, CoordLayout> const& coords, int q_base,
                                          int k_base, Variant const& variant) {
  static_assert(decltype(cute::size(acc))::value == decltype(cute::size(coords))::value,
                "one coordinate per accumulator element");
  const int row0 = cute::get<0>(coords(0));
  const int col0 = cute::get<1>(coords(0));
  const int q0 = q_base + row0;
  const int k0 = k_base + col0;
  const float distance0 = static_cast<float>(q0 + variant.alibi.offset - k0);
  const auto band = FragmentBand<typename Variant::Mask>::make(variant.mask, q0, k0);
  // kChunk elements at a time through the score function's N-value form, whose stages issue
  // kChunk independent instructions back to back (policies/sigmoid.hpp).
  constexpr int kSize = decltype(cute::size(acc))::value;
  constexpr int kChunk = kSize % 8 == 0 ? 8 : (kSize % 4 == 0 ? 4 : 1);
  CUTE_UNROLL
  for (int c = 0; c < kSize; c += kChunk) {
    float x[kChunk];
    CUTE_UNROLL
    for (int j = 0; j < kChunk; ++j) {
      const int dq = cute::get<0>(coords(c + j)) - row0;
      const int dk = cute::get<1>(coords(c + j)) - col0;
      x[j] = variant.input(acc(c + j), distance0 + static_cast<float>(dq - dk));
    }
    if constexpr (kForDerivative) {
      Variant::ScoreFunction::values_prescaled_for_derivative(x);
    } else {
      Variant::ScoreFunction::values_prescaled(x);
    }
    CUTE_UNROLL
    for (int j = 0; j < kChunk; ++j) {
      float p = x[j];
      if constexpr (kApplyMask) {
        const int dq = cute::get<0>(coords(c + j)) - row0;
        const int dk = cute::get<1>(coords(c + j)) - col0;
        p = band.visible(dq, dk) ? p : 0.f;
      }
      acc(c + j) = p;
    }
  }
}

// A register fragment converted element-wise to To (round to nearest), in pairs so that sm80+
// issues one packed convert (F2FP) per two values. The result is a compact fragment of src's
// shape; values i and i+1 (i even) must be neighbours in src's logical order, as the two columns
// of an accumulator pair are.
template <class To, class Engine, class Layout>
CUTE_HOST_DEVICE auto convert_fragment(cute::Tensor<Engine, Layout> const& src) {
  using From = typename Engine::value_type;
  constexpr int kSize = decltype(cute::size(src))::value;
  static_assert(kSize % 2 == 0, "converted in pairs");
  cute::Tensor dst = cute::make_tensor<To>(cute::shape(src));
  cutlass::NumericArrayConverter<To, From, 2, cutlass::FloatRoundStyle::round_to_nearest> convert;
  CUTE_UNROLL
  for (int i = 0; i < kSize; i += 2) {
    cutlass::Array<From, 2> in;
    in[0] = src(i);
    in[1] = src(i + 1);
    cutlass::Array<To, 2> out = convert(in);
    dst(i) = out[0];
    dst(i + 1) = out[1];
  }
  return dst;
}

}  // namespace flash_sigmoid

// Layer: sm90. What both Hopper forward mainloops (fwd_mainloop.hpp, fwd_ws_mainloop.hpp) do with
// a tile's scores between the two products: P = sigma(variant(S)) in the S accumulator, masked only
// on the key tiles of a range's edges, then P rounded to Element into the registers that are the A
// operand of P V.
//
// Owns: the choice of the masked or unmasked evaluation per key tile, and where dropout's flags
// are computed and applied. Does not own: the score variant (common/score_variant.hpp) or the
// products and their waits (the mainloops).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "common/block_range.hpp"
#include "common/dropout_fragment.hpp"
#include "common/score_variant.hpp"

namespace flash_sigmoid::sm90 {

// The forward's dropout of one tile's fragment (NoDropoutMask without dropout): each warp's 16 rows
// of the wgmma accumulator have the m16n8 ownership; key tiles of a multiple of 32 keys start on a
// mask block, the 80- and 112-key tiles of D 256 and 192 on one or halfway.
template <class Variant, class Coords, int kBlockN>
using ForwardDropoutMask = DropoutMaskOf<Variant::kDropout, DropoutWalk::kM16n8, Coords, dropout_key_align(kBlockN)>;

// acc_s (MMA, MMA_M, MMA_N) of key tile n_block of query tile m_block <- P; coords: the tile's
// identity tensor partitioned like acc_s. With dropout, also the tile's keep flags into
// dropout_mask (while the previous tile's P V runs), which round_probabilities_into applies.
template <int kBlockM, int kBlockN, class Variant, class AccS, class Coords, class Mask>
CUTE_DEVICE void forward_probabilities(AccS& acc_s, Coords const& coords, BlockRange const& range, int m_block,
                                       int n_block, Variant const& variant, Mask& dropout_mask) {
  cute::warpgroup_fence_operand(acc_s);
  if (n_block < range.interior_begin || n_block >= range.interior_end) {
    apply_score_variant<true>(acc_s, coords, m_block * kBlockM, n_block * kBlockN, variant);
  } else {
    apply_score_variant<false>(acc_s, coords, m_block * kBlockM, n_block * kBlockN, variant);
  }
  if constexpr (Variant::kDropout) {
    // After the score function, in a basic block of its own: code that shares a block with the
    // wait for P V is sunk past that wait by the compiler, onto the path to the next product (there
    // it cost the D 128 forward a quarter more time than here, H200; docs/dropout.md).
    if (variant.dropout.params.enabled()) {
      dropout_mask.compute(coords, m_block * kBlockM, n_block * kBlockN, variant.dropout.params, variant.dropout.bh);
    } else {
      dropout_mask.keep_all();
    }
  }
}

// Two fp32 values rounded to a packed pair of Element with negative values (and -0, -inf) made 0:
// cvt.rn.relu, one instruction (F2FP.RELU) as the plain pack is. NaN stays NaN.
template <class Element>
CUTE_DEVICE uint32_t relu_pack_pair(float lo, float hi) {
  uint32_t packed;
  if constexpr (cute::is_same_v<Element, cutlass::bfloat16_t>) {
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
  } else {
    static_assert(cute::is_same_v<Element, cutlass::half_t>, "fp16 or bf16");
    asm("cvt.rn.relu.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
  }
  return packed;
}

// P (fp32, the S accumulator) rounded to Element into rP, a register tensor of the same shape, and
// the tile's dropped entries made 0 (dropout_mask: the flags forward_probabilities computed);
// kReluPack (the score function's): negative values become 0 in the same instruction
// (SigmoidViaExp2Relu's -inf for sigma < 2^-128).
template <class Element, bool kReluPack = false, class AccP, class RegP, class Mask>
CUTE_DEVICE void round_probabilities_into(AccP const& acc_p, RegP& rP, Mask const& dropout_mask) {
  if constexpr (kReluPack) {
    static_assert(decltype(cute::size(rP))::value % 2 == 0, "packed in pairs");
    uint32_t* pairs = reinterpret_cast<uint32_t*>(rP.data());
    CUTE_UNROLL
    for (int j = 0; j < cute::size(rP); j += 2) pairs[j / 2] = relu_pack_pair<Element>(acc_p(j), acc_p(j + 1));
  } else {
    cute::Tensor converted = convert_fragment<Element>(acc_p);
    CUTE_UNROLL
    for (int j = 0; j < cute::size(rP); ++j) rP(j) = converted(j);
  }
  dropout_mask.mask_pairs(rP);
}

}  // namespace flash_sigmoid::sm90

// Layer: sm90. What both Hopper forward mainloops (fwd_mainloop.hpp, fwd_ws_mainloop.hpp) do with
// a tile's scores between the two products: P = sigma(variant(S)) in the S accumulator, masked only
// on the key tiles of a range's edges, then P rounded to Element into the registers that are the A
// operand of P V.
//
// Owns: the choice of the masked or unmasked evaluation per key tile. Does not own: the score
// variant (common/score_variant.hpp) or the products and their waits (the mainloops).
#pragma once

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/score_variant.hpp"

namespace flash_sigmoid::sm90 {

// acc_s (MMA, MMA_M, MMA_N) of key tile n_block of query tile m_block <- P; coords: the tile's
// identity tensor partitioned like acc_s.
template <int kBlockM, int kBlockN, class Variant, class AccS, class Coords>
CUTE_DEVICE void forward_probabilities(AccS& acc_s, Coords const& coords, BlockRange const& range, int m_block,
                                       int n_block, Variant const& variant) {
  cute::warpgroup_fence_operand(acc_s);
  if (n_block < range.interior_begin || n_block >= range.interior_end) {
    apply_score_variant<true>(acc_s, coords, m_block * kBlockM, n_block * kBlockN, variant);
  } else {
    apply_score_variant<false>(acc_s, coords, m_block * kBlockM, n_block * kBlockN, variant);
  }
}

// P (fp32, the S accumulator) rounded to Element into rP, a register tensor of the same shape.
template <class Element, class AccP, class RegP>
CUTE_DEVICE void round_probabilities_into(AccP const& acc_p, RegP& rP) {
  cute::Tensor converted = convert_fragment<Element>(acc_p);
  CUTE_UNROLL
  for (int j = 0; j < cute::size(rP); ++j) rP(j) = converted(j);
}

}  // namespace flash_sigmoid::sm90

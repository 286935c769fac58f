// Layer: sm90. Building blocks that the Hopper kernels share: one warpgroup MMA batch over a
// product's k-steps, and the GMMA accumulator -> register A operand relayout.
//
// Owns: instruction sequences over CuTe tensors whose shapes the caller chose. Does not own: tile
// shapes or layouts, which tiles are loaded when, or any barrier or wait: the caller waits for a
// batch (warpgroup_wait<N>) before it reads the accumulator or reuses A's registers.
#pragma once

#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

namespace flash_sigmoid::sm90 {

// Issues acc (+)= A B over the product's k-steps as one wgmma batch of the calling warpgroup and
// commits it; the caller waits (warpgroup_wait<N>) before reading acc or touching A's registers.
// kZeroInit: the first k-step overwrites acc (no clear needed).
template <bool kZeroInit, class TiledMma, class FragA, class FragB, class Acc>
CUTE_DEVICE void wgmma_product(TiledMma& tiled_mma, FragA const& a, FragB const& b, Acc& acc) {
  using namespace cute;
  constexpr int kSteps = decltype(size<2>(a))::value;
  static_assert(kSteps == decltype(size<2>(b))::value, "A and B cover the same K extent");
  warpgroup_fence_operand(acc);
  warpgroup_arrive();
  if constexpr (kZeroInit) tiled_mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    cute::gemm(tiled_mma, a(_, _, s), b(_, _, s), acc);
    tiled_mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(acc);
}

// A GMMA accumulator ((2, 2, N/8), MMA_M, MMA_N) of 64 x N seen as the register A operand of a
// 64 x ? x 16 GMMA with K extent N: ((2, 2, 2), MMA_M, N/16 * MMA_N). Values (column pair, row
// half, column group j) of C are values (k pair, row half, k half) of k-step j / 2, so no data moves.
template <class Layout>
CUTE_HOST_DEVICE constexpr auto wg_accumulator_as_operand_a(Layout const& acc) {
  using namespace cute;
  static_assert(decltype(rank(acc))::value == 3, "(MMA, MMA_M, MMA_N)");
  static_assert(decltype(rank<0>(acc))::value == 3 && decltype(size<0, 0>(acc))::value == 2 &&
                    decltype(size<0, 1>(acc))::value == 2 && decltype(size<0, 2>(acc))::value % 2 == 0,
                "GMMA fp32 accumulator: (2, 2, N/8) values per thread");
  auto split = logical_divide(get<0>(acc), Shape<Underscore, Underscore, _2>{});  // (2, 2, (2, N/16))
  return make_layout(make_layout(get<0>(split), get<1>(split), get<2, 0>(split)), get<1>(acc),
                     coalesce(make_layout(get<2, 1>(split), get<2>(acc))));
}

}  // namespace flash_sigmoid::sm90

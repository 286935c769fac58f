// Layer: sm80. Building blocks that the backward kernels share (and that any sm80 kernel may use):
// the two shapes of a software-pipelined mma.sync product (both operands from shared memory
// through ldmatrix, or A already in registers) and the accumulator -> A-operand register relayout
// of m16n8k16. Global tiles and their copies are common to both families (common/gmem_tile.hpp).
//
// Owns: instruction sequences over CuTe tensors whose shapes the caller chose. Does not own: tile
// shapes or layouts (bwd_traits.hpp), which tiles are loaded when, or any barrier: every function
// here is warp-local or thread-local, and the caller says in its comments which barrier makes the
// shared memory it reads valid.
//
// sm80/fwd_mainloop.hpp has its own forms of the two products (gemm_smem_smem, rolled;
// gemm_regs_smem) and of the cp.async tile copy, tuned for the forward's register budget; it shares
// the accumulator relayout.
#pragma once

#include <cute/tensor.hpp>

#include "common/gmem_tile.hpp"

namespace flash_sigmoid::sm80 {

// A gemm_ss_pipelined step hook that does nothing.
struct NoStepWork {
  CUTE_DEVICE void operator()(int /*step*/, int /*steps*/) const {}
};

// acc += A B^T with both operands read from shared memory by ldmatrix. The fragments of k-step s+1
// are loaded while the MMAs of step s issue, so the tensor cores do not wait on shared memory.
//   a_smem / b_smem: the copy's source partitions (CPY, CPY_M|N, CPY_K);
//   a_frag / b_frag: the MMA fragments (MMA, MMA_M|N, MMA_K); a_view / b_view: the same registers
//   seen by the copy (retile_D);
//   step_work(s, steps): called after the MMAs of k-step s are issued (s and steps are constants
//   after unrolling), to interleave other instructions with the product (e.g. global reductions).
template <class TiledMma, class Acc, class SmemA, class FragA, class ViewA, class CopyA, class SmemB, class FragB,
          class ViewB, class CopyB, class StepWork = NoStepWork>
CUTE_DEVICE void gemm_ss_pipelined(TiledMma const& tiled_mma, Acc& acc, SmemA const& a_smem, FragA& a_frag,
                                   ViewA&& a_view, CopyA const& copy_a, SmemB const& b_smem, FragB& b_frag,
                                   ViewB&& b_view, CopyB const& copy_b, StepWork const& step_work = StepWork{}) {
  using namespace cute;
  constexpr int kSteps = decltype(size<2>(a_frag))::value;
  static_assert(kSteps == decltype(size<2>(b_frag))::value, "A and B cover the same K extent");
  static_assert(kSteps == decltype(size<2>(a_smem))::value && kSteps == decltype(size<2>(b_smem))::value,
                "the ldmatrix partitions cover the same K extent as the MMA fragments");
  copy(copy_a, a_smem(_, _, 0), a_view(_, _, 0));
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    if (s + 1 < kSteps) {
      copy(copy_a, a_smem(_, _, s + 1), a_view(_, _, s + 1));
      copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, s + 1));
    }
    gemm(tiled_mma, a_frag(_, _, s), b_frag(_, _, s), acc);
    step_work(s, kSteps);
  }
}

// acc += A B^T with A already in registers and B read from shared memory, pipelined as above.
template <class TiledMma, class Acc, class FragA, class SmemB, class FragB, class ViewB, class CopyB>
CUTE_DEVICE void gemm_rs_pipelined(TiledMma const& tiled_mma, Acc& acc, FragA const& a_frag, SmemB const& b_smem,
                                   FragB& b_frag, ViewB&& b_view, CopyB const& copy_b) {
  using namespace cute;
  constexpr int kSteps = decltype(size<2>(a_frag))::value;
  static_assert(kSteps == decltype(size<2>(b_frag))::value, "A and B cover the same K extent");
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    if (s + 1 < kSteps) copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, s + 1));
    gemm(tiled_mma, a_frag(_, _, s), b_frag(_, _, s), acc);
  }
}

// The m16n8k16 accumulator of two adjacent n8 atoms holds, per thread, exactly the registers of one
// k16 step of the A operand (C values (col pair, row half) of atoms 2j and 2j+1 are A values
// (k pair, row half, k half) of step j), so a product's C becomes the next product's A with a new
// layout and no data movement: ((2,2), MMA_M, MMA_N) -> ((2,2,2), MMA_M, MMA_N/2).
template <class Layout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_operand_a(Layout const& acc) {
  using namespace cute;
  static_assert(decltype(rank(acc))::value == 3, "(MMA, MMA_M, MMA_N)");
  static_assert(decltype(size<0>(acc))::value == 4, "m16n8 fp32 accumulator: 4 values per atom");
  static_assert(decltype(size<2>(acc))::value % 2 == 0, "n8 atoms pair up into k16 steps");
  auto split = logical_divide(acc, Shape<Underscore, Underscore, _2>{});  // ((2,2), MMA_M, (2, MMA_N/2))
  return make_layout(make_layout(get<0, 0>(split), get<0, 1>(split), get<2, 0>(split)), get<1>(split),
                     get<2, 1>(split));
}

}  // namespace flash_sigmoid::sm80

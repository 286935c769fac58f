// Layer: sm90. The Hopper forward's epilogue: the fp32 O accumulator of one consumer warpgroup
// (64 query rows), rounded to Element (round to nearest; fp16 overflow gives inf, DESIGN §1) and
// stored straight from registers: each thread's two adjacent columns as one 32-bit store, predicated
// on rows < seqlen_q and columns < head_dim. (Staging through shared memory for 16-byte stores would
// need a barrier between the two consumer warpgroups, which otherwise never wait for each other.)
//
// Owns: the conversion and the predication. Does not own: how O was accumulated (fwd_mainloop.hpp).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "sm80/common_mma.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits>
struct Sm90FwdEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // acc_o: a TiledMmaO accumulator of consumer thread ctid (0 .. kNConsumerThreads - 1).
  template <class AccO>
  CUTE_DEVICE static void store(AccO const& acc_o, const ForwardParams& params, int m_block, int head_idx,
                                int batch_idx, int ctid) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    const ProblemParams& problem = params.problem;
    Tensor rO = convert_fragment<Element>(acc_o);  // (MMA, MMA_M, MMA_HEAD_DIM)
    Tensor gO = sm80::gmem_rows_tile<kBlockM, kHeadDim, Element>(params.out, batch_idx, head_idx, m_block * kBlockM);
    typename Traits::TiledMmaO mma_o;
    auto thr_o = mma_o.get_thread_slice(ctid);
    Tensor tOgO = thr_o.partition_C(gO);                                                          // (MMA, MMA_M, MMA_HEAD_DIM)
    Tensor tOcO = thr_o.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));  // (MMA, MMA_M, MMA_HEAD_DIM)
    static_assert(decltype(size<0, 0>(tOgO))::value == 2, "accumulator values 2j, 2j+1 are adjacent columns");
    const int row_limit = problem.seqlen_q - m_block * kBlockM;
    CUTE_UNROLL
    for (int i = 0; i < size(rO); i += 2) {
      // Columns come in even pairs and head_dim is a multiple of 8, so a pair is whole or absent.
      if (get<0>(tOcO(i)) < row_limit && get<1>(tOcO(i)) < problem.head_dim) {
        cutlass::Array<Element, 2> pair;
        pair[0] = rO(i);
        pair[1] = rO(i + 1);
        *reinterpret_cast<cutlass::Array<Element, 2>*>(&tOgO(i)) = pair;
      }
    }
  }
};

}  // namespace flash_sigmoid::sm90

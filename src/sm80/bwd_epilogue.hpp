// Layer: sm80. Where the deterministic backward's dQ leaves the registers: dQ = scale * acc_dq
// (times dropout's inverse keep rate) of one query tile, rounded to Element and stored through Q's
// shared-memory buffer as whole 16-byte vectors, predicated on rows < seqlen_q and columns <
// head_dim.
//
// The other stores of the backward are common to both families: dK and dV
// (common/dkdv_epilogue.hpp) and, in the default mode, the dQ workspace's atomics and convert
// kernel (common/dq_accum.hpp). Does not own: how acc_dq was computed (bwd_mainloop.hpp) or which
// block stores which tile (bwd_kernel.hpp).
#pragma once

#include <cute/tensor.hpp>

#include "common/gmem_tile.hpp"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"
#include "sm80/bwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// Deterministic mode: dQ = scale * acc_dq (and dropout's inverse keep rate) of one query tile,
// through Q's shared-memory buffer.
template <class DqTraits>
struct Sm80BwdDqEpilogue {
  using Element = typename DqTraits::Element;
  static constexpr int kBlockM = DqTraits::kBlockM;
  static constexpr int kHeadDim = DqTraits::kHeadDim;

  template <class AccDq>
  CUTE_DEVICE static void store(AccDq& acc_dq, typename DqTraits::SharedStorage& smem, const BackwardParams& params,
                                int m_block, int head_idx, int batch_idx, SeqlenInfo const& seqlen, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;
    const float dq_scale = backward_dq_dk_scale(problem);  // with dropout's inverse keep rate
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= dq_scale;
    Tensor sdQ = make_tensor(make_smem_ptr(smem.q.data()), typename DqTraits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
    Tensor gdQ = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.dq, batch_idx, head_idx,
                                                            seqlen.offset_q + m_block * kBlockM);
    // Every warp has finished reading Q (and any cp.async into it has landed: the mainloop's last
    // wait) before Q's buffer is overwritten.
    __syncthreads();
    AccumulatorTileStore<DqTraits, typename DqTraits::TiledMma, kBlockM>::store(
        acc_dq, sdQ, gdQ, seqlen.seqlen_q - m_block * kBlockM, problem.head_dim, tidx);
  }
};

}  // namespace flash_sigmoid::sm80

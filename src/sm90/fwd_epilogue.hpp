// Layer: sm90. The Hopper forward's epilogue: the fp32 O accumulator of one query tile, rounded to
// Element (round to nearest; fp16 overflow gives inf, DESIGN §1), staged in Q's swizzled
// shared-memory buffer in the accumulator's partition, then stored as 16-byte vectors predicated
// on rows < seqlen_q and columns < head_dim.
//
// Owns: the order of the stores and the barrier between them. Does not own: how O was accumulated
// (fwd_mainloop.hpp) or the copies' instruction sequences (common/gmem_tile.hpp).
#pragma once

#include <cute/tensor.hpp>

#include "common/params.hpp"
#include "common/gmem_tile.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits>
struct Sm90FwdEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // The caller guarantees that no thread still reads Q's buffer and no cp.async still writes it
  // (the mainloop's end, or no mainloop at all for an empty key range).
  template <class AccO>
  CUTE_DEVICE static void store(AccO const& acc_o, typename Traits::SharedStorage& smem, const ForwardParams& params,
                                int m_block, int head_idx, int batch_idx, SeqlenInfo const& seqlen, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;
    Tensor sO = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
    Tensor gO = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.out, batch_idx, head_idx,
                                                           seqlen.offset_q + m_block * kBlockM);
    AccumulatorTileStore<Traits, typename Traits::TiledMmaO, kBlockM>::store(
        acc_o, sO, gO, seqlen.seqlen_q - m_block * kBlockM, problem.head_dim, tidx);
  }
};

}  // namespace flash_sigmoid::sm90

// Layer: sm80. The forward epilogue: the fp32 O accumulator of one query tile to global memory as
// Element, through shared memory so that global stores are whole 16-byte vectors.
//
// Owns: the conversion of O (round to nearest; fp16 overflow gives inf, DESIGN §1), the register ->
// shared -> global path, and the predication that writes exactly rows < seqlen_q and columns
// < head_dim. Does not own: how O was accumulated (fwd_mainloop.hpp) or where the tile lies in
// global memory (the kernel passes gO).
#pragma once

#include <cute/tensor.hpp>

#include "common/gmem_tile.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

template <class Traits>
struct Sm80FwdEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // acc_o (MMA, MMA_M, MMA_HEAD_DIM) fp32; gO (BLK_M, HEAD_DIM). q_rows: valid rows of the tile
  // (may exceed kBlockM); head_dim: valid columns. O goes through Q's shared-memory buffer: the
  // caller guarantees no thread still reads Q and no cp.async still writes it (the mainloop's last
  // barrier B, or no mainloop at all for an empty key range).
  template <class AccO, class TensorO>
  CUTE_DEVICE static void store(AccO const& acc_o, typename Traits::SharedStorage& smem, TensorO& gO, int q_rows,
                                int head_dim, int tidx) {
    using namespace cute;
    Tensor sO = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutO{});  // (BLK_M, HEAD_DIM)
    // Registers -> shared in the MMA's C partition (32-bit stores of column pairs), a barrier, then
    // shared -> global as 16-byte vectors, rows and columns predicated (common/gmem_tile.hpp).
    AccumulatorTileStore<Traits, typename Traits::TiledMma, kBlockM>::store(acc_o, sO, gO, q_rows, head_dim, tidx);
  }
};

}  // namespace flash_sigmoid::sm80

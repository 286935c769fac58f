// Layer: sm80. The forward epilogue: the fp32 O accumulator of one query tile to global memory as
// Element, through shared memory so that global stores are whole 16-byte vectors.
//
// Owns: the conversion of O (round to nearest; fp16 overflow gives inf, DESIGN §1), the register ->
// shared -> global path, and the predication that writes exactly rows < seqlen_q and columns
// < head_dim. Does not own: how O was accumulated (fwd_mainloop.hpp) or where the tile lies in
// global memory (the kernel passes gO).
#pragma once

#include <cute/tensor.hpp>

#include "common/fragment_coords.hpp"
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
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it

    Tensor rO = convert_fragment<Element>(acc_o);  // (MMA, MMA_M, MMA_HEAD_DIM)
    Tensor sO = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutO{});  // (BLK_M, HEAD_DIM)

    // Registers -> shared: each thread's adjacent column pairs as 32-bit stores, in the MMA's
    // C partition.
    auto smem_tiled_copy_O = make_tiled_copy_C(typename Traits::SmemCopyAtomO{}, typename Traits::TiledMma{});
    auto smem_thr_copy_O = smem_tiled_copy_O.get_thread_slice(tidx);
    Tensor taccOrO = smem_thr_copy_O.retile_S(rO);    // (CPY, CPY_M, CPY_HEAD_DIM)
    Tensor taccOsO = smem_thr_copy_O.partition_D(sO);  // (CPY, CPY_M, CPY_HEAD_DIM)
    copy(smem_tiled_copy_O, taccOrO, taccOsO);

    // The tile is re-partitioned across threads for the global stores: every thread's shared
    // writes must be visible first.
    __syncthreads();

    // Shared -> registers (16-byte loads) -> global (16-byte stores), rows and columns predicated.
    typename Traits::GmemTiledCopyO gmem_tiled_copy_O;
    auto gmem_thr_copy_O = gmem_tiled_copy_O.get_thread_slice(tidx);
    Tensor tOsO = gmem_thr_copy_O.partition_S(sO);  // (CPY, CPY_M, CPY_K)
    Tensor tOgO = gmem_thr_copy_O.partition_D(gO);  // (CPY, CPY_M, CPY_K)
    Tensor tOcO = gmem_thr_copy_O.partition_D(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor tOrO = make_tensor<Element>(shape(tOgO));  // (CPY, CPY_M, CPY_K)
    copy(gmem_tiled_copy_O, tOsO, tOrO);

    CUTE_UNROLL
    for (int m = 0; m < size<1>(tOgO); ++m) {
      if (get<0>(tOcO(0, m, 0)) < q_rows) {
        CUTE_UNROLL
        for (int k = 0; k < size<2>(tOgO); ++k) {
          if (get<1>(tOcO(0, m, k)) < head_dim) {
            copy(gmem_tiled_copy_O, tOrO(_, m, k), tOgO(_, m, k));
          }
        }
      }
    }
  }
};

}  // namespace flash_sigmoid::sm80

// Layer: common kernel parts. Where a backward's dK and dV leave the registers, for every kernel
// family: one key tile's accumulators rounded to Element, staged in shared memory in the
// accumulator's partition, and stored as whole 16-byte vectors.
//
// Owns: the scales of dK and dV (applied once per element, not per product), the order of the
// stores and the barriers between them. Does not own: how the accumulators were computed (the
// families' mainloops) or the traits' layouts and copies it is written against: Traits names
// Element, kBlockN, kHeadDim, SharedStorage (k, v buffers), SmemLayoutKV, SmemCopyAtomStore,
// GmemTiledCopyStore and TiledMmaDkv.
#pragma once

#include <cute/tensor.hpp>

#include "common/gmem_tile.hpp"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"

namespace flash_sigmoid {

// dK and dV of one key tile: dK = scale * acc_dk (scale applied here, once per element rather
// than per product), dV = acc_dv, both also times dropout's inverse keep rate (backward_dv_scale,
// common/params.hpp), rounded to Element, staged in K's and V's shared-memory buffers in
// the accumulator's partition, then stored as 16-byte vectors predicated on rows < seqlen_k and
// columns < head_dim. Generic over the traits' layouts: the sm80 backward's padded rows and
// mma.sync partition, the sm90 backward's swizzled rows and warpgroup MMA partition.
template <class Traits>
struct DkDvEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  template <class AccDk, class AccDv>
  CUTE_DEVICE static void store(AccDk& acc_dk, AccDv& acc_dv, typename Traits::SharedStorage& smem,
                                const BackwardParams& params, int n_block, int kv_head_idx, int batch_idx,
                                SeqlenInfo const& seqlen, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;
    const float dk_scale = backward_dq_dk_scale(problem);
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= dk_scale;
    if (problem.dropout_threshold != 0) {
      const float dv_scale = backward_dv_scale(problem);
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dv); ++i) acc_dv(i) *= dv_scale;
    }

    Tensor sdK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    Tensor sdV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    const int row0 = seqlen.offset_k + n_block * kBlockN;
    Tensor gdK = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dk, batch_idx, kv_head_idx, row0);
    Tensor gdV = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dv, batch_idx, kv_head_idx, row0);
    const int row_limit = seqlen.seqlen_k - n_block * kBlockN;
    // No cp.async still writes K or V (the mainloop's last groups are empty; a block whose query
    // range is empty issued none), and every thread is past its last product that reads them,
    // before either buffer is overwritten.
    cute::cp_async_wait<0>();
    __syncthreads();
    using StoreAtom = typename Traits::SmemCopyAtomStore;
    store_accumulator<Element, StoreAtom>(typename Traits::TiledMmaDkv{}, acc_dk, sdK, tidx);
    store_accumulator<Element, StoreAtom>(typename Traits::TiledMmaDkv{}, acc_dv, sdV, tidx);
    // Both tiles are re-partitioned across threads for the global stores.
    __syncthreads();
    typename Traits::GmemTiledCopyStore gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdK), gmem_thr_copy.partition_D(gdK), coords, row_limit,
                    problem.head_dim);
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdV), gmem_thr_copy.partition_D(gdV), coords, row_limit,
                    problem.head_dim);
  }
};

}  // namespace flash_sigmoid

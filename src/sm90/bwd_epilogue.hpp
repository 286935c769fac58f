// Layer: sm90. Where the Hopper backward's dK and dV leave the registers: dK = scale * acc_dk and
// dV = acc_dv of one key tile, rounded to Element, staged in K's and V's swizzled shared-memory
// buffers in the accumulator's partition, then stored as 16-byte vectors predicated on
// rows < seqlen_k and columns < head_dim. dQ goes through the fp32 workspace of the sm80 backward
// (sm80/bwd_epilogue.hpp: DqAccumLayout, the paired reductions and the convert kernel).
//
// Owns: the order of the stores and the barriers around them. Does not own: the accumulators
// (bwd_mainloop.hpp) or the instruction sequences of the copies (sm80/common_mma.hpp).
#pragma once

#include <cute/tensor.hpp>

#include "common/params.hpp"
#include "sm80/common_mma.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits>
struct Sm90BwdDkDvEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  template <class AccDk, class AccDv>
  CUTE_DEVICE static void store(AccDk& acc_dk, AccDv const& acc_dv, typename Traits::SharedStorage& smem,
                                const BackwardParams& params, int n_block, int kv_head_idx, int batch_idx, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    const ProblemParams& problem = params.problem;
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= problem.scale;

    Tensor sdK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    Tensor sdV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    Tensor gdK = sm80::gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dk, batch_idx, kv_head_idx, n_block * kBlockN);
    Tensor gdV = sm80::gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dv, batch_idx, kv_head_idx, n_block * kBlockN);
    const int row_limit = problem.seqlen_k - n_block * kBlockN;
    // Every warpgroup's products that read K and V have completed (the mainloop waits for each),
    // and every thread is past them, before either buffer is overwritten. (A block whose query
    // range is empty ran no mainloop: its K/V loads were never issued.)
    cute::cp_async_wait<0>();
    __syncthreads();
    sm80::store_accumulator<Element, typename Traits::SmemCopyAtomStore>(typename Traits::TiledMmaDkv{}, acc_dk, sdK, tidx);
    sm80::store_accumulator<Element, typename Traits::SmemCopyAtomStore>(typename Traits::TiledMmaDkv{}, acc_dv, sdV, tidx);
    __syncthreads();
    typename Traits::GmemTiledCopyStore gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    sm80::store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdK), gmem_thr_copy.partition_D(gdK), coords,
                          row_limit, problem.head_dim);
    sm80::store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdV), gmem_thr_copy.partition_D(gdV), coords,
                          row_limit, problem.head_dim);
  }
};

}  // namespace flash_sigmoid::sm90

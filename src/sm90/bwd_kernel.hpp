// Layer: sm90. The Hopper backward's __global__ kernel:
//
//   sm90_bwd_dkdv_kernel  one thread block (two warpgroups) per (key tile, kv head, batch): dK and
//        dV of its key tile summed over the kv head's GQA group, and every query tile's dQ
//        contribution added into the fp32 workspace. The workspace is zeroed before and converted
//        to dQ after by the sm80 backward's memset and convert kernel (bwd_launch.hpp).
//
// Owns: mapping blocks to problem slices, the block range from the mask, and the order
// mainloop -> epilogue. Warp roles: none; both warpgroups do the same work on their own 64-key
// half of the tile (and their own part of dQ), with block-wide barriers.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/params.hpp"
#include "sm90/bwd_epilogue.hpp"
#include "sm90/bwd_mainloop.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    sm90_bwd_dkdv_kernel(const __grid_constant__ BackwardParams params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  using Mask = typename Variant::Mask;

  // The swizzled layouts need 1 KiB alignment; the launch adds the slack.
  extern __shared__ char smem_raw[];
  const uintptr_t base = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(base);

  const ProblemParams& problem = params.problem;
  const int n_block = static_cast<int>(blockIdx.x);
  const int kv_head_idx = static_cast<int>(blockIdx.y);
  const int batch_idx = static_cast<int>(blockIdx.z);
  const int tidx = static_cast<int>(threadIdx.x);

  const Mask mask = mask_from_problem<Mask>(problem);
  const BlockRange range = query_block_range<Traits::kBlockM, Traits::kBlockN>(mask, n_block);

  typename Traits::TiledMmaDkv tiled_mma_dkv;
  Tensor acc_dk = partition_fragment_C(tiled_mma_dkv, Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_N, MMA_HEAD_DIM)
  Tensor acc_dv = partition_fragment_C(tiled_mma_dkv, Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_N, MMA_HEAD_DIM)
  clear(acc_dk);
  clear(acc_dv);
  if (!range.empty()) {
    Sm90BwdDkDvMainloop<Traits, Variant>::run(params, mask, range, n_block, kv_head_idx, batch_idx, smem, acc_dk,
                                               acc_dv, tidx);
  }
  Sm90BwdDkDvEpilogue<Traits>::store(acc_dk, acc_dv, smem, params, n_block, kv_head_idx, batch_idx, tidx);
#endif
}

}  // namespace flash_sigmoid::sm90

// Layer: sm90. The Hopper forward __global__ kernel: one thread block (two warpgroups, each 64 of
// the tile's 128 query rows) per (query tile, query head, batch).
//
// Owns: mapping the block to its problem slice (batch, query head, kv head under GQA, tile), the
// key-tile range from the mask, and the order mainloop -> epilogue. Warp roles: none; both
// warpgroups do the same work on their own rows, with block-wide barriers for the shared loads.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "sm90/fwd_epilogue.hpp"
#include "sm90/fwd_mainloop.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1) sm90_fwd_kernel(const __grid_constant__ ForwardParams params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  using Mask = typename Variant::Mask;

  // The swizzled layouts need 1 KiB alignment; the launch adds the slack.
  extern __shared__ char smem_raw[];
  const uintptr_t base = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(base);

  const ProblemParams& problem = params.problem;
  // Query tiles in reverse launch order: under a causal (right-bounded) mask the last tiles see the
  // most keys, and starting them first shortens the tail of the grid.
  const int m_block = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int head_idx = static_cast<int>(blockIdx.y);
  const int batch_idx = static_cast<int>(blockIdx.z);
  const int kv_head_idx = head_idx / problem.group_size;
  const int tidx = static_cast<int>(threadIdx.x);

  const Mask mask = mask_from_problem<Mask>(problem);
  const BlockRange range = key_block_range<Traits::kBlockM, Traits::kBlockN>(mask, m_block);

  typename Traits::TiledMmaO tiled_mma_o;
  Tensor acc_o = partition_fragment_C(tiled_mma_o, Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_o);
  // An empty key range (seqlen_k == 0, or a window that hides every key of these rows) skips the
  // mainloop and stores O = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, batch_idx, head_idx);
    Sm90FwdMainloop<Traits, Variant>::run(params, variant, range, m_block, head_idx, kv_head_idx, batch_idx, smem,
                                          acc_o, tidx);
  }
  Sm90FwdEpilogue<Traits>::store(acc_o, smem, params, m_block, head_idx, batch_idx, tidx);
#endif
}

}  // namespace flash_sigmoid::sm90

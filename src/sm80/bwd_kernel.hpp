// Layer: sm80. The backward __global__ kernels:
//
//   sm80_bwd_dkdv_kernel        one thread block per (key tile, kv head, batch): dK and dV of its
//        key tile summed over the kv head's GQA group; unless params.deterministic it also adds
//        every query tile's dQ contribution into the fp32 workspace (red.global.add.f32).
//   sm80_bwd_dq_kernel          deterministic mode: one thread block per (query tile,
//        query head, batch), dQ accumulated in registers over the key tiles and stored directly.
//   sm80_bwd_convert_dq_kernel  non-deterministic mode: workspace -> dQ (scaled).
//
// Owns: mapping blocks to problem slices, the block ranges from the mask, and the order
// mainloop -> epilogue. Does not own: the pipelines (bwd_mainloop.hpp), the stores
// (bwd_epilogue.hpp), tile shapes (bwd_traits.hpp) or the launches and their order on the stream
// (bwd_launch.hpp).
//
// Warp roles: none. In every kernel all warps do the same work on their own slices of each
// product's tile (the three warp arrangements of the dK/dV kernel are listed in bwd_traits.hpp);
// every warp issues its share of the cp.async loads, ldmatrix reads, MMAs, score-function and
// derivative math, atomics and stores. Barriers are block-wide (__syncthreads);
// docs/sm80_backward.md draws the tiles.
#pragma once

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "sm80/bwd_epilogue.hpp"
#include "sm80/bwd_mainloop.hpp"
#include "sm80/bwd_traits.hpp"

namespace flash_sigmoid::sm80 {

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    sm80_bwd_dkdv_kernel(const __grid_constant__ BackwardParams params) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  using Mask = typename Variant::Mask;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  // Key tiles in launch order: under a causal (right-bounded) mask the first key tiles are seen by
  // the most query tiles, and starting them first shortens the tail of the grid.
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

  // A key tile that no query sees (seqlen_q == 0, or a window that hides it from every row) skips
  // the mainloop and stores dK = dV = 0.
  if (!range.empty()) {
    Sm80BwdDkDvMainloop<Traits, Variant>::run(params, mask, range, n_block, kv_head_idx, batch_idx,
                                               !params.deterministic, smem, acc_dk, acc_dv, tidx);
  }
  Sm80BwdDkDvEpilogue<Traits>::store(acc_dk, acc_dv, smem, params, n_block, kv_head_idx, batch_idx, tidx);
}

template <class DqTraits, class Variant>
__global__ void __launch_bounds__(DqTraits::kNThreads, 1)
    sm80_bwd_dq_kernel(const __grid_constant__ BackwardParams params) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  using Mask = typename Variant::Mask;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename DqTraits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  // Query tiles in reverse launch order: under a causal mask the last tiles see the most keys.
  const int m_block = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int head_idx = static_cast<int>(blockIdx.y);
  const int batch_idx = static_cast<int>(blockIdx.z);
  const int kv_head_idx = head_idx / problem.group_size;
  const int tidx = static_cast<int>(threadIdx.x);

  const Mask mask = mask_from_problem<Mask>(problem);
  const BlockRange range = key_block_range<DqTraits::kBlockM, DqTraits::kBlockN>(mask, m_block);

  typename DqTraits::TiledMma tiled_mma;
  Tensor acc_dq = partition_fragment_C(tiled_mma, Shape<Int<DqTraits::kBlockM>, Int<DqTraits::kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_dq);

  // An empty key range (seqlen_k == 0, or rows that see no key) stores dQ = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, batch_idx, head_idx);
    Sm80BwdDqMainloop<DqTraits, Variant>::run(params, variant, range, m_block, head_idx, kv_head_idx, batch_idx, smem,
                                              acc_dq, tidx);
  }
  Sm80BwdDqEpilogue<DqTraits>::store(acc_dq, smem, params, m_block, head_idx, batch_idx, tidx);
}

// One block per (kRows query rows, query head, batch).
template <class Element, int kRows, int kThreads>
__global__ void __launch_bounds__(kThreads) sm80_bwd_convert_dq_kernel(const __grid_constant__ BackwardParams params) {
  Sm80BwdDqConvert<Element>::template run<kRows>(params, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                                                 static_cast<int>(blockIdx.z));
}

}  // namespace flash_sigmoid::sm80

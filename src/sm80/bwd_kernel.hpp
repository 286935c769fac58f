// Layer: sm80. The backward __global__ kernels:
//
//   sm80_bwd_dkdv_kernel        one thread block per (key tile, kv head, batch): dK and dV of its
//        key tile summed over the kv head's GQA group; unless params.deterministic it also adds
//        every query tile's dQ contribution into the fp32 workspace (red.global.add.f32).
//   sm80_bwd_dq_kernel          deterministic mode: one thread block per (query tile,
//        query head, batch), dQ accumulated in registers over the key tiles and stored directly.
// The default mode's workspace convert kernel (workspace -> dQ, scaled) is common to both families
// (common/dq_accum.hpp).
//
// Owns: the kernels' params, the block ranges from the mask, and the order mainloop -> epilogue;
// work tiles come from the schedulers and lengths from SeqlenInfo (common/tile_scheduler.hpp). Does not own: the pipelines (bwd_mainloop.hpp), the stores
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
#include "common/dkdv_epilogue.hpp"
#include "common/params.hpp"
#include "common/score_variant.hpp"
#include "common/tile_scheduler.hpp"
#include "sm80/bwd_epilogue.hpp"
#include "sm80/bwd_mainloop.hpp"
#include "sm80/bwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// The kernels' parameters, built on the host from the validated problem (Sm80Bwd::run); the
// problem as it is, so far (common/params.hpp).
using Sm80BwdParams = KernelParams<BackwardParams, struct Sm80BwdFamily>;

// dK/dV: one block per (key tile, kv head, batch), in order (the first key tiles are seen by the
// most query tiles under a causal mask). Deterministic dQ: one block per (query tile, query head,
// batch), longest first.
template <class Traits>
using Sm80BwdDkDvScheduler = KeyTileScheduler<Traits::kBlockN>;
template <class DqTraits>
using Sm80BwdDqScheduler = QueryTileScheduler<DqTraits::kBlockM>;

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    sm80_bwd_dkdv_kernel(const __grid_constant__ Sm80BwdParams params) {
  using namespace cute;
  using Mask = typename Variant::Mask;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  const KeyTileWork work = Sm80BwdDkDvScheduler<Traits>::first_work(problem);
  const int tidx = static_cast<int>(threadIdx.x);

  const SeqlenInfo seqlen = SeqlenInfo::make(problem, work.batch_idx);
  // A packed key sequence shorter than the longest one has no keys in this tile.
  if (work.n_block * Traits::kBlockN >= seqlen.seqlen_k) return;
  const Mask mask = seqlen.mask<Mask>(problem);
  const BlockRange range = query_block_range<Traits::kBlockM, Traits::kBlockN>(mask, work.n_block);

  typename Traits::TiledMmaDkv tiled_mma_dkv;
  Tensor acc_dk = partition_fragment_C(tiled_mma_dkv, Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_N, MMA_HEAD_DIM)
  Tensor acc_dv = partition_fragment_C(tiled_mma_dkv, Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_N, MMA_HEAD_DIM)
  clear(acc_dk);
  clear(acc_dv);

  // A key tile that no query sees (seqlen_q == 0, or a window that hides it from every row) skips
  // the mainloop and stores dK = dV = 0.
  if (!range.empty()) {
    Sm80BwdDkDvMainloop<Traits, Variant>::run(params, mask, range, work.n_block, work.kv_head_idx, work.batch_idx,
                                               seqlen, !params.deterministic, smem, acc_dk, acc_dv, tidx);
  }
  DkDvEpilogue<Traits>::store(acc_dk, acc_dv, smem, params, work.n_block, work.kv_head_idx, work.batch_idx, seqlen,
                              tidx);
}

template <class DqTraits, class Variant>
__global__ void __launch_bounds__(DqTraits::kNThreads, 1)
    sm80_bwd_dq_kernel(const __grid_constant__ Sm80BwdParams params) {
  using namespace cute;
  using Mask = typename Variant::Mask;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename DqTraits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  const QueryTileWork work = Sm80BwdDqScheduler<DqTraits>::first_work(problem);
  const int tidx = static_cast<int>(threadIdx.x);

  const SeqlenInfo seqlen = SeqlenInfo::make(problem, work.batch_idx);
  // A packed query sequence shorter than the longest one has no rows in this tile.
  if (work.m_block * DqTraits::kBlockM >= seqlen.seqlen_q) return;
  const Mask mask = seqlen.mask<Mask>(problem);
  const BlockRange range = key_block_range<DqTraits::kBlockM, DqTraits::kBlockN>(mask, work.m_block);

  typename DqTraits::TiledMma tiled_mma;
  Tensor acc_dq = partition_fragment_C(tiled_mma, Shape<Int<DqTraits::kBlockM>, Int<DqTraits::kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_dq);

  // An empty key range (seqlen_k == 0, or rows that see no key) stores dQ = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, work.batch_idx, work.head_idx);
    Sm80BwdDqMainloop<DqTraits, Variant>::run(params, variant, range, work.m_block, work.head_idx, work.kv_head_idx,
                                              work.batch_idx, seqlen, smem, acc_dq, tidx);
  }
  Sm80BwdDqEpilogue<DqTraits>::store(acc_dq, smem, params, work.m_block, work.head_idx, work.batch_idx, seqlen, tidx);
}

}  // namespace flash_sigmoid::sm80

// Layer: sm80. The forward __global__ kernel: one thread block per (query tile, query head, batch).
//
// Owns: the kernel's params, the global tensors of the block's work tile, the key-tile range from
// the mask, and the order mainloop -> epilogue. The work tile (query tile, query head, kv head under
// GQA, batch) comes from the scheduler and the lengths from SeqlenInfo (common/tile_scheduler.hpp).
// Does not own: the pipeline (fwd_mainloop.hpp), the O store (fwd_epilogue.hpp), tile shapes
// (fwd_traits.hpp) or the launch (fwd_launch.hpp).
//
// Warp roles: none. All kNWarps warps do the same work on their own 16-row slices of the query
// tile (rows w*16 + i*16*kNWarps, i < MMA_M): every warp issues its share of the cp.async loads,
// its own ldmatrix reads and MMAs, the score function on its S fragment, and its share of the O
// stores. Barriers are block-wide (__syncthreads); docs/sm80_forward.md draws the tile.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/gmem_tile.hpp"
#include "common/params.hpp"
#include "common/score_variant.hpp"
#include "common/tile_scheduler.hpp"
#include "sm80/fwd_epilogue.hpp"
#include "sm80/fwd_mainloop.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// The kernel's parameters, built on the host from the validated problem (Sm80Fwd::run); the
// problem as it is, so far (common/params.hpp).
using Sm80FwdParams = KernelParams<ForwardParams, struct Sm80FwdFamily>;

// One block per (query tile, query head, batch), longest first (common/tile_scheduler.hpp).
template <class Traits>
using Sm80FwdScheduler = QueryTileScheduler<Traits::kBlockM>;

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1) sm80_fwd_kernel(const __grid_constant__ Sm80FwdParams params) {
  using namespace cute;
  using Element = typename Traits::Element;
  using Mask = typename Variant::Mask;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  const QueryTileWork work = Sm80FwdScheduler<Traits>::first_work(problem);
  const int m_block = work.m_block;
  const int tidx = static_cast<int>(threadIdx.x);

  const SeqlenInfo seqlen = SeqlenInfo::make(problem, work.batch_idx);
  const Mask mask = seqlen.mask<Mask>(problem);
  const BlockRange range = key_block_range<kBlockM, kBlockN>(mask, m_block);
  const int q_rows = seqlen.seqlen_q - m_block * kBlockM;
  // A packed sequence shorter than the longest one has no rows in this tile.
  if (q_rows <= 0) return;

  // The sequence's rows only: the predicated copies below read nothing and write nothing past
  // seqlen_q / seqlen_k, so a packed neighbour's rows are never touched.
  const int batch_idx = work.batch_idx;
  Tensor mQ = gmem_head_slice<kHeadDim, Element>(params.q, batch_idx, work.head_idx, seqlen.offset_q, seqlen.seqlen_q);     // (SEQ_Q, HEAD_DIM)
  Tensor mK = gmem_head_slice<kHeadDim, Element>(params.k, batch_idx, work.kv_head_idx, seqlen.offset_k, seqlen.seqlen_k);  // (SEQ_K, HEAD_DIM)
  Tensor mV = gmem_head_slice<kHeadDim, Element>(params.v, batch_idx, work.kv_head_idx, seqlen.offset_k, seqlen.seqlen_k);  // (SEQ_K, HEAD_DIM)
  Tensor mO = gmem_head_slice<kHeadDim, Element>(params.out, batch_idx, work.head_idx, seqlen.offset_q, seqlen.seqlen_q);   // (SEQ_Q, HEAD_DIM)
  Tensor gQ = local_tile(mQ, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (BLK_M, HEAD_DIM)
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (BLK_M, HEAD_DIM)
  Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));        // (BLK_N, HEAD_DIM, n)
  Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));        // (BLK_N, HEAD_DIM, n)

  typename Traits::TiledMma tiled_mma;
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_o);

  // An empty key range (seqlen_k == 0, or a window that hides every key of these rows) skips the
  // mainloop and stores O = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, work.batch_idx, work.head_idx);
    Sm80FwdMainloop<Traits, Variant>::run(gQ, gK, gV, smem, variant, range, m_block, q_rows, seqlen.seqlen_k,
                                          problem.head_dim, acc_o, tidx);
    if constexpr (Variant::kDropout) {
      // The kept P entered P V unscaled: the inverse keep rate once, on O.
      CUTE_UNROLL
      for (int j = 0; j < size(acc_o); ++j) acc_o(j) *= variant.dropout.params.rescale;
    }
  }
  Sm80FwdEpilogue<Traits>::store(acc_o, smem, gO, q_rows, problem.head_dim, tidx);
}

}  // namespace flash_sigmoid::sm80

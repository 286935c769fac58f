// Layer: sm90. The Hopper forward __global__ kernel: one thread block (two warpgroups, each 64 of
// the tile's 128 query rows) per (query tile, query head, batch).
//
// Owns: the kernel's params, the key-tile range from the mask, and the order mainloop -> epilogue;
// the work tile (query tile, query head, kv head under GQA, batch) comes from the scheduler and the
// lengths from SeqlenInfo (common/tile_scheduler.hpp). Warp roles: none; both
// warpgroups do the same work on their own rows, with block-wide barriers for the shared loads.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/params.hpp"
#include "common/score_variant.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/fwd_epilogue.hpp"
#include "sm90/fwd_mainloop.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

// The kernel's parameters, built on the host from the validated problem (Sm90Fwd::run); the
// problem as it is, so far (a TMA mainloop adds its descriptors: common/params.hpp).
using Sm90FwdParams = KernelParams<ForwardParams, struct Sm90FwdFamily>;

// One block per (query tile, query head, batch), longest first (common/tile_scheduler.hpp).
template <class Traits>
using Sm90FwdScheduler = QueryTileScheduler<Traits::kBlockM>;

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1) sm90_fwd_kernel(const __grid_constant__ Sm90FwdParams params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using namespace cute;
  using Mask = typename Variant::Mask;

  // The swizzled layouts need 1 KiB alignment; the launch adds the slack.
  extern __shared__ char smem_raw[];
  const uintptr_t base = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(base);

  const ProblemParams& problem = params.problem;
  const QueryTileWork work = Sm90FwdScheduler<Traits>::first_work(problem);
  const int tidx = static_cast<int>(threadIdx.x);

  const SeqlenInfo seqlen = SeqlenInfo::make(problem, work.batch_idx);
  // A packed sequence shorter than the longest one has no rows in this tile.
  if (work.m_block * Traits::kBlockM >= seqlen.seqlen_q) return;
  const Mask mask = seqlen.mask<Mask>(problem);
  const BlockRange range = key_block_range<Traits::kBlockM, Traits::kBlockN>(mask, work.m_block);

  typename Traits::TiledMmaO tiled_mma_o;
  Tensor acc_o = partition_fragment_C(tiled_mma_o, Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_o);
  // An empty key range (seqlen_k == 0, or a window that hides every key of these rows) skips the
  // mainloop and stores O = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, work.batch_idx, work.head_idx);
    Sm90FwdMainloop<Traits, Variant>::run(params, variant, range, work.m_block, work.head_idx, work.kv_head_idx,
                                          work.batch_idx, seqlen, smem, acc_o, tidx);
  }
  Sm90FwdEpilogue<Traits>::store(acc_o, smem, params, work.m_block, work.head_idx, work.batch_idx, seqlen, tidx);
#endif
}

}  // namespace flash_sigmoid::sm90

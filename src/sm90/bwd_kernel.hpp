// Layer: sm90. The Hopper backward's __global__ kernel:
//
//   sm90_bwd_dkdv_kernel  one thread block (two warpgroups) per (key tile, kv head, batch): dK and
//        dV of its key tile summed over the kv head's GQA group, and every query tile's dQ
//        contribution added into the fp32 workspace. The workspace is zeroed before and converted
//        to dQ after by the common workspace's memset and convert kernel (common/dq_accum.hpp).
//
// Owns: the kernel's params, the block range from the mask, and the order mainloop -> epilogue;
// the work tile comes from the scheduler and the lengths from SeqlenInfo (common/tile_scheduler.hpp). Warp roles: none; both warpgroups do the same work on their own 64-key
// half of the tile (and their own part of dQ), with block-wide barriers.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/bwd_epilogue.hpp"
#include "sm90/bwd_mainloop.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

// The kernel's parameters, built on the host from the validated problem (Sm90Bwd::run); the
// problem as it is, so far (a TMA mainloop adds its descriptors: common/params.hpp).
using Sm90BwdParams = KernelParams<BackwardParams, struct Sm90BwdFamily>;

// One block per (key tile, kv head, batch), in order (common/tile_scheduler.hpp).
template <class Traits>
using Sm90BwdDkDvScheduler = KeyTileScheduler<Traits::kBlockN>;

// kDeterministic: the dQ additions in a fixed order (Sm90BwdDkDvMainloop, common/dq_semaphore.hpp).
template <class Traits, class Variant, bool kDeterministic = false>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    sm90_bwd_dkdv_kernel(const __grid_constant__ Sm90BwdParams params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using namespace cute;
  using Mask = typename Variant::Mask;

  // The swizzled layouts need 1 KiB alignment; the launch adds the slack.
  extern __shared__ char smem_raw[];
  const uintptr_t base = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(base);

  const ProblemParams& problem = params.problem;
  const KeyTileWork work = Sm90BwdDkDvScheduler<Traits>::first_work(problem);
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
  if (!range.empty()) {
    Sm90BwdDkDvMainloop<Traits, Variant, kDeterministic>::run(params, mask, range, work.n_block, work.kv_head_idx,
                                                               work.batch_idx, seqlen, smem, acc_dk, acc_dv, tidx);
  }
  Sm90BwdDkDvEpilogue<Traits>::store(acc_dk, acc_dv, smem, params, work.n_block, work.kv_head_idx, work.batch_idx,
                                     seqlen, tidx);
#endif
}

}  // namespace flash_sigmoid::sm90

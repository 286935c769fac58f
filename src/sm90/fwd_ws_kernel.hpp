// Layer: sm90. The warp-specialized Hopper forward __global__ kernel: one thread block of three
// (or four) warpgroups per (query tile, query head, batch), or, persistent, per SM. Warpgroup 0 produces (one elected thread issues
// the TMA loads; its registers go to the others), warpgroups 1 and 2 consume (64 of the tile's
// 128 query rows each) and store O.
//
// Owns: the roles and their register budgets, the barriers' initialisation, and the order
// mainloop -> epilogue; the work tile comes from the scheduler and the lengths from SeqlenInfo
// (common/tile_scheduler.hpp).
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>
#include <cutlass/arch/reg_reconfig.h>

#include "common/block_range.hpp"
#include "common/gmem_tile.hpp"
#include "common/params.hpp"
#include "common/persistent_scheduler.hpp"
#include "common/score_variant.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/fwd_ws_mainloop.hpp"
#include "sm90/fwd_ws_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits>
using Sm90FwdWsScheduler = QueryTileScheduler<Traits::kBlockM>;
template <class Traits>
using Sm90FwdWsPersistentScheduler = PersistentQueryTileScheduler<Traits::kBlockM>;

// kPersistent: a grid of one block per SM, each looping over tiles (common/persistent_scheduler.hpp);
// the producer loads the next tile's first K tile while the consumers store the last tile's O.
template <class Traits, class Variant, bool kPingPong, bool kPersistent>
__global__ void __launch_bounds__(Traits::kNThreads, 1)
    sm90_fwd_ws_kernel(const __grid_constant__ Sm90FwdWsParams<Traits> params) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using namespace cute;
  using Mask = typename Variant::Mask;
  using Mainloop = Sm90FwdWsMainloop<Traits, Variant, kPingPong>;
  using Slot = typename Mainloop::Slot;

  extern __shared__ char smem_raw[];
  const uintptr_t base = (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023);
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(base);

  const ProblemParams& problem = params.problem;
  // The block's tiles: first, first + stride, ... below end (one tile without persistence).
  const int64_t first_tile = kPersistent ? int64_t(blockIdx.x) : 0;
  const int64_t tile_stride = kPersistent ? int64_t(gridDim.x) : 1;
  const int64_t end_tile = kPersistent ? Sm90FwdWsPersistentScheduler<Traits>::num_tiles(problem) : 1;
  auto work_of = [&](int64_t tile) {
    if constexpr (kPersistent) {
      return Sm90FwdWsPersistentScheduler<Traits>::decode(problem, tile);
    } else {
      return Sm90FwdWsScheduler<Traits>::first_work(problem);
    }
  };
  auto range_of = [&](const QueryTileWork& work, SeqlenInfo& seqlen, Mask& mask) {
    seqlen = SeqlenInfo::make(problem, work.batch_idx);
    mask = seqlen.mask<Mask>(problem);
    return key_block_range<Traits::kBlockM, Traits::kBlockN>(mask, work.m_block);
  };
  if constexpr (!kPersistent) {
    // A packed sequence shorter than the longest one has no rows in this tile: the whole block
    // leaves before any barrier exists. (A persistent block's tiles of that kind have an empty key
    // range and store nothing.)
    const QueryTileWork work = work_of(first_tile);
    if (work.m_block * Traits::kBlockM >= SeqlenInfo::make(problem, work.batch_idx).seqlen_q) return;
  }
  // Packed K/V tiles may hold the next sequence's rows past seqlen_k (Mainloop::load).
  const bool zero_v_tail = is_packed(problem);

  const int warp_group = __shfl_sync(0xffffffff, static_cast<int>(threadIdx.x) / 128, 0);  // uniform per warp
  if (threadIdx.x == 0) {
    Mainloop::init_barriers(smem);
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();

  if (warp_group == 0) {
    cutlass::arch::warpgroup_reg_dealloc<Traits::kProducerRegisters>();
    if (threadIdx.x / 32 == 0 && cute::elect_one_sync()) {
      Slot k_slot, v_slot;
      k_slot.phase = v_slot.phase = 1;  // every buffer starts empty: the first waits pass
      int j = 0;                        // the block's tiles so far
      for (int64_t tile = first_tile; tile < end_tile; tile += tile_stride, ++j) {
        const QueryTileWork work = work_of(tile);
        SeqlenInfo seqlen;
        Mask mask;
        const BlockRange range = range_of(work, seqlen, mask);
        // Q's buffer holds the previous tile's O until every consumer has stored it.
        auto wait_q_free = [&]() {
          if (kPersistent && j > 0) cutlass::arch::ClusterBarrier::wait(&smem.q_empty, uint32_t(j - 1) & 1);
        };
        if (range.empty()) {
          wait_q_free();  // nothing to load; keeps the producer in step with the epilogues
        } else {
          Mainloop::load(params, range, work.m_block, work.head_idx, work.kv_head_idx, work.batch_idx, seqlen, smem,
                         k_slot, v_slot, wait_q_free);
        }
      }
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
  const int ctid = static_cast<int>(threadIdx.x) - 128;
  Slot k_slot, v_slot;
  uint32_t q_phase = 0;
  for (int64_t tile = first_tile; tile < end_tile; tile += tile_stride) {
    const QueryTileWork work = work_of(tile);
    SeqlenInfo seqlen;
    Mask mask;
    const BlockRange range = range_of(work, seqlen, mask);
    typename Traits::TiledMmaO tiled_mma_o;
    Tensor acc_o = partition_fragment_C(tiled_mma_o, Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
    clear(acc_o);
    // An empty key range (seqlen_k == 0, or a window that hides every key of these rows) loads
    // nothing and stores O = 0.
    if (!range.empty()) {
      const Variant variant = Variant::make(problem, mask, work.batch_idx, work.head_idx);
      Mainloop::mma(variant, range, work.m_block, smem, acc_o, ctid, q_phase, k_slot, v_slot, zero_v_tail);
      q_phase ^= 1;
      // A score function whose P is sigma / kOutputScale (SigmoidViaExp2Relu): O scaled once.
      // With dropout, also the inverse keep rate (the mask left the kept P unscaled).
      constexpr float kOutputScale = Variant::ScoreFunction::kOutputScale;
      if constexpr (Variant::kDropout) {
        const float output_scale = kOutputScale * variant.dropout.params.rescale;
        CUTE_UNROLL
        for (int j = 0; j < size(acc_o); ++j) acc_o(j) *= output_scale;
      } else if constexpr (kOutputScale != 1.0f) {
        CUTE_UNROLL
        for (int j = 0; j < size(acc_o); ++j) acc_o(j) *= kOutputScale;
      }
    }
    // Each consumer warpgroup stages only the rows it multiplied Q by, so it may overwrite them as
    // soon as its own products are done; the consumers then meet before the global stores.
    Tensor sO = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
    Tensor gO = gmem_rows_tile<Traits::kBlockM, Traits::kHeadDim, typename Traits::Element>(
        params.out, work.batch_idx, work.head_idx, seqlen.offset_q + work.m_block * Traits::kBlockM);
    AccumulatorTileStore<Traits, typename Traits::TiledMmaO, Traits::kBlockM>::store(
        acc_o, sO, gO, seqlen.seqlen_q - work.m_block * Traits::kBlockM, problem.head_dim, ctid, [] {
          cutlass::arch::NamedBarrier::sync(Traits::kNConsumerThreads, uint32_t(Sm90FwdWsBarrier::kConsumers));
        });
    if constexpr (kPersistent) {
      // This thread's reads of O's staging (generic proxy) are done before the next Q's TMA write
      // (async proxy) into the same bytes.
      cutlass::arch::fence_view_async_shared();
      cutlass::arch::ClusterBarrier::arrive(&smem.q_empty);
    }
  }
#endif
}

}  // namespace flash_sigmoid::sm90

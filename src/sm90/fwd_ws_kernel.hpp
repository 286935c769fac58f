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

// O of one tile from the consumers' accumulators (MMA, MMA_M, MMA_HEAD_DIM) to gO (BLK_M, HEAD_DIM)
// through the separate staging buffer, each consumer warpgroup on its own 64 rows and its own
// named barrier, so that the warpgroups keep their ping-pong offset from tile to tile. Rows >=
// o_rows and columns >= head_dim are not stored.
template <class Traits, class AccO, class GmemTensor>
CUTE_DEVICE void store_warpgroup_rows_of_o(AccO const& acc_o, typename Traits::SharedStorage& smem, GmemTensor&& gO,
                                           int o_rows, int head_dim, int ctid) {
  using namespace cute;
  static_assert(Traits::kSeparateO, "O has a staging buffer of its own");
  constexpr int kHeadDim = Traits::kHeadDim;
  const int warp_group = ctid / 128;
  const uint32_t barrier = uint32_t(Sm90FwdWsBarrier::kEpilogueWg0) + uint32_t(warp_group);
  Tensor sO = make_tensor(make_smem_ptr(smem.o.data()), typename Traits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
  // The warpgroup's stores of the previous tile have read its rows of the buffer.
  cutlass::arch::NamedBarrier::sync(128, barrier);
  store_accumulator<typename Traits::Element, typename Traits::SmemCopyAtomStore>(typename Traits::TiledMmaO{}, acc_o,
                                                                                sO, ctid);
  cutlass::arch::NamedBarrier::sync(128, barrier);
  typename Traits::WarpGroupGmemTiledCopyStore gmem_tiled_copy;
  auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(ctid % 128);
  Tensor sOw = local_tile(sO, Shape<_64, Int<kHeadDim>>{}, make_coord(warp_group, _0{}));  // (64, HEAD_DIM)
  Tensor gOw = local_tile(gO, Shape<_64, Int<kHeadDim>>{}, make_coord(warp_group, _0{}));
  Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<_64, Int<kHeadDim>>{}));
  store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sOw), gmem_thr_copy.partition_D(gOw), coords,
                  o_rows - 64 * warp_group, head_dim);
}

template <class Traits>
using Sm90FwdWsScheduler = QueryTileScheduler<Traits::kBlockM>;
template <class Traits>
using Sm90FwdWsPersistentScheduler = PersistentQueryTileScheduler<Traits::kBlockM>;

// kPersistent: a grid of one block per SM, each looping over tiles (common/persistent_scheduler.hpp);
// the producer loads the next tile's first K tile, and with O staged apart from Q (kSeparateO) the
// next tile's Q, while the consumers finish the last tile.
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
  // The block's tile at its round-th turn or the next turn that has one (advancing round), -1 past
  // its last (one tile without persistence).
  auto next_tile = [&](int64_t& round) -> int64_t {
    if constexpr (kPersistent) {
      return Sm90FwdWsPersistentScheduler<Traits>::next_tile(problem, round, int(blockIdx.x), int(gridDim.x));
    } else {
      return round == 0 ? 0 : -1;
    }
  };
  auto work_of = [&](int64_t tile) {
    if constexpr (kPersistent) {
      return Sm90FwdWsPersistentScheduler<Traits>::decode(problem, tile, int(gridDim.x));
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
    const QueryTileWork work = work_of(0);
    if (work.m_block * Traits::kBlockM >= SeqlenInfo::make(problem, work.batch_idx).seqlen_q) return;
  }
  // Packed K/V tiles may hold the next sequence's rows past seqlen_k (Mainloop::load).
  const bool zero_v_tail = is_packed(problem);

  // A persistent block stages O apart from Q and gives Q's buffer back to the producer as soon as
  // the tile's last S product has completed: the next tile's Q loads during this tile's last P V
  // and its epilogue. Only tiles that load Q take part in its "empty" barrier: every arrival
  // follows that tile's wait for Q, so the consumers are never two phases ahead of the producer's
  // wait (a 1-bit parity cannot tell phase s - 1 from phase s + 1; tiles without keys arriving
  // unconditionally could complete both before the producer looked).
  static_assert(!kPersistent || Traits::kSeparateO, "a persistent block stages O apart from Q (D <= 128)");
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
      int j = 0;  // the block's Q loads so far
      int64_t round = 0;
      for (int64_t tile = next_tile(round); tile >= 0; ++round, tile = next_tile(round)) {
        const QueryTileWork work = work_of(tile);
        SeqlenInfo seqlen;
        Mask mask;
        const BlockRange range = range_of(work, seqlen, mask);
        // Q's buffer is in use until every consumer has released the previous Q (after its tile's
        // last S product).
        auto wait_q_free = [&]() {
          if (kPersistent && j > 0) cutlass::arch::ClusterBarrier::wait(&smem.q_empty, uint32_t(j - 1) & 1);
        };
        if (!range.empty()) {  // (a tile without keys loads nothing)
          Mainloop::load(params, range, work.m_block, work.head_idx, work.kv_head_idx, work.batch_idx, seqlen, smem,
                         k_slot, v_slot, wait_q_free);
          ++j;
        }
      }
    }
    return;
  }

  cutlass::arch::warpgroup_reg_alloc<Traits::kConsumerRegisters>();
  const int ctid = static_cast<int>(threadIdx.x) - 128;
  auto q_done = [&]() {
    if constexpr (kPersistent) cutlass::arch::ClusterBarrier::arrive(&smem.q_empty);
  };
  Slot k_slot, v_slot;
  uint32_t q_phase = 0;
  int64_t round = 0;
  for (int64_t tile = next_tile(round); tile >= 0; ++round, tile = next_tile(round)) {
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
      Mainloop::mma(variant, range, work.m_block, smem, acc_o, ctid, q_phase, k_slot, v_slot, zero_v_tail, q_done);
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
    Tensor gO = gmem_rows_tile<Traits::kBlockM, Traits::kHeadDim, typename Traits::Element>(
        params.out, work.batch_idx, work.head_idx, seqlen.offset_q + work.m_block * Traits::kBlockM);
    const int o_rows = seqlen.seqlen_q - work.m_block * Traits::kBlockM;
    if constexpr (Traits::kSeparateO) {
      store_warpgroup_rows_of_o<Traits>(acc_o, smem, gO, o_rows, problem.head_dim, ctid);
    } else {
      // Each consumer warpgroup stages only the rows it multiplied Q by, so it may overwrite them as
      // soon as its own products are done; the consumers then meet before the global stores.
      Tensor sO = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
      AccumulatorTileStore<Traits, typename Traits::TiledMmaO, Traits::kBlockM>::store(
          acc_o, sO, gO, o_rows, problem.head_dim, ctid, [] {
            cutlass::arch::NamedBarrier::sync(Traits::kNConsumerThreads, uint32_t(Sm90FwdWsBarrier::kConsumers));
          });
    }
  }
#endif
}

}  // namespace flash_sigmoid::sm90

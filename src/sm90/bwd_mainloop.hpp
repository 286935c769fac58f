// Layer: sm90. The Hopper backward's mainloop, with warpgroup MMAs (wgmma) and cp.async loads.
//
//   Sm90BwdDkDvMainloop  one key tile: over every query head of its GQA group and, for each, the
//                        query tiles of the mask's BlockRange, recompute S^T and P^T, form dP^T
//                        and dZ^T, accumulate dV += P^T dO and dK += dZ^T Q in registers, and add
//                        dQ_tile = dZ K into the fp32 workspace (red.global.add.v2.f32).
//                        kDeterministic: the query tiles in descending order, and each tile's
//                        additions in ascending key-tile order through per-tile counters
//                        (common/dq_semaphore.hpp), so dQ is bitwise reproducible.
//
// dZ is the gradient of the pre-activation z (docs/math.md), dZ = dP * P * (1 - P), unscaled: dQ and
// dK are multiplied by `scale` once, in the convert kernel and the epilogue.
//
// Owns: the shared-memory pipeline, the barriers and proxy fences that make it safe, the products
// and the elementwise step between them. Does not own: tile shapes (bwd_traits.hpp), the score
// variant and its derivative (common/score_variant.hpp, policies/), which tiles exist and which
// need the mask (common/block_range.hpp), or the workspace and the stores (common/dq_accum.hpp,
// bwd_epilogue.hpp).
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/block_range.hpp"
#include "common/dropout_fragment.hpp"
#include "common/score_variant.hpp"
#include "common/params.hpp"
#include "common/dq_accum.hpp"
#include "common/dq_semaphore.hpp"
#include "common/gmem_tile.hpp"
#include "sm90/bwd_traits.hpp"
#include "sm90/common_mma.hpp"

namespace flash_sigmoid::sm90 {

// Pipeline, per step i = (query head, query tile) of the flattened loop (K, V resident; Q and dO
// double-buffered; dZ^T single):
//
//   wait Q[i], dO[i]; proxy fence; barrier A   visible to the tensor cores; every warpgroup
//                                              finished step i-1 (its products read the other
//                                              Q/dO stage and dZ^T)
//   issue Q[i+1], dO[i+1]                      land while this step runs
//   S^T = K_w Q^T, dP^T = V_w dO^T             two wgmma batches, in flight together
//   wait S^T; P^T = sigma(variant(S^T))        the score function overlaps dP^T's product
//   wait dP^T; dZ^T = dP^T * P^T (1 - P^T)     fp32; then P^T, dZ^T rounded into registers
//   dZ^T -> shared; proxy fence; barrier B     both warpgroups' dZ^T halves written
//   dQ = dZ K, dV += P^T dO, dK += dZ^T Q      three batches in flight (dV, dK: A from registers)
//   wait dQ; red.add dQ                        each warpgroup a 64 x 64 part of the tile, while
//                                              dV and dK run; then wait for them
//
// Sigmoid attention keeps no row statistics: no rowsum(dO * O) pre-pass, O is not read.
//
// kDeterministic, in the same steps: after barrier A one thread raises the previous tile's counter
// (every thread's additions to it were issued before the barrier) and peeks at this tile's; before
// barrier B it waits until the counter says the key tiles before this one have added theirs, so
// barrier B also lets the block's additions go. No barrier is added; the peek's latency hides
// under the products.
template <class Traits, class Variant, bool kDeterministic = false>
struct Sm90BwdDkDvMainloop {
  using Element = typename Traits::Element;
  using Mask = typename Variant::Mask;
  using ScoreFunction = typename Variant::ScoreFunction;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  using DqAtomicAdd = DqAccumAtomicAdd<Traits>;
  using Semaphores = DqTileSemaphores<kBlockM>;
  using TileOrder = std::conditional_t<kDeterministic, DescendingQueryTileOrder, QueryTileOrder>;

  template <class AccDk, class AccDv>
  CUTE_DEVICE static void run(const BackwardParams& params, const Mask& mask, const BlockRange& range, int n_block,
                              int kv_head_idx, int batch_idx, SeqlenInfo const& seqlen,
                              typename Traits::SharedStorage& smem, AccDk& acc_dk, AccDv& acc_dv, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;

    // ---- Shared memory and the transposed views the products read.
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});      // (BLK_M, HEAD_DIM, STAGE)
    Tensor sQt = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQt{});    // (HEAD_DIM, BLK_M, STAGE)
    Tensor sdO = make_tensor(make_smem_ptr(smem.dout.data()), typename Traits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM, STAGE)
    Tensor sdOt = make_tensor(make_smem_ptr(smem.dout.data()), typename Traits::SmemLayoutQt{});  // (HEAD_DIM, BLK_M, STAGE)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM)
    Tensor sKt = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKt{});    // (HEAD_DIM, BLK_N)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM)
    Tensor sdZt = make_tensor(make_smem_ptr(smem.dz.data()), typename Traits::SmemLayoutdZt{});  // (BLK_N, BLK_M)
    Tensor sdZ = make_tensor(make_smem_ptr(smem.dz.data()), typename Traits::SmemLayoutdZ{});    // (BLK_M, BLK_N)

    // ---- Global -> shared (16-byte cp.async, zero fill past the sequences and the head dim).
    typename Traits::GmemTiledCopyLoad gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor tQsQ = gmem_thr_copy.partition_D(sQ);     // (CPY, CPY_M, CPY_K, STAGE)
    Tensor tdOsdO = gmem_thr_copy.partition_D(sdO);  // (CPY, CPY_M, CPY_K, STAGE)
    Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor tKVcKV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    auto load_rows = [&](const StridedPtr& src, int head_idx, int m_block, auto&& dst) {
      Tensor g = gmem_rows_tile<kBlockM, kHeadDim, Element>(src, batch_idx, head_idx,
                                                            seqlen.offset_q + m_block * kBlockM);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(g), dst, tQcQ,
                           seqlen.seqlen_q - m_block * kBlockM, problem.head_dim);
    };

    // ---- S^T = K Q^T and dP^T = V dO^T: shared-memory descriptors for both operands.
    typename Traits::TiledMmaSdP mma_sdp;
    auto thr_sdp = mma_sdp.get_thread_slice(tidx);
    Tensor tSrK = thr_sdp.partition_fragment_A(sK);     // (MMA, MMA_M, MMA_K)
    Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);     // (MMA, MMA_N, MMA_K, STAGE)
    Tensor tdPrV = thr_sdp.partition_fragment_A(sV);    // (MMA, MMA_M, MMA_K)
    Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);  // (MMA, MMA_N, MMA_K, STAGE)
    // (query, key) of each S^T accumulator element: an identity tensor of (BLK_N, BLK_M) whose
    // coordinates are swapped, so the score variant sees (row = query, col = key) as everywhere.
    Tensor tScS = thr_sdp.partition_C(make_coord_tensor(
        make_layout(Shape<Int<kBlockN>, Int<kBlockM>>{}, make_stride(E<1>{}, E<0>{}))));  // (MMA, MMA_M, MMA_N)
    auto store_dz = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_sdp);
    auto thr_store_dz = store_dz.get_thread_slice(tidx);
    Tensor tdZsdZ = thr_store_dz.partition_D(sdZt);  // (CPY, CPY_M, CPY_N)

    // ---- dV += P^T dO and dK += dZ^T Q: A from registers, B (dO, Q) descriptors along the head dim.
    typename Traits::TiledMmaDkv mma_dkv;
    auto thr_dkv = mma_dkv.get_thread_slice(tidx);
    Tensor tdVrdO = thr_dkv.partition_fragment_B(sdOt);  // (MMA, MMA_HEAD_DIM, MMA_K, STAGE)
    Tensor tdKrQ = thr_dkv.partition_fragment_B(sQt);    // (MMA, MMA_HEAD_DIM, MMA_K, STAGE)

    // ---- dQ = dZ K: dZ (written as dZ^T) and K, both descriptors.
    typename Traits::TiledMmaDq mma_dq;
    auto thr_dq = mma_dq.get_thread_slice(tidx);
    Tensor tdQrdZ = thr_dq.partition_fragment_A(sdZ);  // (MMA, MMA_M, MMA_K)
    Tensor tdQrK = thr_dq.partition_fragment_B(sKt);   // (MMA, MMA_HEAD_DIM, MMA_K)
    const DqAccumLayout dq_layout = DqAccumLayout::make(problem);
    const int dq_pitch = dq_layout.col_panels * DqAccumLayout::kPanelCols;
    const bool dq_whole = DqAtomicAdd::slice_in_pitch(0, dq_pitch);

    // ---- The flattened loop over (query head of the group, query tile), each head's query tiles
    // rotated per key tile so that blocks do not add dQ at the same addresses at the same time
    // (QueryTileOrder, common/block_range.hpp).
    const TileOrder order(range, n_block, problem.group_size, kv_head_idx);
    QueryTileOrder::Tile tile = order.first();
    int stage = 0;
    // kDeterministic: this tile's counter, this key tile's turn at it (its place among the key
    // tiles that see the query tile), the counter's value when last looked at, and the previous
    // tile's counter (raised at the next step's barrier A).
    int32_t* counter = nullptr;
    int32_t* previous_counter = nullptr;
    int32_t turn = 0, seen = 0;
    auto find_turn = [&](const QueryTileOrder::Tile& t) {
      counter = Semaphores::counters(problem, params.dq_accum) +
                Semaphores::index(problem, batch_idx, seqlen.offset_q, t.head_idx, t.m_block);
      turn = n_block - key_block_range<kBlockM, kBlockN>(mask, t.m_block).begin;
    };

    {
      const int key_limit = seqlen.seqlen_k - n_block * kBlockN;
      const int row0 = seqlen.offset_k + n_block * kBlockN;
      Tensor gK = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.k, batch_idx, kv_head_idx, row0);
      Tensor gV = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.v, batch_idx, kv_head_idx, row0);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gK), gmem_thr_copy.partition_D(sK), tKVcKV,
                           key_limit, problem.head_dim);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gV), gmem_thr_copy.partition_D(sV), tKVcKV,
                           key_limit, problem.head_dim);
      load_rows(params.q, tile.head_idx, tile.m_block, tQsQ(_, _, _, 0));
      load_rows(params.dout, tile.head_idx, tile.m_block, tdOsdO(_, _, _, 0));
      cute::cp_async_fence();
    }
    Variant variant = Variant::make(problem, mask, batch_idx, tile.head_idx);

    for (int step = 0; step < order.num_steps; ++step) {
      const bool has_next = step + 1 < order.num_steps;
      const QueryTileOrder::Tile next = order.next(tile);

      // Barrier A: this thread's cp.async writes have landed and are made visible to the async
      // proxy (wgmma reads shared memory through it); after the barrier, everyone's are.
      cute::cp_async_wait<0>();
      cutlass::arch::fence_view_async_shared();
      __syncthreads();
      if constexpr (kDeterministic) {
        if (tidx == 0) {
          if (previous_counter != nullptr) Semaphores::signal(previous_counter);
          find_turn(tile);
          seen = Semaphores::peek(counter);
        }
      }
      if (has_next) {
        load_rows(params.q, next.head_idx, next.m_block, tQsQ(_, _, _, stage ^ 1));
        load_rows(params.dout, next.head_idx, next.m_block, tdOsdO(_, _, _, stage ^ 1));
      }
      cute::cp_async_fence();

      Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});   // (MMA, MMA_M, MMA_N)
      Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});  // (MMA, MMA_M, MMA_N)
      wgmma_product<true>(mma_sdp, tSrK, tSrQ(_, _, _, stage), acc_s);
      wgmma_product<true>(mma_sdp, tdPrV, tdPrdO(_, _, _, stage), acc_dp);

      // P^T in place of S^T (masked only on tiles that hold a hidden pair) while dP^T's product runs.
      warpgroup_wait<1>();
      warpgroup_fence_operand(acc_s);
      const bool masked = tile.m_block < range.interior_begin || tile.m_block >= range.interior_end;
      if (masked) {
        apply_score_variant<true, true>(acc_s, tScS, tile.m_block * kBlockM, n_block * kBlockN, variant);
      } else {
        apply_score_variant<false, true>(acc_s, tScS, tile.m_block * kBlockM, n_block * kBlockN, variant);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(acc_dp);
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dp); ++i) {
        acc_dp(i) = acc_dp(i) * ScoreFunction::derivative_from_value(acc_s(i));
      }
      Tensor rP = convert_fragment<Element>(acc_s);    // (MMA, MMA_M, MMA_N)
      Tensor rdZ = convert_fragment<Element>(acc_dp);  // (MMA, MMA_M, MMA_N)
      if constexpr (Variant::kDropout) {
        // S^T through swapped coordinates, the m16n8 ownership of keys x queries; dV, dK and dQ take
        // the inverse keep rate where they leave the kernels. The flags are computed here, after
        // both waits: computing them while the products run measured slower (H200, docs/dropout.md).
        apply_dropout_packed<DropoutWalk::kM16n8Transposed>(tScS, tile.m_block * kBlockM, n_block * kBlockN,
                                                            variant.dropout.params, variant.dropout.bh, rP, rdZ);
      }
      copy(store_dz, thr_store_dz.retile_S(rdZ), tdZsdZ);
      cutlass::arch::fence_view_async_shared();
      if constexpr (kDeterministic) {
        if (tidx == 0) {
          Semaphores::wait_for(counter, seen, turn);  // the key tiles before this one have added theirs
          previous_counter = counter;
        }
      }

      // Barrier B: both warpgroups' dZ^T are in shared memory (and visible to the async proxy);
      // kDeterministic: this key tile's turn at the tile's dQ has come.
      __syncthreads();
      // dQ first, then dV and dK: the dQ reductions below overlap the dV and dK products.
      Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
      wgmma_product<true>(mma_dq, tdQrdZ, tdQrK, acc_dq);
      Tensor tdVrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));     // (MMA, MMA_M, MMA_K)
      Tensor tdKrdZ = make_tensor(rdZ.data(), wg_accumulator_as_operand_a(rdZ.layout()));  // (MMA, MMA_M, MMA_K)
      warpgroup_fence_operand(tdVrP);
      warpgroup_fence_operand(tdKrdZ);
      wgmma_product<false>(mma_dkv, tdVrP, tdVrdO(_, _, _, stage), acc_dv);
      wgmma_product<false>(mma_dkv, tdKrdZ, tdKrQ(_, _, _, stage), acc_dk);
      warpgroup_wait<2>();  // dQ's batch (the oldest of the three) is complete
      warpgroup_fence_operand(acc_dq);
      float* dq_tile =
          params.dq_accum + dq_layout.offset(batch_idx, seqlen.offset_q, tile.head_idx, tile.m_block * kBlockM, 0);
      if (dq_whole) {
        DqAtomicAdd::add_part(acc_dq, dq_tile, 0, 1, tidx);
      } else {
        DqAtomicAdd::add(acc_dq, dq_tile, 0, dq_pitch, tidx);
      }
      warpgroup_wait<0>();
      warpgroup_fence_operand(tdVrP);
      warpgroup_fence_operand(tdKrdZ);

      if (next.head_idx != tile.head_idx && has_next) variant = Variant::make(problem, mask, batch_idx, next.head_idx);
      tile = next;
      stage ^= 1;
    }
    if constexpr (kDeterministic) {
      __syncthreads();  // every thread has issued its additions to the last tile
      if (tidx == 0) Semaphores::signal(previous_counter);
    }
    // Nothing of this block's reads is in flight past here: every product was waited for.
  }
};

}  // namespace flash_sigmoid::sm90

// Layer: sm80. The backward mainloops, with mma.sync tensor cores, cp.async loads and ldmatrix.
//
//   Sm80BwdDkDvMainloop  one key tile: over every query head of its GQA group and, for each, the
//                        query tiles of the mask's BlockRange, recompute S and P, form dP and dZ,
//                        accumulate dV += P^T dO and dK += dZ^T Q in registers, and (unless the
//                        mode is deterministic: a run-time switch, uniform over the grid) add
//                        dQ_tile = dZ K into the fp32 workspace.
//   Sm80BwdDqMainloop    one query tile (deterministic mode): over the key tiles of its BlockRange,
//                        recompute S, P, dP, dZ and accumulate dQ += dZ K in registers.
//
// Here dZ is the gradient of the pre-activation z (dZ of DESIGN §1), dZ = dP * P * (1 - P),
// unscaled: dQ and dK are multiplied by `scale` once in the epilogues.
//
// Owns: the shared-memory pipelines and the barriers that make them safe, the products, and the
// elementwise step between them. Does not own: tile shapes (bwd_traits.hpp), the score variant and
// the score function's derivative (common/score_variant.hpp, policies/), which tiles exist and
// which need the mask (common/block_range.hpp), or the stores (bwd_epilogue.hpp).
#pragma once

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/dropout_fragment.hpp"
#include "common/score_variant.hpp"
#include "common/params.hpp"
#include "common/dq_accum.hpp"
#include "sm80/bwd_traits.hpp"
#include "sm80/common_mma.hpp"

namespace flash_sigmoid::sm80 {

// Pipeline of Sm80BwdDkDvMainloop, per step i = (query head, query tile) of the flattened loop
// (K and V stay in shared memory throughout; Q has kQStages buffers, dO one):
//
//   wait Q[i], dO[i]; barrier A   Q[i], dO[i] visible; every warp finished step i-1 (its dK read
//                                 of the other Q buffer, its reads of P and dZ)
//   issue Q[i+1] (2 stages)       lands while this step's five products run
//   per key-column slice of the tile (kSdpSplits of them):
//     S  = Q K^T;  P = sigma(variant(S)), masked on masked tiles
//     dP = dO V^T; dZ = dP * P * (1 - P) (from the fp32 P);   P -> sP, dZ -> sdZ
//   barrier B                     sP, sdZ visible
//   dV += P^T dO                  (sPt, sdOt)
//   barrier C                     every warp finished reading dO
//   issue dO[i+1]                 lands while dQ and dK run
//   dQ  = dZ K                    (sdZ, sKt; skipped in deterministic mode)
//   dK += dZ^T Q                  (sdZt, sQt), with dQ's red.add spread over its k-steps
//   [1 stage: barrier D, issue Q[i+1]]
//
// Sigmoid attention keeps no row statistics, so there is no rowsum(dO * O) pre-pass and O is not
// read: dZ needs only P (recomputed) and dP. Query heads of the group share K, V and the key tile,
// so dK and dV sum over the group in registers: deterministic, and no per-head copies.
template <class Traits, class Variant>
struct Sm80BwdDkDvMainloop {
  using Element = typename Traits::Element;
  using Mask = typename Variant::Mask;
  using ScoreFunction = typename Variant::ScoreFunction;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kQStages = Traits::kQStages;
  using DqAtomicAdd = DqAccumAtomicAdd<Traits>;

  // Accumulates acc_dk, acc_dv (MMA, MMA_N, MMA_HEAD_DIM) of TiledMmaDkv for key tile n_block of
  // kv head kv_head_idx over its non-empty query range; with accumulate_dq, also adds dQ into
  // params.dq_accum. (One kernel serves both modes: a second instantiation would add a third to
  // every translation unit's compile time for a branch that costs nothing.)
  template <class AccDk, class AccDv>
  CUTE_DEVICE static void run(const BackwardParams& params, const Mask& mask, const BlockRange& range, int n_block,
                              int kv_head_idx, int batch_idx, SeqlenInfo const& seqlen, bool accumulate_dq,
                              typename Traits::SharedStorage& smem, AccDk& acc_dk, AccDv& acc_dv, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;

    // ---- Shared memory, with the transposed views that dV, dK and dQ read.
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});      // (BLK_M, HEAD_DIM, STAGE)
    Tensor sQt = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQt{});    // (HEAD_DIM, BLK_M, STAGE)
    Tensor sdO = make_tensor(make_smem_ptr(smem.dout.data()), typename Traits::SmemLayoutdO{});  // (BLK_M, HEAD_DIM)
    Tensor sdOt = make_tensor(make_smem_ptr(smem.dout.data()), typename Traits::SmemLayoutdOt{});  // (HEAD_DIM, BLK_M)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM)
    Tensor sKt = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKVt{});   // (HEAD_DIM, BLK_N)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM)
    Tensor sP = make_tensor(make_smem_ptr(smem.p.data()), typename Traits::SmemLayoutPdz{});    // (BLK_M, BLK_N)
    Tensor sPt = make_tensor(make_smem_ptr(smem.p.data()), typename Traits::SmemLayoutPdzt{});  // (BLK_N, BLK_M)
    Tensor sdZ = make_tensor(make_smem_ptr(smem.dz.data()), typename Traits::SmemLayoutPdz{});   // (BLK_M, BLK_N)
    Tensor sdZt = make_tensor(make_smem_ptr(smem.dz.data()), typename Traits::SmemLayoutPdzt{});  // (BLK_N, BLK_M)

    // ---- Global -> shared (16-byte cp.async, zero fill past the sequences and the head dim).
    typename Traits::GmemTiledCopyLoad gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor tQsQ = gmem_thr_copy.partition_D(sQ);    // (CPY, CPY_M, CPY_K, STAGE)
    Tensor tdOsdO = gmem_thr_copy.partition_D(sdO);  // (CPY, CPY_M, CPY_K)
    Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor tKVcKV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));

    auto load_rows = [&](const StridedPtr& src, int head_idx, int m_block, auto&& dst) {
      Tensor g = gmem_rows_tile<kBlockM, kHeadDim, Element>(src, batch_idx, head_idx,
                                                            seqlen.offset_q + m_block * kBlockM);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(g), dst, tQcQ,
                           seqlen.seqlen_q - m_block * kBlockM, problem.head_dim);
    };

    // ---- S = Q K^T and dP = dO V^T, per key-column slice (BLK_M, SLICE_N) of the tile: ldmatrix
    // (plain) for both operands.
    constexpr int kSliceN = Traits::kSdpSliceN;
    typename Traits::TiledMmaSdP mma_sdp;
    auto thr_mma_sdp = mma_sdp.get_thread_slice(tidx);
    Tensor tSrQ = make_tensor<Element>(partition_shape_A(mma_sdp, Shape<Int<kBlockM>, Int<kHeadDim>>{}));  // (MMA, MMA_M, MMA_K)
    Tensor tSrK = make_tensor<Element>(partition_shape_B(mma_sdp, Shape<Int<kSliceN>, Int<kHeadDim>>{}));  // (MMA, MMA_N, MMA_K)
    Tensor tdPrdO = make_tensor<Element>(partition_shape_A(mma_sdp, Shape<Int<kBlockM>, Int<kHeadDim>>{}));  // (MMA, MMA_M, MMA_K)
    Tensor tdPrV = make_tensor<Element>(partition_shape_B(mma_sdp, Shape<Int<kSliceN>, Int<kHeadDim>>{}));  // (MMA, MMA_N, MMA_K)
    auto copy_a_sdp = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_sdp);
    auto thr_copy_a_sdp = copy_a_sdp.get_thread_slice(tidx);
    auto copy_b_sdp = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, mma_sdp);
    auto thr_copy_b_sdp = copy_b_sdp.get_thread_slice(tidx);
    Tensor tSsQ = thr_copy_a_sdp.partition_S(sQ);     // (CPY, CPY_M, CPY_K, STAGE)
    Tensor tdPsdO = thr_copy_a_sdp.partition_S(sdO);  // (CPY, CPY_M, CPY_K)
    // K and V cut into key-column slices: (CPY, CPY_N, CPY_K, SLICE)
    Tensor tSsK = thr_copy_b_sdp.partition_S(flat_divide(sK, Shape<Int<kSliceN>, Int<kHeadDim>>{})(_, _, _, 0));
    Tensor tdPsV = thr_copy_b_sdp.partition_S(flat_divide(sV, Shape<Int<kSliceN>, Int<kHeadDim>>{})(_, _, _, 0));
    // (row, col) of each S / dP accumulator element inside a (BLK_M, SLICE_N) slice.
    Tensor tScS = thr_mma_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kSliceN>>{}));  // (MMA, MMA_M, MMA_N)
    // P and dZ of a slice to shared memory in the accumulator's partition (column-pair stores).
    auto store_copy = make_tiled_copy_C(typename Traits::SmemCopyAtomStore{}, mma_sdp);
    auto thr_store = store_copy.get_thread_slice(tidx);
    Tensor tPsP = thr_store.partition_D(flat_divide(sP, Shape<Int<kBlockM>, Int<kSliceN>>{})(_, _, 0, _));    // (CPY, CPY_M, CPY_N, SLICE)
    Tensor tdZsdZ = thr_store.partition_D(flat_divide(sdZ, Shape<Int<kBlockM>, Int<kSliceN>>{})(_, _, 0, _));  // (CPY, CPY_M, CPY_N, SLICE)

    // ---- dV += P^T dO and dK += dZ^T Q: every operand read transposed.
    typename Traits::TiledMmaDkv mma_dkv;
    Tensor tdVrPt = make_tensor<Element>(partition_shape_A(mma_dkv, Shape<Int<kBlockN>, Int<kBlockM>>{}));    // (MMA, MMA_N, MMA_K)
    Tensor tdVrdOt = make_tensor<Element>(partition_shape_B(mma_dkv, Shape<Int<kHeadDim>, Int<kBlockM>>{}));  // (MMA, MMA_HEAD_DIM, MMA_K)
    Tensor tdKrdZt = make_tensor<Element>(partition_shape_A(mma_dkv, Shape<Int<kBlockN>, Int<kBlockM>>{}));   // (MMA, MMA_N, MMA_K)
    Tensor tdKrQt = make_tensor<Element>(partition_shape_B(mma_dkv, Shape<Int<kHeadDim>, Int<kBlockM>>{}));   // (MMA, MMA_HEAD_DIM, MMA_K)
    auto copy_a_dkv = make_tiled_copy_A(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
    auto thr_copy_a_dkv = copy_a_dkv.get_thread_slice(tidx);
    auto copy_b_dkv = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dkv);
    auto thr_copy_b_dkv = copy_b_dkv.get_thread_slice(tidx);
    Tensor tdVsPt = thr_copy_a_dkv.partition_S(sPt);    // (CPY, CPY_N, CPY_K)
    Tensor tdKsdZt = thr_copy_a_dkv.partition_S(sdZt);  // (CPY, CPY_N, CPY_K)
    Tensor tdVsdOt = thr_copy_b_dkv.partition_S(sdOt);  // (CPY, CPY_HEAD_DIM, CPY_K)
    Tensor tdKsQt = thr_copy_b_dkv.partition_S(sQt);    // (CPY, CPY_HEAD_DIM, CPY_K, STAGE)

    // ---- dQ = dZ K, in kDqSplits head-dim slices: dZ plain, K transposed.
    constexpr int kDqSliceDim = Traits::kDqSliceDim;
    typename Traits::TiledMmaDq mma_dq;
    Tensor tdQrdZ = make_tensor<Element>(partition_shape_A(mma_dq, Shape<Int<kBlockM>, Int<kBlockN>>{}));      // (MMA, MMA_M, MMA_K)
    Tensor tdQrKt = make_tensor<Element>(partition_shape_B(mma_dq, Shape<Int<kDqSliceDim>, Int<kBlockN>>{}));  // (MMA, MMA_SLICE, MMA_K)
    auto copy_a_dq = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, mma_dq);
    auto thr_copy_a_dq = copy_a_dq.get_thread_slice(tidx);
    auto copy_b_dq = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, mma_dq);
    auto thr_copy_b_dq = copy_b_dq.get_thread_slice(tidx);
    Tensor tdQsdZ = thr_copy_a_dq.partition_S(sdZ);  // (CPY, CPY_M, CPY_K)
    // K^T cut into slices of kDqSliceDim head-dim rows: (CPY, CPY_SLICE, CPY_K, SLICE)
    Tensor tdQsKt = thr_copy_b_dq.partition_S(
        flat_divide(sKt, Shape<Int<kDqSliceDim>, Int<kBlockN>>{})(_, _, _, 0));
    const DqAccumLayout dq_layout = DqAccumLayout::make(problem);
    const int dq_pitch = dq_layout.col_panels * DqAccumLayout::kPanelCols;

    // ---- The flattened loop over (query head of the group, query tile), each head's query tiles
    // rotated per key tile so that blocks do not add dQ at the same addresses at the same time
    // (QueryTileOrder, common/block_range.hpp).
    const QueryTileOrder order(range, n_block, problem.group_size, kv_head_idx);
    QueryTileOrder::Tile tile = order.first();
    int stage = 0;

    // Prologue: K, V and the first Q, dO in one commit group.
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
      load_rows(params.dout, tile.head_idx, tile.m_block, tdOsdO);
      cute::cp_async_fence();
    }
    Variant variant = Variant::make(problem, mask, batch_idx, tile.head_idx);

    for (int step = 0; step < order.num_steps; ++step) {
      const bool has_next = step + 1 < order.num_steps;
      const QueryTileOrder::Tile next = order.next(tile);

      // Barrier A: Q[i], dO[i] (and K, V) visible to all; every warp finished step i-1.
      cute::cp_async_wait<0>();
      __syncthreads();
      if constexpr (kQStages == 2) {
        if (has_next) load_rows(params.q, next.head_idx, next.m_block, tQsQ(_, _, _, stage ^ 1));
        cute::cp_async_fence();
      }

      // Per key-column slice: S = Q K^T, then P in place (masked only on tiles that hold a hidden
      // pair); dP = dO V^T, then dZ = dP * P * (1 - P) in place from the fp32 P (masked P = 0 gives
      // dZ = 0); P and dZ rounded into sP and sdZ.
      const bool masked = tile.m_block < range.interior_begin || tile.m_block >= range.interior_end;
      CUTE_UNROLL
      for (int slice = 0; slice < Traits::kSdpSplits; ++slice) {
        Tensor acc_s = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kSliceN>>{});  // (MMA, MMA_M, MMA_N)
        clear(acc_s);
        gemm_ss_pipelined(mma_sdp, acc_s, tSsQ(_, _, _, stage), tSrQ, thr_copy_a_sdp.retile_D(tSrQ), copy_a_sdp,
                          tSsK(_, _, _, slice), tSrK, thr_copy_b_sdp.retile_D(tSrK), copy_b_sdp);
        const int k_base = n_block * kBlockN + slice * kSliceN;
        if (masked) {
          apply_score_variant<true, true>(acc_s, tScS, tile.m_block * kBlockM, k_base, variant);
        } else {
          apply_score_variant<false, true>(acc_s, tScS, tile.m_block * kBlockM, k_base, variant);
        }
        Tensor acc_dp = partition_fragment_C(mma_sdp, Shape<Int<kBlockM>, Int<kSliceN>>{});  // (MMA, MMA_M, MMA_N)
        clear(acc_dp);
        gemm_ss_pipelined(mma_sdp, acc_dp, tdPsdO, tdPrdO, thr_copy_a_sdp.retile_D(tdPrdO), copy_a_sdp,
                          tdPsV(_, _, _, slice), tdPrV, thr_copy_b_sdp.retile_D(tdPrV), copy_b_sdp);
        CUTE_UNROLL
        for (int i = 0; i < size(acc_dp); ++i) {
          acc_dp(i) = acc_dp(i) * ScoreFunction::derivative_from_value(acc_s(i));
        }
        Tensor rP = convert_fragment<Element>(acc_s);    // (MMA, MMA_M, MMA_N)
        Tensor rdZ = convert_fragment<Element>(acc_dp);  // (MMA, MMA_M, MMA_N)
        if constexpr (Variant::kDropout) {
          // Warps side by side along the keys: a warp's 8-column groups start at any multiple of 8.
          apply_dropout_packed<DropoutWalk::kM16n8, 8>(tScS, tile.m_block * kBlockM, k_base, variant.dropout.params,
                                                       variant.dropout.bh, rP, rdZ);
        }
        copy(store_copy, thr_store.retile_S(rP), tPsP(_, _, _, slice));
        copy(store_copy, thr_store.retile_S(rdZ), tdZsdZ(_, _, _, slice));
      }

      // Barrier B: P and dZ visible to all.
      __syncthreads();
      gemm_ss_pipelined(mma_dkv, acc_dv, tdVsPt, tdVrPt, thr_copy_a_dkv.retile_D(tdVrPt), copy_a_dkv, tdVsdOt,
                        tdVrdOt, thr_copy_b_dkv.retile_D(tdVrdOt), copy_b_dkv);

      // Barrier C: every warp finished reading dO (dP and dV), so the next dO may land.
      __syncthreads();
      if (has_next) load_rows(params.dout, next.head_idx, next.m_block, tdOsdO);
      cute::cp_async_fence();

      // dQ = dZ K (default mode), per head-dim slice. Where dQ is one slice that fills the
      // workspace's pitch, its reductions are not issued as one burst after the product but spread
      // over the k-steps of dK += dZ^T Q below: a burst fills the load/store unit's global queue,
      // and the next instructions that reuse the reductions' registers wait for it to drain.
      // Otherwise each slice is added when it is formed.
      // In deterministic mode there is no workspace (dq_accum may be null, and only a zero offset from
      // a null pointer is defined); dq_tile is then never dereferenced.
      float* dq_tile = params.dq_accum + (accumulate_dq ? dq_layout.offset(batch_idx, seqlen.offset_q, tile.head_idx,
                                                                           tile.m_block * kBlockM, 0)
                                                        : 0);
      Tensor acc_dq = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kDqSliceDim>>{});  // (MMA, MMA_M, MMA_SLICE)
      const bool spread_dq = Traits::kDqSplits == 1 && accumulate_dq && DqAtomicAdd::slice_in_pitch(0, dq_pitch);
      if (accumulate_dq) {
        CUTE_UNROLL
        for (int slice = 0; slice < Traits::kDqSplits; ++slice) {
          clear(acc_dq);
          gemm_ss_pipelined(mma_dq, acc_dq, tdQsdZ, tdQrdZ, thr_copy_a_dq.retile_D(tdQrdZ), copy_a_dq,
                            tdQsKt(_, _, _, slice), tdQrKt, thr_copy_b_dq.retile_D(tdQrKt), copy_b_dq);
          constexpr int kSlicePanels = kDqSliceDim / DqAccumLayout::kPanelCols;
          if (!spread_dq) {
            DqAtomicAdd::add(acc_dq, dq_tile + slice * kSlicePanels * DqAccumLayout::kPanelElems, slice * kDqSliceDim,
                             dq_pitch, tidx);
          }
        }
      }
      auto dq_part = [&](int s, int steps) {
        if (spread_dq) DqAtomicAdd::add_part(acc_dq, dq_tile, s, steps, tidx);
      };
      gemm_ss_pipelined(mma_dkv, acc_dk, tdKsdZt, tdKrdZt, thr_copy_a_dkv.retile_D(tdKrdZt), copy_a_dkv,
                        tdKsQt(_, _, _, stage), tdKrQt, thr_copy_b_dkv.retile_D(tdKrQt), copy_b_dkv, dq_part);

      if constexpr (kQStages == 1) {
        // Barrier D: every warp finished reading Q (S and dK).
        __syncthreads();
        if (has_next) load_rows(params.q, next.head_idx, next.m_block, tQsQ(_, _, _, 0));
        cute::cp_async_fence();
      } else {
        stage ^= 1;
      }
      if (next.head_idx != tile.head_idx && has_next) variant = Variant::make(problem, mask, batch_idx, next.head_idx);
      tile = next;
    }
  }
};

// Pipeline of Sm80BwdDqMainloop (deterministic mode), per key tile n (Q and dO stay in shared
// memory; K and V have two buffers each):
//
//   wait K[n], V[n]; barrier      K[n], V[n] visible; every warp finished tile n-1 (its buffers free)
//   issue K[n+1], V[n+1]          land while this tile's three products run
//   S  = Q K[n]^T;  P = sigma(variant(S))
//   dP = dO V[n]^T; dZ = dP * P * (1 - P)
//   dQ += dZ K[n]                 dZ moves from the dP accumulator to the A operand in registers
template <class DqTraits, class Variant>
struct Sm80BwdDqMainloop {
  using Element = typename DqTraits::Element;
  using ScoreFunction = typename Variant::ScoreFunction;
  static constexpr int kBlockM = DqTraits::kBlockM;
  static constexpr int kBlockN = DqTraits::kBlockN;
  static constexpr int kHeadDim = DqTraits::kHeadDim;

  // Accumulates acc_dq (MMA, MMA_M, MMA_HEAD_DIM) of query tile m_block over the key tiles of range.
  template <class AccDq>
  CUTE_DEVICE static void run(const BackwardParams& params, const Variant& variant, const BlockRange& range,
                              int m_block, int head_idx, int kv_head_idx, int batch_idx, SeqlenInfo const& seqlen,
                              typename DqTraits::SharedStorage& smem, AccDq& acc_dq, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;

    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename DqTraits::SmemLayoutQ{});      // (BLK_M, HEAD_DIM)
    Tensor sdO = make_tensor(make_smem_ptr(smem.dout.data()), typename DqTraits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename DqTraits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM, STAGE)
    Tensor sKt = make_tensor(make_smem_ptr(smem.k.data()), typename DqTraits::SmemLayoutKt{});    // (HEAD_DIM, BLK_N, STAGE)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename DqTraits::SmemLayoutKV{});     // (BLK_N, HEAD_DIM, STAGE)

    typename DqTraits::GmemTiledCopyLoad gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor tKsK = gmem_thr_copy.partition_D(sK);  // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tVsV = gmem_thr_copy.partition_D(sV);  // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tKVcKV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    auto load_kv = [&](int n_block, int stage) {
      const int key_limit = seqlen.seqlen_k - n_block * kBlockN;
      const int row0 = seqlen.offset_k + n_block * kBlockN;
      Tensor gK = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.k, batch_idx, kv_head_idx, row0);
      Tensor gV = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.v, batch_idx, kv_head_idx, row0);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gK), tKsK(_, _, _, stage), tKVcKV, key_limit,
                           problem.head_dim);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gV), tVsV(_, _, _, stage), tKVcKV, key_limit,
                           problem.head_dim);
    };

    typename DqTraits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor tSrQ = make_tensor<Element>(partition_shape_A(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{}));   // (MMA, MMA_M, MMA_K)
    Tensor tSrK = make_tensor<Element>(partition_shape_B(tiled_mma, Shape<Int<kBlockN>, Int<kHeadDim>>{}));   // (MMA, MMA_N, MMA_K)
    Tensor tdPrdO = make_tensor<Element>(partition_shape_A(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{}));  // (MMA, MMA_M, MMA_K)
    Tensor tdPrV = make_tensor<Element>(partition_shape_B(tiled_mma, Shape<Int<kBlockN>, Int<kHeadDim>>{}));   // (MMA, MMA_N, MMA_K)
    Tensor tdQrKt = make_tensor<Element>(partition_shape_B(tiled_mma, Shape<Int<kHeadDim>, Int<kBlockN>>{}));  // (MMA, MMA_HEAD_DIM, MMA_K)
    auto copy_a = make_tiled_copy_A(typename DqTraits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_a = copy_a.get_thread_slice(tidx);
    auto copy_b = make_tiled_copy_B(typename DqTraits::SmemCopyAtom{}, tiled_mma);
    auto thr_copy_b = copy_b.get_thread_slice(tidx);
    auto copy_bt = make_tiled_copy_B(typename DqTraits::SmemCopyAtomTransposed{}, tiled_mma);
    auto thr_copy_bt = copy_bt.get_thread_slice(tidx);
    Tensor tSsQ = thr_copy_a.partition_S(sQ);     // (CPY, CPY_M, CPY_K)
    Tensor tdPsdO = thr_copy_a.partition_S(sdO);  // (CPY, CPY_M, CPY_K)
    Tensor tSsK = thr_copy_b.partition_S(sK);     // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tdPsV = thr_copy_b.partition_S(sV);    // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tdQsKt = thr_copy_bt.partition_S(sKt);  // (CPY, CPY_HEAD_DIM, CPY_K, STAGE)
    Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));  // (MMA, MMA_M, MMA_N)

    // Prologue: Q, dO and the first K, V in one commit group.
    {
      Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
      const int q_rows = seqlen.seqlen_q - m_block * kBlockM;
      const int row0 = seqlen.offset_q + m_block * kBlockM;
      Tensor gQ = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.q, batch_idx, head_idx, row0);
      Tensor gdO = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.dout, batch_idx, head_idx, row0);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gQ), gmem_thr_copy.partition_D(sQ), tQcQ, q_rows,
                           problem.head_dim);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gdO), gmem_thr_copy.partition_D(sdO), tQcQ,
                           q_rows, problem.head_dim);
      load_kv(range.begin, 0);
      cute::cp_async_fence();
    }

    for (int n_block = range.begin; n_block < range.end; ++n_block) {
      const int stage = (n_block - range.begin) & 1;
      // K[n], V[n] visible to all; every warp finished tile n-1, so the other buffers are free.
      cute::cp_async_wait<0>();
      __syncthreads();
      if (n_block + 1 < range.end) load_kv(n_block + 1, stage ^ 1);
      cute::cp_async_fence();

      Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
      clear(acc_s);
      gemm_ss_pipelined(tiled_mma, acc_s, tSsQ, tSrQ, thr_copy_a.retile_D(tSrQ), copy_a, tSsK(_, _, _, stage), tSrK,
                        thr_copy_b.retile_D(tSrK), copy_b);
      if (n_block < range.interior_begin || n_block >= range.interior_end) {
        apply_score_variant<true, true>(acc_s, tScS, m_block * kBlockM, n_block * kBlockN, variant);
      } else {
        apply_score_variant<false, true>(acc_s, tScS, m_block * kBlockM, n_block * kBlockN, variant);
      }

      Tensor acc_dp = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
      clear(acc_dp);
      gemm_ss_pipelined(tiled_mma, acc_dp, tdPsdO, tdPrdO, thr_copy_a.retile_D(tdPrdO), copy_a, tdPsV(_, _, _, stage),
                        tdPrV, thr_copy_b.retile_D(tdPrV), copy_b);
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dp); ++i) {
        acc_dp(i) = acc_dp(i) * ScoreFunction::derivative_from_value(acc_s(i));
      }
      Tensor rdZ = convert_fragment<Element>(acc_dp);                                             // (MMA, MMA_M, MMA_N)
      if constexpr (Variant::kDropout) {
        // Warps stacked along the query rows: 8-column groups start where the key tile does.
        apply_dropout_packed<DropoutWalk::kM16n8, dropout_key_align(kBlockN)>(
            tScS, m_block * kBlockM, n_block * kBlockN, variant.dropout.params, variant.dropout.bh, rdZ);
      }
      Tensor tdQrdZ = make_tensor(rdZ.data(), accumulator_as_operand_a(rdZ.layout()));  // (MMA, MMA_M, BLK_N/16)
      gemm_rs_pipelined(tiled_mma, acc_dq, tdQrdZ, tdQsKt(_, _, _, stage), tdQrKt, thr_copy_bt.retile_D(tdQrKt), copy_bt);
    }
  }
};

}  // namespace flash_sigmoid::sm80

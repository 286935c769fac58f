// Layer: sm90. The Hopper forward mainloop of one query tile: O += sigma(variant(Q K^T)) V over the
// key tiles of a BlockRange, with warpgroup MMAs (wgmma) and cp.async loads.
//
// Owns: the shared-memory pipeline and the barriers and proxy fences that make it safe, the two
// products, and the overlap of the score function with the tensor cores. Does not own: tile shapes
// (fwd_traits.hpp), the score variant (common/score_variant.hpp, policies/), which key tiles exist
// and which need the mask (common/block_range.hpp), or writing O (fwd_epilogue.hpp).
//
// Pipeline, key tiles i = 0 .. n-1 of the range (K and V two buffers each; Q resident). Each
// warpgroup overlaps the score function of tile i with its own P V product of tile i-1:
//
//   prologue   issue Q, K[0]; wait; fence; barrier; issue V[0], K[1]
//              S = Q K[0]^T; P[0] = sigma(S)
//   step i     wait V[i-1], K[i]; proxy fence; barrier   (every warpgroup finished step i-1, so
//                                                        V[i-2]'s and K[i-1]'s buffers are free)
//              issue V[i], K[i+1]
//              S = Q K[i]^T  and  O += P[i-1] V[i-1]     two wgmma batches in flight
//              wait S; P[i] = sigma(S)                   while P V runs on the tensor cores
//              wait P V                                  P[i-1]'s registers free
//   epilogue   wait V[n-1]; fence; barrier; O += P[n-1] V[n-1]
//
// Sigmoid attention keeps no row statistics: nothing is rescaled between tiles, so P of one tile
// can wait in registers while the next tile's scores are formed.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/block_range.hpp"
#include "common/score_variant.hpp"
#include "common/params.hpp"
#include "common/gmem_tile.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/common_mma.hpp"
#include "sm90/fwd_scores.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
struct Sm90FwdMainloop {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // Accumulates the tile's O into acc_o (MMA, MMA_M, MMA_HEAD_DIM) over the key tiles of range
  // (which must not be empty), reading the rows of the batch entry's sequences (seqlen: their
  // lengths and, packed, their first rows) only. On return every product has completed and every thread has passed
  // the last barrier, so Q's buffer may be overwritten and no cp.async is in flight.
  template <class AccO>
  CUTE_DEVICE static void run(const ForwardParams& params, Variant const& variant, BlockRange const& range,
                              int m_block, int head_idx, int kv_head_idx, int batch_idx, SeqlenInfo const& seqlen,
                              typename Traits::SharedStorage& smem, AccO& acc_o, int tidx) {
    using namespace cute;
    const ProblemParams& problem = params.problem;

    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});    // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});   // (BLK_N, HEAD_DIM, STAGE)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});   // (BLK_N, HEAD_DIM, STAGE)
    Tensor sVt = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutVt{});  // (HEAD_DIM, BLK_N, STAGE)

    // ---- Global -> shared (16-byte cp.async, zero fill past the sequences and the head dim).
    typename Traits::GmemTiledCopyLoad gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor tQsQ = gmem_thr_copy.partition_D(sQ);  // (CPY, CPY_M, CPY_K)
    Tensor tKsK = gmem_thr_copy.partition_D(sK);  // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tVsV = gmem_thr_copy.partition_D(sV);  // (CPY, CPY_N, CPY_K, STAGE)
    Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor tKVcKV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    auto load_kv = [&](const StridedPtr& src, auto&& dst, int n_block) {
      Tensor g = gmem_rows_tile<kBlockN, kHeadDim, Element>(src, batch_idx, kv_head_idx,
                                                            seqlen.offset_k + n_block * kBlockN);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(g), dst, tKVcKV,
                           seqlen.seqlen_k - n_block * kBlockN, problem.head_dim);
    };

    // ---- The products: shared-memory descriptors for Q, K and V; P from registers.
    typename Traits::TiledMmaS mma_s;
    auto thr_s = mma_s.get_thread_slice(tidx);
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);  // (MMA, MMA_M, MMA_K)
    Tensor tSrK = thr_s.partition_fragment_B(sK);  // (MMA, MMA_N, MMA_K, STAGE)
    Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));  // (MMA, MMA_M, MMA_N)
    typename Traits::TiledMmaO mma_o;
    auto thr_o = mma_o.get_thread_slice(tidx);
    Tensor tOrV = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_HEAD_DIM, MMA_K, STAGE)

    // S of key tile n_block; then P = sigma(variant(S)) in place (masked only on tiles that hold a
    // hidden pair).
    auto scores = [&](int n_block, int stage) {
      Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
      wgmma_product<true>(mma_s, tSrQ, tSrK(_, _, _, stage), acc_s);
      return acc_s;
    };
    ForwardDropoutMask<Variant, decltype(tScS), kBlockN> dropout_mask;  // the flags of the tile whose P is formed
    auto probabilities = [&](auto& acc_s, int n_block) {
      forward_probabilities<kBlockM, kBlockN>(acc_s, tScS, range, m_block, n_block, variant, dropout_mask);
    };
    auto round_into = [&](auto const& acc_p, auto& rP) { round_probabilities_into<Element>(acc_p, rP, dropout_mask); };
    auto barrier = [&]() {
      cute::cp_async_wait<0>();
      cutlass::arch::fence_view_async_shared();  // cp.async writes -> the tensor cores' (async) proxy
      __syncthreads();
    };

    const int first = range.begin;
    const int count = range.end - range.begin;

    // ---- Prologue: Q and K[0]; then V[0] and K[1] land while tile 0's scores are formed.
    {
      Tensor gQ = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.q, batch_idx, head_idx,
                                                             seqlen.offset_q + m_block * kBlockM);
      copy_tile_rows_zfill(gmem_tiled_copy, gmem_thr_copy.partition_S(gQ), tQsQ, tQcQ,
                           seqlen.seqlen_q - m_block * kBlockM, problem.head_dim);
      load_kv(params.k, tKsK(_, _, _, 0), first);
      cute::cp_async_fence();
    }
    barrier();
    load_kv(params.v, tVsV(_, _, _, 0), first);
    if (count > 1) load_kv(params.k, tKsK(_, _, _, 1), first + 1);
    cute::cp_async_fence();
    Tensor acc_s0 = scores(first, 0);
    warpgroup_wait<0>();
    probabilities(acc_s0, first);
    Tensor rP = make_tensor<Element>(shape(acc_s0));  // (MMA, MMA_M, MMA_N) P of the previous tile
    round_into(acc_s0, rP);

    for (int i = 1; i < count; ++i) {
      const int n_block = first + i;
      const int stage = i & 1;
      barrier();
      load_kv(params.v, tVsV(_, _, _, stage), n_block);
      if (i + 1 < count) load_kv(params.k, tKsK(_, _, _, stage ^ 1), n_block + 1);
      cute::cp_async_fence();

      Tensor acc_s = scores(n_block, stage);
      Tensor tOrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, MMA_K)
      warpgroup_fence_operand(tOrP);
      wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, stage ^ 1), acc_o);
      warpgroup_wait<1>();  // S of this tile (the older batch) is complete
      probabilities(acc_s, n_block);
      warpgroup_wait<0>();  // P V of the previous tile: its P registers may be reused
      warpgroup_fence_operand(tOrP);
      round_into(acc_s, rP);
    }

    barrier();
    Tensor tOrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, MMA_K)
    warpgroup_fence_operand(tOrP);
    wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, (count - 1) & 1), acc_o);
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
  }
};

}  // namespace flash_sigmoid::sm90

// Layer: sm90. The warp-specialized Hopper forward's two roles for one query tile: the producer,
// one elected thread that moves Q, K and V into shared memory with TMA, and the consumers, two
// warpgroups that form O += sigma(variant(Q K^T)) V with warpgroup MMAs (wgmma).
//
// Owns: the mbarrier pipeline between the roles (full/empty barriers per stage, the order of the
// loads), the warpgroups' scheduling barrier (ping-pong), the two products and the overlap of the
// score function with the tensor cores. Does not own: tile shapes and types (fwd_ws_traits.hpp), the
// score variant (common/score_variant.hpp, policies/), which key tiles exist and which need the mask
// (common/block_range.hpp), or writing O (fwd_ws_kernel.hpp, common/gmem_tile.hpp).
//
// The pipeline, for key tiles i = 0 .. n-1 of the range. K and V have kStages buffers each; Q is
// resident. The producer issues K[0], then K[i] and V[i-1] for i = 1 .. n-1, then V[n-1]; before
// each it waits for its buffer's "empty" barrier, and the TMA completes the "full" barrier. A
// consumer warpgroup, as in the lockstep kernel, overlaps the score function of tile i with its own
// P V product of tile i-1:
//
//   tile 0     wait Q, K[0]; S = Q K[0]^T; release K[0]; P[0] = sigma(S)
//   step i     wait K[i], V[i-1]
//              [scheduling barrier] S = Q K[i]^T and O += P[i-1] V[i-1] [pass it on]
//              wait S; release K[i]; P[i] = sigma(S)   while P V runs on the tensor cores
//              wait P V; release V[i-1]                P[i-1]'s registers free
//   end        wait V[n-1]; O += P[n-1] V[n-1]; release V[n-1]
//
// Ping-pong (kPingPong): the consumer warpgroups issue their batches of MMAs in turn (0, 1[, 2],
// 0, ...), each waiting at its own named barrier for the one before it to have issued, so that one
// warpgroup's score function runs while another's products occupy the tensor cores.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/block_range.hpp"
#include "common/params.hpp"
#include "common/score_variant.hpp"
#include "common/tile_scheduler.hpp"
#include "sm90/common_mma.hpp"
#include "sm90/fwd_scores.hpp"
#include "sm90/fwd_ws_traits.hpp"

namespace flash_sigmoid::sm90 {

// A stage of a kStages-deep ring and the parity of its barriers' current phase.
template <int kStages>
struct PipelineSlot {
  int index = 0;
  uint32_t phase = 0;
  CUTE_DEVICE void advance() {
    if (++index == kStages) {
      index = 0;
      phase ^= 1;
    }
  }
};

// Named barriers of the forward (id 0 is __syncthreads'); CUTLASS offsets them past its own.
// kScheduleWg0 + w is consumer warpgroup w's scheduling barrier, kEpilogueWg0 + w its epilogue's
// (a separate O buffer: fwd_ws_kernel.hpp).
enum class Sm90FwdWsBarrier : uint32_t { kConsumers = 0, kScheduleWg0 = 1, kEpilogueWg0 = 4 };

template <class Traits>
struct Sm90FwdWsParams : ForwardParams {
  typename Traits::TmaQ tma_q;
  typename Traits::TmaKV tma_k;
  typename Traits::TmaKV tma_v;
  // Dense: (seqlen, head_dim, heads, batch). Packed: (total rows, head_dim, heads, 1), and a
  // sequence's tiles are found at its offset along the rows (load()).
  TmaGmemShape shape_q;
  TmaGmemShape shape_k;
};

template <class Traits, class Variant, bool kPingPong>
struct Sm90FwdWsMainloop {
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using Slot = PipelineSlot<Traits::kStages>;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kNConsumerThreads = Traits::kNConsumerThreads;
  static constexpr int kNConsumerWarpGroups = Traits::kNConsumerWarpGroups;

  // Called by one thread before the roles split (the caller fences and syncs the block).
  CUTE_DEVICE static void init_barriers(typename Traits::SharedStorage& smem) {
    Barrier::init(&smem.q_full, 1);
    cutlass::arch::ClusterBarrier::init(&smem.q_empty, kNConsumerThreads);
    CUTE_UNROLL
    for (int s = 0; s < Traits::kStages; ++s) {
      Barrier::init(&smem.k_full[s], 1);
      Barrier::init(&smem.v_full[s], 1);
      cutlass::arch::ClusterBarrier::init(&smem.k_empty[s], kNConsumerThreads);
      cutlass::arch::ClusterBarrier::init(&smem.v_empty[s], kNConsumerThreads);
    }
  }

  // The producer: one thread issues every load of the tile's key range (which must not be empty),
  // at the sequences' rows (seqlen: their first rows when packed). A packed tile that reaches past
  // its sequence reads the next sequence's rows (TMA bounds only the whole tensor, whose end it
  // zero-fills): Q's extra rows are never stored, K's extra keys are masked, and V's extra rows are
  // zeroed by the consumers before they multiply (mma()'s end).
  // k_slot, v_slot: the producer's place in the K and V rings (they start at phase 1: every buffer
  // starts empty) and carry over to the next tile of a persistent block. wait_q_free: called
  // before Q's buffer is overwritten (a persistent block's consumers may still read the previous
  // tile's Q, or O staged there); K[0] is issued before it, so the next tile's first key tile loads
  // meanwhile.
  template <class WaitQFree>
  CUTE_DEVICE static void load(Sm90FwdWsParams<Traits> const& params, BlockRange const& range, int m_block,
                               int head_idx, int kv_head_idx, int batch_idx, SeqlenInfo const& seqlen,
                               typename Traits::SharedStorage& smem, Slot& k_slot, Slot& v_slot,
                               WaitQFree&& wait_q_free) {
    using namespace cute;
    Tensor mQ = params.tma_q.get_tma_tensor(params.shape_q);  // (SEQ_Q, HEAD_DIM, HEADS_Q, BATCH)
    Tensor mK = params.tma_k.get_tma_tensor(params.shape_k);  // (SEQ_K, HEAD_DIM, HEADS_KV, BATCH)
    Tensor mV = params.tma_v.get_tma_tensor(params.shape_k);
    const int tma_batch = is_packed(params.problem) ? 0 : batch_idx;
    Tensor mQs = domain_offset(make_coord(seqlen.offset_q, _0{}), mQ(_, _, head_idx, tma_batch));    // (SEQ_Q, HEAD_DIM)
    Tensor mKs = domain_offset(make_coord(seqlen.offset_k, _0{}), mK(_, _, kv_head_idx, tma_batch));  // (SEQ_K, HEAD_DIM)
    Tensor mVs = domain_offset(make_coord(seqlen.offset_k, _0{}), mV(_, _, kv_head_idx, tma_batch));  // (SEQ_K, HEAD_DIM)
    Tensor gQ = local_tile(mQs, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, _0{}));  // (BLK_M, HEAD_DIM)
    Tensor gK = local_tile(mKs, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, _0{}));  // (BLK_N, HEAD_DIM, N_BLOCKS)
    Tensor gV = local_tile(mVs, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, _0{}));  // (BLK_N, HEAD_DIM, N_BLOCKS)
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});   // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM, STAGE)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM, STAGE)

    auto cta_q = params.tma_q.get_slice(_0{});
    auto cta_k = params.tma_k.get_slice(_0{});
    auto cta_v = params.tma_v.get_slice(_0{});
    Tensor tQgQ = cta_q.partition_S(gQ);  // (TMA, TMA_M, TMA_K)
    Tensor tQsQ = cta_q.partition_D(sQ);
    Tensor tKgK = cta_k.partition_S(gK);  // (TMA, TMA_N, TMA_K, N_BLOCKS)
    Tensor tKsK = cta_k.partition_D(sK);  // (TMA, TMA_N, TMA_K, STAGE)
    Tensor tVgV = cta_v.partition_S(gV);
    Tensor tVsV = cta_v.partition_D(sV);

    // K and V are re-read by every query tile of the head: keep them in L2.
    constexpr auto kKeep = TMA::CacheHintSm90::EVICT_LAST;
    auto load_k = [&](int n_block) {
      cutlass::arch::ClusterBarrier::wait(&smem.k_empty[k_slot.index], k_slot.phase);
      Barrier::arrive_and_expect_tx(&smem.k_full[k_slot.index], Traits::kTmaBytesKV);
      copy(params.tma_k.with(smem.k_full[k_slot.index], 0, kKeep), tKgK(_, _, _, n_block), tKsK(_, _, _, k_slot.index));
      k_slot.advance();
    };
    auto load_v = [&](int n_block) {
      cutlass::arch::ClusterBarrier::wait(&smem.v_empty[v_slot.index], v_slot.phase);
      Barrier::arrive_and_expect_tx(&smem.v_full[v_slot.index], Traits::kTmaBytesKV);
      copy(params.tma_v.with(smem.v_full[v_slot.index], 0, kKeep), tVgV(_, _, _, n_block), tVsV(_, _, _, v_slot.index));
      v_slot.advance();
    };

    load_k(range.begin);
    wait_q_free();
    Barrier::arrive_and_expect_tx(&smem.q_full, Traits::kTmaBytesQ);
    copy(params.tma_q.with(smem.q_full), tQgQ, tQsQ);
    for (int n_block = range.begin + 1; n_block < range.end; ++n_block) {
      load_k(n_block);
      load_v(n_block - 1);
    }
    load_v(range.end - 1);
  }

  // A consumer warpgroup: accumulates its 64 rows of the tile's O into acc_o (MMA, MMA_M,
  // MMA_HEAD_DIM) over the key range (which must not be empty). ctid: the thread's index among the
  // consumers; q_phase: the parity of Q's "full" barrier for this tile; k_slot, v_slot: the
  // consumers' place in the rings (from phase 0), carried over between tiles. zero_v_tail: V's
  // buffers may hold rows past seqlen_k that are not zeros (packed sequences, load()); the last key
  // tile's are then zeroed before P V reads them, since P = 0 there does not make 0 * NaN = 0.
  // q_done: called by every consumer thread once its last S product (the last read of Q) has
  // completed. On return this warpgroup's products have completed (Q's buffer rows of this
  // warpgroup may be overwritten).
  template <class AccO, class QDone>
  CUTE_DEVICE static void mma(Variant const& variant, BlockRange const& range, int m_block,
                              typename Traits::SharedStorage& smem, AccO& acc_o, int ctid, uint32_t q_phase,
                              Slot& k_slot, Slot& v_slot, bool zero_v_tail, QDone&& q_done) {
    using namespace cute;
    const int warp_group = ctid / 128;
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});    // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});   // (BLK_N, HEAD_DIM, STAGE)
    Tensor sVt = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutVt{});  // (HEAD_DIM, BLK_N, STAGE)

    typename Traits::TiledMmaS mma_s;
    auto thr_s = mma_s.get_thread_slice(ctid);
    Tensor tSrQ = thr_s.partition_fragment_A(sQ);  // (MMA, MMA_M, MMA_K)
    Tensor tSrK = thr_s.partition_fragment_B(sK);  // (MMA, MMA_N, MMA_K, STAGE)
    Tensor tScS = thr_s.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));  // (MMA, MMA_M, MMA_N)
    typename Traits::TiledMmaO mma_o;
    auto thr_o = mma_o.get_thread_slice(ctid);
    Tensor tOrV = thr_o.partition_fragment_B(sVt);  // (MMA, MMA_HEAD_DIM, MMA_K, STAGE)

    ForwardDropoutMask<Variant, decltype(tScS), kBlockN> dropout_mask;  // the flags of the tile whose P is formed
    auto probabilities = [&](auto& acc_s, int n_block) {
      forward_probabilities<kBlockM, kBlockN>(acc_s, tScS, range, m_block, n_block, variant, dropout_mask);
    };
    auto round_into = [&](auto const& acc_p, auto& rP) {
      round_probabilities_into<Element, Variant::ScoreFunction::kReluPack>(acc_p, rP, dropout_mask);
    };
    // Ping-pong: warpgroup w waits at its barrier before it issues, then lets the next one go. A
    // scheduling barrier joins two warpgroups: the one that waits and the one that passes.
    const int next_group = warp_group + 1 == kNConsumerWarpGroups ? 0 : warp_group + 1;
    auto schedule_wait = [&]() {
      if constexpr (kPingPong) {
        cutlass::arch::NamedBarrier::sync(2 * 128, uint32_t(Sm90FwdWsBarrier::kScheduleWg0) + uint32_t(warp_group));
      }
    };
    auto schedule_pass = [&]() {
      if constexpr (kPingPong) {
        cutlass::arch::NamedBarrier::arrive(2 * 128, uint32_t(Sm90FwdWsBarrier::kScheduleWg0) + uint32_t(next_group));
      }
    };
    auto release = [&](uint64_t* empty) { cutlass::arch::ClusterBarrier::arrive(empty); };

    const int count = range.end - range.begin;
    // Each warpgroup waits at its barrier once per batch (count times) and passes it on as often,
    // except that the last warpgroup lets warpgroup 0 start and skips its last pass: every barrier
    // phase completes and none is left half-arrived.
    const bool last_group = warp_group + 1 == kNConsumerWarpGroups;
    if constexpr (kPingPong) {
      if (last_group) schedule_pass();
    }
    auto pass_unless_last = [&](int i) {
      if (!last_group || i + 1 < count) schedule_pass();
    };

    Barrier::wait(&smem.q_full, q_phase);
    Barrier::wait(&smem.k_full[k_slot.index], k_slot.phase);
    schedule_wait();
    Tensor acc_s0 = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    wgmma_product<true>(mma_s, tSrQ, tSrK(_, _, _, k_slot.index), acc_s0);
    pass_unless_last(0);
    warpgroup_wait<0>();
    release(&smem.k_empty[k_slot.index]);
    k_slot.advance();
    if (count == 1) q_done();
    probabilities(acc_s0, range.begin);
    Tensor rP = make_tensor<Element>(shape(acc_s0));  // (MMA, MMA_M, MMA_N) P of the previous tile
    round_into(acc_s0, rP);

    for (int i = 1; i < count; ++i) {
      const int n_block = range.begin + i;
      Barrier::wait(&smem.k_full[k_slot.index], k_slot.phase);
      Barrier::wait(&smem.v_full[v_slot.index], v_slot.phase);
      schedule_wait();
      Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});
      wgmma_product<true>(mma_s, tSrQ, tSrK(_, _, _, k_slot.index), acc_s);
      Tensor tOrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, MMA_K)
      warpgroup_fence_operand(tOrP);
      wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, v_slot.index), acc_o);
      pass_unless_last(i);
      warpgroup_wait<1>();  // S of this tile (the older batch) is complete
      release(&smem.k_empty[k_slot.index]);
      k_slot.advance();
      if (i + 1 == count) q_done();
      probabilities(acc_s, n_block);
      warpgroup_wait<0>();  // P V of the previous tile: V's buffer and P's registers are free
      release(&smem.v_empty[v_slot.index]);
      v_slot.advance();
      warpgroup_fence_operand(tOrP);
      round_into(acc_s, rP);
    }

    Barrier::wait(&smem.v_full[v_slot.index], v_slot.phase);
    // Only the range's last key tile can reach past seqlen_k (the tiles before it end inside the
    // range, whose end is at most seqlen_k).
    const int v_rows = variant.mask.seqlen_k - (range.end - 1) * kBlockN;
    if (zero_v_tail && v_rows < kBlockN) zero_rows_from(v_rows, v_slot.index, smem, ctid);
    Tensor tOrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, MMA_K)
    warpgroup_fence_operand(tOrP);
    wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, v_slot.index), acc_o);
    warpgroup_wait<0>();
    release(&smem.v_empty[v_slot.index]);
    v_slot.advance();
    warpgroup_fence_operand(acc_o);
  }

  // Rows [first_row, kBlockN) of V's buffer `stage` <- 0, by every consumer thread (16-byte stores;
  // the 128-byte swizzle permutes whole 16-byte chunks, so each chunk's 8 elements stay
  // contiguous). The buffer's TMA write has completed (its "full" barrier was waited on). Each
  // thread fences its generic-proxy stores towards the async proxy (wgmma reads shared memory
  // through it), and the consumers meet before either warpgroup multiplies: both read every row.
  // Reached once per query tile of a packed sequence whose last key tile is partial; the meeting
  // moves the ping-pong's offset between the warpgroups to the epilogue's barrier a little early.
  CUTE_DEVICE static void zero_rows_from(int first_row, int stage, typename Traits::SharedStorage& smem, int ctid) {
    using namespace cute;
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM, STAGE)
    constexpr int kChunksPerRow = kHeadDim / 8;
    const int chunks = (kBlockN - first_row) * kChunksPerRow;
    for (int i = ctid; i < chunks; i += kNConsumerThreads) {
      const int row = first_row + i / kChunksPerRow;
      const int col = (i % kChunksPerRow) * 8;
      *reinterpret_cast<uint4*>(&sV(row, col, stage)) = make_uint4(0, 0, 0, 0);
    }
    cutlass::arch::fence_view_async_shared();
    cutlass::arch::NamedBarrier::sync(kNConsumerThreads, uint32_t(Sm90FwdWsBarrier::kConsumers));
  }
};

}  // namespace flash_sigmoid::sm90

// Layer: sm90. The Hopper forward mainloop of one query tile: O += sigma(variant(Q K^T)) V over the
// key tiles of a BlockRange, with warpgroup MMAs (wgmma), a producer warpgroup issuing cp.async loads,
// two consumer warpgroups that take turns at the tensor cores.
//
// Owns: the load pipeline (buffers, mbarriers and their phases), the order in which the consumer
// warpgroups issue their products, the two products, and the overlap of the score function with
// the tensor cores. Does not own: tile shapes (fwd_traits.hpp), the score variant
// (common/fragment_coords.hpp, policies/), which key tiles exist and which need the mask
// (common/block_range.hpp), or writing O (fwd_epilogue.hpp).
//
// Roles (warp specialisation):
//   producer   one warpgroup: Q once, then for key tile i = 0 .. n-1: wait empty_k[i % 2], load
//              K[i], arrive full_k (on completion of its cp.asyncs); the same for V[i]. (One warp
//              alone could not keep enough copies in flight: 2.5x slower, measured.)
//   consumer   warpgroup w (query rows 64 w .. 64 w + 63), for tile i:
//                wait full_k[i], full_v[i-1]; proxy fence
//                my turn (named barrier)   S[i] = Q_w K[i]^T,  O_w += P[i-1] V[i-1]   (issued)
//                your turn (the other warpgroup's named barrier)
//                wait S[i]; release K[i]; P[i] = sigma(S[i])   while the tensor cores run this
//                                                             warpgroup's P V and the other's S
//                wait P V; release V[i-1]; P[i] rounded into P's registers
// The turns make the two warpgroups' products alternate, so one evaluates the score function while
// the other's products run: the tensor cores and the score function overlap across warpgroups as
// well as within one (FlashAttention-3's ping-pong and intra-warpgroup overlap). Sigmoid attention
// keeps no row statistics, so nothing is rescaled between tiles.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "sm80/common_mma.hpp"
#include "sm90/common_mma.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
struct Sm90FwdMainloop {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;
  static constexpr int kStages = Traits::kStages;
  using Barrier = cutlass::arch::ClusterBarrier;

  // Called by one thread before any role starts (then fence_barrier_init and a block barrier).
  CUTE_DEVICE static void init_barriers(typename Traits::SharedStorage& smem) {
    Barrier::init(&smem.full_q, Traits::kNProducerThreads);
    for (int s = 0; s < kStages; ++s) {
      Barrier::init(&smem.full_k[s], Traits::kNProducerThreads);
      Barrier::init(&smem.full_v[s], Traits::kNProducerThreads);
      Barrier::init(&smem.empty_k[s], Traits::kNConsumerThreads);
      Barrier::init(&smem.empty_v[s], Traits::kNConsumerThreads);
    }
  }

  // The producer warpgroup: rows [row0, row0 + kRows) of one (batch, head) slice of a [batch, seq,
  // heads, head_dim] tensor into the (kRows, HEAD_DIM) shared-memory tile dst, 16 bytes per lane and
  // cp.async, rows >= row_limit and columns >= head_dim zero-filled (no global read). A rolled loop
  // over row passes with one pointer increment each keeps the registers few (setmaxnreg leaves
  // kProducerRegisters).
  template <int kRows, class SmemTile>
  CUTE_DEVICE static void load_rows(const StridedPtr& t, int batch_idx, int head_idx, int row0, int row_limit,
                                    int head_dim, SmemTile&& dst, int lane) {
    using Vec = cute::uint128_t;
    constexpr int kElems = 16 / int(sizeof(Element));
    constexpr int kLanesPerRow = 64 / kElems;  // 8 lanes per 64 columns
    constexpr int kRowsPerPass = Traits::kNProducerThreads / kLanesPerRow;
    static_assert(kRows % kRowsPerPass == 0, "whole row passes");
    const int r = lane / kLanesPerRow;
    const int c0 = (lane % kLanesPerRow) * kElems;
    const Element* src = static_cast<const Element*>(t.ptr) + static_cast<int64_t>(batch_idx) * t.stride_batch +
                         static_cast<int64_t>(head_idx) * t.stride_head + static_cast<int64_t>(row0 + r) * t.stride_seq + c0;
    const int64_t step = static_cast<int64_t>(kRowsPerPass) * t.stride_seq;
#pragma unroll 1
    for (int p = 0; p < kRows / kRowsPerPass; ++p) {
      const int row = p * kRowsPerPass + r;
      const bool row_ok = row < row_limit;
      CUTE_UNROLL
      for (int c = 0; c < kHeadDim / 64; ++c) {
        const bool ok = row_ok && c0 + 64 * c < head_dim;
        cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<Vec>::copy(*reinterpret_cast<const Vec*>(src + 64 * c),
                                                         *reinterpret_cast<Vec*>(&dst(row, c0 + 64 * c)), ok);
      }
      src += step;
    }
  }

  // The producer warpgroup (lane = 0 .. 127). Buffer s = i % kStages is reused for tile i once both
  // consumer warpgroups released tile i - kStages (empty barrier, phase (i / kStages - 1) & 1).
  CUTE_DEVICE static void produce(const ForwardParams& params, BlockRange const& range, int m_block, int head_idx,
                                  int kv_head_idx, int batch_idx, typename Traits::SharedStorage& smem, int lane) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    const ProblemParams& problem = params.problem;
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});   // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM, STAGE)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM, STAGE)
    load_rows<kBlockM>(params.q, batch_idx, head_idx, m_block * kBlockM, problem.seqlen_q - m_block * kBlockM,
                       problem.head_dim, sQ, lane);
    cutlass::arch::cpasync_barrier_arrive_noinc(&smem.full_q);
    const int count = range.end - range.begin;
#pragma unroll 1
    for (int i = 0; i < count; ++i) {
      const int s = i % kStages;
      const int n_block = range.begin + i;
      const int key_limit = problem.seqlen_k - n_block * kBlockN;
      const uint32_t empty_phase = ((i / kStages) - 1) & 1;
      if (i >= kStages) Barrier::wait(&smem.empty_k[s], empty_phase);
      load_rows<kBlockN>(params.k, batch_idx, kv_head_idx, n_block * kBlockN, key_limit, problem.head_dim,
                         sK(_, _, s), lane);
      cutlass::arch::cpasync_barrier_arrive_noinc(&smem.full_k[s]);
      if (i >= kStages) Barrier::wait(&smem.empty_v[s], empty_phase);
      load_rows<kBlockN>(params.v, batch_idx, kv_head_idx, n_block * kBlockN, key_limit, problem.head_dim,
                         sV(_, _, s), lane);
      cutlass::arch::cpasync_barrier_arrive_noinc(&smem.full_v[s]);
    }
    // The mbarriers track these copies; waiting here keeps the warps resident until they land.
    cute::cp_async_wait<0>();
  }

  // A consumer thread (ctid = 0 .. kNConsumerThreads - 1; warpgroup ctid / 128). Accumulates its
  // warpgroup's rows of O into acc_o (MMA, MMA_M, MMA_HEAD_DIM) over the (non-empty) range.
  template <class AccO>
  CUTE_DEVICE static void consume(Variant const& variant, BlockRange const& range, int m_block,
                                  typename Traits::SharedStorage& smem, AccO& acc_o, int ctid) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
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

    // Turns at the tensor cores: warpgroup w waits on named barrier w before issuing its products
    // and then lets the other one go. Warpgroup 1 gives warpgroup 0 the first turn, and skips its
    // last hand-over, so that every barrier is completed exactly as often as it is waited on
    // (rounds: one per key tile plus the last P V, the same count for both warpgroups).
    const int wg = ctid / 128;
    auto my_turn = [&]() { cutlass::arch::NamedBarrier::sync(Traits::kNConsumerThreads, wg); };
    auto your_turn = [&]() { cutlass::arch::NamedBarrier::arrive(Traits::kNConsumerThreads, 1 - wg); };
    auto wait_full = [&](uint64_t& bar, int i) {
      Barrier::wait(&bar, (i / kStages) & 1);
      cutlass::arch::fence_view_async_shared();  // cp.async writes (generic proxy) -> wgmma reads
    };
    auto probabilities = [&](auto& acc_s, int n_block) {
      warpgroup_fence_operand(acc_s);
      if (n_block < range.interior_begin || n_block >= range.interior_end) {
        apply_score_variant<true>(acc_s, tScS, m_block * kBlockM, n_block * kBlockN, variant);
      } else {
        apply_score_variant<false>(acc_s, tScS, m_block * kBlockM, n_block * kBlockN, variant);
      }
    };
    auto round_into = [&](auto const& acc_p, auto& rP) {
      Tensor converted = convert_fragment<Element>(acc_p);
      CUTE_UNROLL
      for (int j = 0; j < size(rP); ++j) rP(j) = converted(j);
    };

    const int first = range.begin;
    const int count = range.end - range.begin;
    if (wg == 1) your_turn();
    Barrier::wait(&smem.full_q, 0);
    wait_full(smem.full_k[0], 0);
    Tensor acc_s = partition_fragment_C(mma_s, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
    my_turn();
    wgmma_product<true>(mma_s, tSrQ, tSrK(_, _, _, 0), acc_s);
    your_turn();
    warpgroup_wait<0>();
    Barrier::arrive(&smem.empty_k[0]);
    probabilities(acc_s, first);
    Tensor rP = make_tensor<Element>(shape(acc_s));  // (MMA, MMA_M, MMA_N): P of the previous tile
    round_into(acc_s, rP);
    Tensor tOrP = make_tensor(rP.data(), wg_accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, MMA_K)

    for (int i = 1; i < count; ++i) {
      const int s = i % kStages;
      const int s_prev = (i - 1) % kStages;
      wait_full(smem.full_k[s], i);
      wait_full(smem.full_v[s_prev], i - 1);
      my_turn();
      wgmma_product<true>(mma_s, tSrQ, tSrK(_, _, _, s), acc_s);
      warpgroup_fence_operand(tOrP);
      wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, s_prev), acc_o);
      your_turn();
      warpgroup_wait<1>();  // S of this tile (the older batch) is complete
      Barrier::arrive(&smem.empty_k[s]);
      probabilities(acc_s, first + i);
      warpgroup_wait<0>();  // P V of the previous tile: its P registers may be reused
      warpgroup_fence_operand(tOrP);
      Barrier::arrive(&smem.empty_v[s_prev]);
      round_into(acc_s, rP);
    }

    const int s_last = (count - 1) % kStages;
    wait_full(smem.full_v[s_last], count - 1);
    my_turn();
    warpgroup_fence_operand(tOrP);
    wgmma_product<false>(mma_o, tOrP, tOrV(_, _, _, s_last), acc_o);
    if (wg == 0) your_turn();
    warpgroup_wait<0>();
    warpgroup_fence_operand(acc_o);
  }
};

}  // namespace flash_sigmoid::sm90

// Layer: sm80. The forward mainloop of one query tile: O += sigma(variant(Q K^T)) V over the key
// tiles of a BlockRange, with mma.sync tensor cores, cp.async loads and ldmatrix fragment reads.
//
// Owns: the shared-memory pipeline (which tile is loaded into which buffer, and the barriers that
// make that safe), the two GEMMs, and the in-register hand-over of P from the S accumulator to the
// A operand of P @ V. Does not own: tile shapes (fwd_traits.hpp), the score variant and its
// per-element math (common/score_variant.hpp, policies/), which key tiles exist and which need the
// mask (common/block_range.hpp), or writing O (fwd_epilogue.hpp).
//
// Pipeline, per key tile n (one buffer each for K and V; Q stays in shared memory throughout):
//
//   wait K[n]; barrier A         K[n] visible to all; every warp is done reading V[n-1]
//   issue V[n]                   lands while the tensor cores run Q K[n]^T and the score function
//   S = Q K[n]^T
//   P = sigma(variant(S))        mask applied only on masked tiles; P packed to Element
//   wait V[n]; barrier B         V[n] visible to all; every warp is done reading K[n]
//   issue K[n+1]                 lands while the tensor cores run P V[n]
//   O += P V[n]
//
// Sigmoid attention keeps no row statistics, so nothing is rescaled between tiles and the tile
// order is free; tiles are visited in ascending order.
#pragma once

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/dropout_fragment.hpp"
#include "common/score_variant.hpp"
#include "sm80/common_mma.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

namespace detail {

// cp.async of one thread's partition of a tile, (CPY, CPY_ROW, CPY_COL), with zero fill for rows
// >= row_limit and columns >= col_limit (coords: the tile's identity tensor, partitioned alike).
// Zero-filled copies read no global memory (src-size 0), so their addresses may lie past the
// tensor.
//
// Addressing: row pass m of this thread starts row_step = stride<1>(src) elements after pass m-1.
// Written as a chain of pointer increments that the compiler may not fold back into
// base + m * row_step: folded, the m * row_step terms are loop invariants that the compiler keeps
// in registers for the whole key loop (two per pass, for K and for V: 24 registers at head dim
// 128), and this kernel has none to spare. The chain costs one 64-bit add per pass.
template <class TiledCopy, class SrcTensor, class DstTensor, class CoordTensor>
CUTE_DEVICE void copy_tile_zfill(TiledCopy const& tiled_copy, SrcTensor const& src, DstTensor&& dst,
                                 CoordTensor const& coords, int row_limit, int col_limit) {
  using namespace cute;
  static_assert(decltype(rank(src))::value == 3 && decltype(rank(coords))::value == 3, "(CPY, CPY_ROW, CPY_COL)");
  static_assert(decltype(rank(shape<1>(src)))::value == 1, "row passes have one stride");
  Tensor src_row = src(_, 0, _);  // (CPY, CPY_COL), static column strides
  auto* row_ptr = raw_pointer_cast(src_row.data());
  const auto row_step = stride<1>(src);
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    Tensor src_m = make_tensor(make_gmem_ptr(row_ptr), src_row.layout());  // (CPY, CPY_COL)
    const bool row_ok = get<0>(coords(0, m, 0)) < row_limit;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      const bool ok = row_ok && get<1>(coords(0, m, k)) < col_limit;
      copy(tiled_copy.with(ok), src_m(_, k), dst(_, m, k));
    }
    row_ptr += row_step;
    asm("" : "+l"(row_ptr));  // opaque: keeps the increment chain (see above)
  }
}

// acc += A B^T over the whole head dim, both operands read from shared memory with ldmatrix.
//   a_smem / b_smem  (CPY, CPY_M|N, K_STEPS) the thread's ldmatrix sources, K_STEPS = HEAD_DIM/16
//   a_frag / b_frag  (MMA, MMA_M|N, 2): registers for two k16 steps; a_view / b_view: the same
//                    registers seen by the copy
// The k loop is rolled, two steps per trip, ping-ponging the two register buffers: the fragments
// of step s+1 load while the MMAs of step s issue. Rolled on purpose: fully unrolled, the
// compiler hoists every ldmatrix of the product to the top of it (up to 76 registers of
// fragments at head dim 128) and then spills the O accumulator around the key loop; a loop
// bounds the fragments in flight to two steps.
template <class TiledMma, class Acc, class FragA, class ViewA, class SmemA, class CopyA, class FragB, class ViewB,
          class SmemB, class CopyB>
CUTE_DEVICE void gemm_smem_smem(TiledMma const& tiled_mma, Acc& acc, FragA& a_frag, ViewA& a_view,
                                SmemA const& a_smem, CopyA const& copy_a, FragB& b_frag, ViewB& b_view,
                                SmemB const& b_smem, CopyB const& copy_b) {
  using namespace cute;
  constexpr int kSteps = decltype(size<2>(a_smem))::value;
  static_assert(kSteps == decltype(size<2>(b_smem))::value, "A and B cover the same K extent");
  static_assert(kSteps % 2 == 0 && kSteps >= 2, "k16 steps are taken in pairs");
  static_assert(decltype(size<2>(a_frag))::value == 2 && decltype(size<2>(b_frag))::value == 2,
                "two register buffers");
  copy(copy_a, a_smem(_, _, 0), a_view(_, _, 0));
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
#pragma unroll 1
  for (int s = 0; s < kSteps - 2; s += 2) {
    copy(copy_a, a_smem(_, _, s + 1), a_view(_, _, 1));
    copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, 1));
    gemm(tiled_mma, a_frag(_, _, 0), b_frag(_, _, 0), acc);
    copy(copy_a, a_smem(_, _, s + 2), a_view(_, _, 0));
    copy(copy_b, b_smem(_, _, s + 2), b_view(_, _, 0));
    gemm(tiled_mma, a_frag(_, _, 1), b_frag(_, _, 1), acc);
  }
  copy(copy_a, a_smem(_, _, kSteps - 1), a_view(_, _, 1));
  copy(copy_b, b_smem(_, _, kSteps - 1), b_view(_, _, 1));
  gemm(tiled_mma, a_frag(_, _, 0), b_frag(_, _, 0), acc);
  gemm(tiled_mma, a_frag(_, _, 1), b_frag(_, _, 1), acc);
}

// acc += A B^T with A already in registers (P) and B read from shared memory; the fragments of
// k-step s+1 load while the MMAs of step s issue. Unrolled: P's registers are indexed by step.
template <class TiledMma, class Acc, class FragA, class FragB, class ViewB, class SmemB, class CopyB>
CUTE_DEVICE void gemm_regs_smem(TiledMma const& tiled_mma, Acc& acc, FragA const& a_frag, FragB& b_frag,
                                ViewB& b_view, SmemB const& b_smem, CopyB const& copy_b) {
  using namespace cute;
  constexpr int kSteps = decltype(size<2>(a_frag))::value;
  static_assert(kSteps == decltype(size<2>(b_frag))::value, "A and B cover the same K extent");
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    if (s + 1 < kSteps) {
      copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, s + 1));
    }
    gemm(tiled_mma, a_frag(_, _, s), b_frag(_, _, s), acc);
  }
}

}  // namespace detail

template <class Traits, class Variant>
struct Sm80FwdMainloop {
  using Element = typename Traits::Element;
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  // Accumulates the tile's O into acc_o (MMA, MMA_M, MMA_HEAD_DIM) over the key tiles of range
  // (which must not be empty).
  //   gQ (BLK_M, HEAD_DIM); gK, gV (BLK_N, HEAD_DIM, n) for the block's (batch, head).
  //   q_rows: valid query rows in this tile (seqlen_q - m_block * kBlockM, may exceed kBlockM);
  //   seqlen_k, head_dim: the real sizes, for zero fill.
  // On return every warp has passed the last barrier B, so no thread reads Q's buffer any more and
  // no cp.async is in flight.
  template <class TensorQ, class TensorK, class TensorV, class AccO>
  CUTE_DEVICE static void run(TensorQ const& gQ, TensorK const& gK, TensorV const& gV,
                              typename Traits::SharedStorage& smem, Variant const& variant, BlockRange const& range,
                              int m_block, int q_rows, int seqlen_k, int head_dim, AccO& acc_o, int tidx) {
    using namespace cute;
  
    Tensor sQ = make_tensor(make_smem_ptr(smem.q.data()), typename Traits::SmemLayoutQ{});    // (BLK_M, HEAD_DIM)
    Tensor sK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});   // (BLK_N, HEAD_DIM)
    Tensor sV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});   // (BLK_N, HEAD_DIM)
    Tensor sVt = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutVt{});  // (HEAD_DIM, BLK_N)

    // ---- Global -> shared: every thread copies 16-byte vectors; coordinates give the zero fill.
    typename Traits::GmemTiledCopyLoad gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor tQgQ = gmem_thr_copy.partition_S(gQ);  // (CPY, CPY_M, CPY_K)
    Tensor tQsQ = gmem_thr_copy.partition_D(sQ);  // (CPY, CPY_M, CPY_K)
    Tensor tQcQ = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));
    Tensor tKgK = gmem_thr_copy.partition_S(gK);  // (CPY, CPY_N, CPY_K, n)
    Tensor tKsK = gmem_thr_copy.partition_D(sK);  // (CPY, CPY_N, CPY_K)
    Tensor tVgV = gmem_thr_copy.partition_S(gV);  // (CPY, CPY_N, CPY_K, n)
    Tensor tVsV = gmem_thr_copy.partition_D(sV);  // (CPY, CPY_N, CPY_K)
    Tensor tKVcKV = gmem_thr_copy.partition_S(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));

    // ---- Shared -> registers (ldmatrix) and the MMA fragments they fill.
    typename Traits::TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    // Q and K: two k16 steps of registers (see gemm_smem_smem); V^T: every k16 step of the tile.
    Tensor tSrQ = make_tensor<Element>(partition_shape_A(tiled_mma, Shape<Int<kBlockM>, _32>{}));  // (MMA, MMA_M, 2)
    Tensor tSrK = make_tensor<Element>(partition_shape_B(tiled_mma, Shape<Int<kBlockN>, _32>{}));  // (MMA, MMA_N, 2)
    Tensor tOrVt = make_tensor<Element>(partition_shape_B(tiled_mma, Shape<Int<kHeadDim>, Int<kBlockN>>{}));
    // tOrVt (MMA, MMA_HEAD_DIM, BLK_N/16)

    auto smem_tiled_copy_Q = make_tiled_copy_A(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto smem_thr_copy_Q = smem_tiled_copy_Q.get_thread_slice(tidx);
    Tensor tSsQ = smem_thr_copy_Q.partition_S(sQ);     // (CPY, CPY_M, HEAD_DIM/16)
    Tensor tSrQ_view = smem_thr_copy_Q.retile_D(tSrQ);  // (CPY, CPY_M, 2)

    auto smem_tiled_copy_K = make_tiled_copy_B(typename Traits::SmemCopyAtom{}, tiled_mma);
    auto smem_thr_copy_K = smem_tiled_copy_K.get_thread_slice(tidx);
    Tensor tSsK = smem_thr_copy_K.partition_S(sK);     // (CPY, CPY_N, HEAD_DIM/16)
    Tensor tSrK_view = smem_thr_copy_K.retile_D(tSrK);  // (CPY, CPY_N, 2)

    auto smem_tiled_copy_V = make_tiled_copy_B(typename Traits::SmemCopyAtomTransposed{}, tiled_mma);
    auto smem_thr_copy_V = smem_tiled_copy_V.get_thread_slice(tidx);
    Tensor tOsVt = smem_thr_copy_V.partition_S(sVt);      // (CPY, CPY_HEAD_DIM, BLK_N/16)
    Tensor tOrVt_view = smem_thr_copy_V.retile_D(tOrVt);  // (CPY, CPY_HEAD_DIM, BLK_N/16)

    // (row, col) of each S accumulator element inside the (BLK_M, BLK_N) tile.
    Tensor tScS = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{}));  // (MMA, MMA_M, MMA_N)

    auto load_kv = [&](auto const& src, auto& dst, int n_block) {
      detail::copy_tile_zfill(gmem_tiled_copy, src(_, _, _, n_block), dst, tKVcKV, seqlen_k - n_block * kBlockN,
                              head_dim);
    };

    // ---- Prologue: Q and the first K tile in flight together (two commit groups).
    detail::copy_tile_zfill(gmem_tiled_copy, tQgQ, tQsQ, tQcQ, q_rows, head_dim);
    cute::cp_async_fence();
    load_kv(tKgK, tKsK, range.begin);
    cute::cp_async_fence();

    // One key tile; kApplyMask only for tiles that hold a hidden (q_idx, k_idx) pair.
    auto step = [&](int n_block, auto apply_mask) {
      constexpr bool kApplyMask = decltype(apply_mask)::value;
      Tensor acc_s = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kBlockN>>{});  // (MMA, MMA_M, MMA_N)
      clear(acc_s);

      // Barrier A: K[n] (and Q, the first time) visible to every thread; every warp has finished
      // P V[n-1], so V's buffer may be overwritten.
      cute::cp_async_wait<0>();
      __syncthreads();
      load_kv(tVgV, tVsV, n_block);
      cute::cp_async_fence();

      detail::gemm_smem_smem(tiled_mma, acc_s, tSrQ, tSrQ_view, tSsQ, smem_tiled_copy_Q, tSrK, tSrK_view, tSsK,
                             smem_tiled_copy_K);

      // P = sigma(variant(S)), rounded to the operand dtype and re-viewed as the A operand of
      // P @ V (the registers do not move). Before barrier B, so P @ V starts with S already packed
      // into half the registers.
      apply_score_variant<kApplyMask>(acc_s, tScS, m_block * kBlockM, n_block * kBlockN, variant);
      Tensor rP = convert_fragment<Element>(acc_s);                                        // (MMA, MMA_M, MMA_N)
      if constexpr (Variant::kDropout) {
        // Warps own 16-row slices (the m16n8 ownership); the kernel scales O by the keep rate.
        apply_dropout_packed<DropoutWalk::kM16n8, dropout_key_align(kBlockN)>(
            tScS, m_block * kBlockM, n_block * kBlockN, variant.dropout.params, variant.dropout.bh, rP);
      }
      Tensor tOrP = make_tensor(rP.data(), accumulator_as_operand_a(rP.layout()));  // (MMA, MMA_M, BLK_N/16)

      // Barrier B: V[n] visible to every thread; every warp has finished Q K[n]^T, so K's buffer may
      // be overwritten by the next tile while this one runs P V[n].
      cute::cp_async_wait<0>();
      __syncthreads();
      if (n_block + 1 < range.end) {
        load_kv(tKgK, tKsK, n_block + 1);
      }
      cute::cp_async_fence();

      detail::gemm_regs_smem(tiled_mma, acc_o, tOrP, tOrVt, tOrVt_view, tOsVt, smem_tiled_copy_V);
    };

    // Masked, interior, masked: the segments of BlockRange, in ascending key order. The branch is
    // uniform across the block; each variant of the step is inlined once.
    for (int n_block = range.begin; n_block < range.end; ++n_block) {
      if (n_block < range.interior_begin || n_block >= range.interior_end) {
        step(n_block, cute::true_type{});
      } else {
        step(n_block, cute::false_type{});
      }
    }
  }
};

}  // namespace flash_sigmoid::sm80

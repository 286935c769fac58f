// Layer: sm80. Building blocks that the backward kernels share (and that any sm80 kernel may use):
// predicated cp.async of a tile with zero fill, the two shapes of a software-pipelined mma.sync
// product (both operands from shared memory through ldmatrix, or A already in registers), the
// accumulator -> A-operand register relayout of m16n8k16, and accumulator tiles to shared memory.
//
// Owns: instruction sequences over CuTe tensors whose shapes the caller chose. Does not own: tile
// shapes or layouts (bwd_traits.hpp), which tiles are loaded when, or any barrier: every function
// here is warp-local or thread-local, and the caller says in its comments which barrier makes the
// shared memory it reads valid.
//
// sm80/fwd_mainloop.hpp has forward-local equivalents of the first three (detail::copy_tile_zfill,
// gemm_smem_smem, gemm_regs_smem, acc_layout_as_operand_a); these are written independently so
// that the backward does not depend on the forward's internals.
#pragma once

#include <cute/tensor.hpp>

#include "common/fragment_coords.hpp"
#include "common/params.hpp"

namespace flash_sigmoid::sm80 {

// (kRows, HEAD_DIM) tile of one (batch, head) slice of a [batch, seqlen, heads, head_dim] tensor,
// starting at row row0. The tile's base offset is int64; offsets inside the tile are int (the API
// bounds a slice's offsets below 2^31; rows past the sequence are never dereferenced).
template <int kRows, int kHeadDim, class Element>
CUTE_DEVICE auto gmem_rows_tile(const StridedPtr& t, int batch_idx, int head_idx, int row0) {
  using namespace cute;
  const int64_t offset = static_cast<int64_t>(batch_idx) * t.stride_batch +
                         static_cast<int64_t>(head_idx) * t.stride_head + static_cast<int64_t>(row0) * t.stride_seq;
  Element* base = static_cast<Element*>(t.ptr) + offset;
  return make_tensor(make_gmem_ptr(base), Shape<Int<kRows>, Int<kHeadDim>>{},
                     make_stride(static_cast<int>(t.stride_seq), _1{}));
}

// cp.async of one thread's partition of a tile, (CPY, CPY_ROW, CPY_COL), zero-filling rows >=
// row_limit and columns >= col_limit (coords: the tile's identity tensor, partitioned alike).
// A zero-filled copy reads no global memory (src-size 0), so its address may lie past the tensor.
template <class TiledCopy, class SrcTensor, class DstTensor, class CoordTensor>
CUTE_DEVICE void copy_tile_rows_zfill(TiledCopy const& tiled_copy, SrcTensor const& src, DstTensor&& dst,
                                      CoordTensor const& coords, int row_limit, int col_limit) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  static_assert(decltype(rank(src))::value == 3 && decltype(rank(coords))::value == 3, "(CPY, CPY_ROW, CPY_COL)");
  CUTE_UNROLL
  for (int m = 0; m < size<1>(src); ++m) {
    const bool row_ok = get<0>(coords(0, m, 0)) < row_limit;
    CUTE_UNROLL
    for (int k = 0; k < size<2>(src); ++k) {
      const bool ok = row_ok && get<1>(coords(0, m, k)) < col_limit;
      copy(tiled_copy.with(ok), src(_, m, k), dst(_, m, k));
    }
  }
}

// Shared -> global for one thread's partition of a gradient tile, (CPY, CPY_ROW, CPY_COL): rows
// >= row_limit and columns >= col_limit are neither read back nor stored.
template <class TiledCopy, class SmemTensor, class GmemTensor, class CoordTensor>
CUTE_DEVICE void store_tile_rows(TiledCopy const& tiled_copy, SmemTensor const& src, GmemTensor&& dst,
                                 CoordTensor const& coords, int row_limit, int col_limit) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  Tensor staged = make_fragment_like(src);  // (CPY, CPY_ROW, CPY_COL)
  copy(tiled_copy, src, staged);
  CUTE_UNROLL
  for (int m = 0; m < size<1>(dst); ++m) {
    if (get<0>(coords(0, m, 0)) < row_limit) {
      CUTE_UNROLL
      for (int k = 0; k < size<2>(dst); ++k) {
        if (get<1>(coords(0, m, k)) < col_limit) copy(tiled_copy, staged(_, m, k), dst(_, m, k));
      }
    }
  }
}

// A gemm_ss_pipelined step hook that does nothing.
struct NoStepWork {
  CUTE_DEVICE void operator()(int /*step*/, int /*steps*/) const {}
};

// acc += A B^T with both operands read from shared memory by ldmatrix. The fragments of k-step s+1
// are loaded while the MMAs of step s issue, so the tensor cores do not wait on shared memory.
//   a_smem / b_smem: the copy's source partitions (CPY, CPY_M|N, CPY_K);
//   a_frag / b_frag: the MMA fragments (MMA, MMA_M|N, MMA_K); a_view / b_view: the same registers
//   seen by the copy (retile_D);
//   step_work(s, steps): called after the MMAs of k-step s are issued (s and steps are constants
//   after unrolling), to interleave other instructions with the product (e.g. global reductions).
template <class TiledMma, class Acc, class SmemA, class FragA, class ViewA, class CopyA, class SmemB, class FragB,
          class ViewB, class CopyB, class StepWork = NoStepWork>
CUTE_DEVICE void gemm_ss_pipelined(TiledMma const& tiled_mma, Acc& acc, SmemA const& a_smem, FragA& a_frag,
                                   ViewA&& a_view, CopyA const& copy_a, SmemB const& b_smem, FragB& b_frag,
                                   ViewB&& b_view, CopyB const& copy_b, StepWork const& step_work = StepWork{}) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  constexpr int kSteps = decltype(size<2>(a_frag))::value;
  static_assert(kSteps == decltype(size<2>(b_frag))::value, "A and B cover the same K extent");
  static_assert(kSteps == decltype(size<2>(a_smem))::value && kSteps == decltype(size<2>(b_smem))::value,
                "the ldmatrix partitions cover the same K extent as the MMA fragments");
  copy(copy_a, a_smem(_, _, 0), a_view(_, _, 0));
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    if (s + 1 < kSteps) {
      copy(copy_a, a_smem(_, _, s + 1), a_view(_, _, s + 1));
      copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, s + 1));
    }
    gemm(tiled_mma, a_frag(_, _, s), b_frag(_, _, s), acc);
    step_work(s, kSteps);
  }
}

// acc += A B^T with A already in registers and B read from shared memory, pipelined as above.
template <class TiledMma, class Acc, class FragA, class SmemB, class FragB, class ViewB, class CopyB>
CUTE_DEVICE void gemm_rs_pipelined(TiledMma const& tiled_mma, Acc& acc, FragA const& a_frag, SmemB const& b_smem,
                                   FragB& b_frag, ViewB&& b_view, CopyB const& copy_b) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  constexpr int kSteps = decltype(size<2>(a_frag))::value;
  static_assert(kSteps == decltype(size<2>(b_frag))::value, "A and B cover the same K extent");
  copy(copy_b, b_smem(_, _, 0), b_view(_, _, 0));
  CUTE_UNROLL
  for (int s = 0; s < kSteps; ++s) {
    if (s + 1 < kSteps) copy(copy_b, b_smem(_, _, s + 1), b_view(_, _, s + 1));
    gemm(tiled_mma, a_frag(_, _, s), b_frag(_, _, s), acc);
  }
}

// The m16n8k16 accumulator of two adjacent n8 atoms holds, per thread, exactly the registers of one
// k16 step of the A operand (C values (col pair, row half) of atoms 2j and 2j+1 are A values
// (k pair, row half, k half) of step j), so a product's C becomes the next product's A with a new
// layout and no data movement: ((2,2), MMA_M, MMA_N) -> ((2,2,2), MMA_M, MMA_N/2).
template <class Layout>
CUTE_HOST_DEVICE constexpr auto accumulator_as_operand_a(Layout const& acc) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  static_assert(decltype(rank(acc))::value == 3, "(MMA, MMA_M, MMA_N)");
  static_assert(decltype(size<0>(acc))::value == 4, "m16n8 fp32 accumulator: 4 values per atom");
  static_assert(decltype(size<2>(acc))::value % 2 == 0, "n8 atoms pair up into k16 steps");
  auto split = logical_divide(acc, Shape<Underscore, Underscore, _2>{});  // ((2,2), MMA_M, (2, MMA_N/2))
  return make_layout(make_layout(get<0, 0>(split), get<0, 1>(split), get<2, 0>(split)), get<1>(split),
                     get<2, 1>(split));
}

// An fp32 accumulator fragment of tiled_mma, rounded to Element, stored into the shared-memory
// tile smem (the product's (M, N) shape) in the accumulator's own partition: each thread's
// adjacent column pairs as 32-bit stores. No barrier: the caller synchronises before others read.
template <class Element, class CopyAtom, class TiledMma, class Acc, class SmemTensor>
CUTE_DEVICE void store_accumulator(TiledMma const& tiled_mma, Acc const& acc, SmemTensor&& smem, int tidx) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  Tensor converted = convert_fragment<Element>(acc);  // (MMA, MMA_M, MMA_N)
  auto tiled_copy = make_tiled_copy_C(CopyAtom{}, tiled_mma);
  auto thr_copy = tiled_copy.get_thread_slice(tidx);
  copy(tiled_copy, thr_copy.retile_S(converted), thr_copy.partition_D(smem));
}

}  // namespace flash_sigmoid::sm80

// Layer: sm80. Where the backward's gradients leave the registers:
//   - dQ tiles added into the fp32 workspace with red.global.add.f32, paired on sm_90
//     (non-deterministic mode), and the workspace converted to dQ afterwards (scale applied there,
//     once);
//   - dK and dV of one key tile (dK scaled once), and dQ of one query tile in deterministic mode,
//     each rounded to Element and stored through shared memory as whole 16-byte vectors.
//
// Owns: the workspace layout (DqAccumLayout, which must match backward_workspace_bytes in
// src/api/validate.cpp), the conversions (round to nearest), and the predication that writes
// exactly rows < seqlen and columns < head_dim. Does not own: how the accumulators were computed
// (bwd_mainloop.hpp) or which block stores which tile (bwd_kernel.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

#include "common/params.hpp"
#include "sm80/bwd_traits.hpp"
#include "sm80/common_mma.hpp"

namespace flash_sigmoid::sm80 {

// The fp32 dQ workspace: rows = seqlen_q rounded up to 128, pitch = head_dim rounded up to 32 (not
// the kernel's head-dim bucket, which depends on what was built), so the API sizes it as
// batch * heads_q * rows * pitch floats without knowing the kernel (backward_workspace_bytes).
// Inside, it is blocked: [batch, heads_q, rows / 128, pitch / 32, 128, 32], i.e. panels of 128 rows
// by 32 columns, 16 KiB each. Within a query tile (which divides 128 rows) an element's offset is
// then a compile-time constant, (col / 32) * 4096 + row * 32 + col % 32, so the atomics need one
// base address per tile and immediates, instead of a 64-bit address per row kept in registers.
// Offsets are int64: one (batch, head) slice alone may hold more than 2^31 floats.
struct DqAccumLayout {
  static constexpr int kPanelRows = 128;
  static constexpr int kPanelCols = 32;
  static constexpr int kPanelElems = kPanelRows * kPanelCols;

  int row_panels = 0;  // rows / 128
  int col_panels = 0;  // pitch / 32
  int heads_q = 0;

  CUTE_HOST_DEVICE static DqAccumLayout make(const ProblemParams& p) {
    DqAccumLayout l;
    l.row_panels = (p.seqlen_q + kPanelRows - 1) / kPanelRows;
    l.col_panels = (p.head_dim + kPanelCols - 1) / kPanelCols;
    l.heads_q = p.heads_q;
    return l;
  }
  // Offset of (row, col) of a (batch, head) slice; col_panel = col / 32, col % 32 added by callers.
  CUTE_HOST_DEVICE int64_t offset(int batch_idx, int head_idx, int row, int col_panel) const {
    const int64_t panel = (static_cast<int64_t>(batch_idx) * heads_q + head_idx) * row_panels + row / kPanelRows;
    return (panel * col_panels + col_panel) * kPanelElems + static_cast<int64_t>(row % kPanelRows) * kPanelCols;
  }
  // Bytes of the whole workspace (must equal backward_workspace_bytes in src/api/validate.cpp).
  static size_t bytes(const ProblemParams& p) {
    const DqAccumLayout l = make(p);
    return static_cast<size_t>(p.batch) * static_cast<size_t>(p.heads_q) * static_cast<size_t>(l.row_panels) *
           static_cast<size_t>(l.col_panels) * kPanelElems * sizeof(float);
  }
};

template <class Traits>
struct Sm80BwdDqAtomicAdd {
  static constexpr int kBlockM = Traits::kBlockM;
  static constexpr int kSliceDim = Traits::kDqSliceDim;
  static_assert(DqAccumLayout::kPanelRows % kBlockM == 0, "query tiles lie inside one row panel");
  static_assert(kSliceDim % DqAccumLayout::kPanelCols == 0, "dQ slices are whole column panels");

  // The (BLK_M, DQ_SLICE) tile of the workspace that starts at `tile`: static offsets only.
  using TileLayout = cute::Layout<
      cute::Shape<cute::Int<kBlockM>, cute::Shape<cute::Int<DqAccumLayout::kPanelCols>,
                                                  cute::Int<kSliceDim / DqAccumLayout::kPanelCols>>>,
      cute::Stride<cute::Int<DqAccumLayout::kPanelCols>, cute::Stride<cute::_1, cute::Int<DqAccumLayout::kPanelElems>>>>;

  // tile(r, c) += acc_dq(r, c), one red.global.add.f32 per element (per pair on sm_90), for the
  // column panels that exist (slice_col0 + c < pitch; columns in [head_dim, pitch) add exact zeros,
  // as K's were zero-filled). acc_dq (MMA, MMA_M, MMA_N) is a TiledMmaDq accumulator of one (BLK_M,
  // DQ_SLICE) slice whose first column is slice_col0. Rows past seqlen_q add exact zeros too (their
  // dO rows were zero-filled) inside the rounded rows, so they need no predicate.
  template <class AccDq>
  CUTE_DEVICE static void add(AccDq const& acc_dq, float* tile, int slice_col0, int pitch, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    Tensor gdQ = make_tensor(make_gmem_ptr(tile), TileLayout{});  // (BLK_M, DQ_SLICE)
    typename Traits::TiledMmaDq tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(tidx);
    Tensor tdQgdQ = thr_mma.partition_C(gdQ);                                                        // (MMA, MMA_M, MMA_N)
    Tensor tdQcdQ = thr_mma.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kSliceDim>>{}));  // (MMA, MMA_M, MMA_N)
    static_assert(decltype(size(acc_dq))::value == decltype(size(tdQgdQ))::value, "one address per accumulator");
    if (slice_col0 + kSliceDim <= pitch) {
      // Every column panel of the slice exists (the head dim fills its bucket, the usual case):
      // plain reductions, with no per-element branch around them.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      // sm_90 adds two adjacent floats in one reduction (red.global.add.v2.f32): values 2j and 2j+1
      // of an accumulator atom are columns c and c+1 of one row, adjacent in the workspace, and c
      // is even, so the pair is 8-byte aligned. Half the reductions of the scalar form, which
      // otherwise fill the LSU's global-memory queue (Nsight Compute: lg_throttle stalls).
      static_assert(decltype(size<0, 0>(tdQgdQ))::value == 2 && decltype(stride<0, 0>(tdQgdQ))::value == 1,
                    "accumulator values 2j, 2j+1 are adjacent columns");
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dq); i += 2) {
        atomicAdd(reinterpret_cast<float2*>(&tdQgdQ(i)), make_float2(acc_dq(i), acc_dq(i + 1)));
      }
#else
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dq); ++i) atomicAdd(&tdQgdQ(i), acc_dq(i));
#endif
    } else {
      CUTE_UNROLL
      for (int i = 0; i < size(acc_dq); ++i) {
        if (get<1>(tdQcdQ(i)) < pitch - slice_col0) atomicAdd(&tdQgdQ(i), acc_dq(i));
      }
    }
  }
};

// Rounds a (ROWS, HEAD_DIM) accumulator to Element into a shared-memory staging tile, then stores
// it to global memory predicated on rows < row_limit and columns < head_dim. The caller guarantees
// that no thread still reads the staging buffer and no cp.async still writes it.
template <class Traits, class TiledMma, int kRows>
struct Sm80BwdTileStore {
  using Element = typename Traits::Element;
  static constexpr int kHeadDim = Traits::kHeadDim;

  template <class Acc, class SmemTensor, class GmemTensor>
  CUTE_DEVICE static void store(Acc const& acc, SmemTensor&& staging, GmemTensor&& gmem, int row_limit,
                                int head_dim, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    store_accumulator<Element, typename Traits::SmemCopyAtomStore>(TiledMma{}, acc, staging, tidx);
    // The tile is re-partitioned across threads for the global stores.
    __syncthreads();
    typename Traits::GmemTiledCopyStore gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<Int<kRows>, Int<kHeadDim>>{}));
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(staging), gmem_thr_copy.partition_D(gmem), coords,
                    row_limit, head_dim);
  }
};

// dK and dV of one key tile: dK = scale * acc_dk (scale applied here, once per element rather
// than per product), dV = acc_dv, through K's and V's shared-memory buffers.
template <class Traits>
struct Sm80BwdDkDvEpilogue {
  using Element = typename Traits::Element;
  static constexpr int kBlockN = Traits::kBlockN;
  static constexpr int kHeadDim = Traits::kHeadDim;

  template <class AccDk, class AccDv>
  CUTE_DEVICE static void store(AccDk& acc_dk, AccDv const& acc_dv, typename Traits::SharedStorage& smem,
                                const BackwardParams& params, int n_block, int kv_head_idx, int batch_idx, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    const ProblemParams& problem = params.problem;
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dk); ++i) acc_dk(i) *= problem.scale;

    Tensor sdK = make_tensor(make_smem_ptr(smem.k.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    Tensor sdV = make_tensor(make_smem_ptr(smem.v.data()), typename Traits::SmemLayoutKV{});  // (BLK_N, HEAD_DIM)
    Tensor gdK = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dk, batch_idx, kv_head_idx, n_block * kBlockN);
    Tensor gdV = gmem_rows_tile<kBlockN, kHeadDim, Element>(params.dv, batch_idx, kv_head_idx, n_block * kBlockN);
    const int row_limit = problem.seqlen_k - n_block * kBlockN;
    // Every warp has finished its last read of K and V (dQ = dS K, dP = dO V^T) before either is
    // overwritten.
    __syncthreads();
    using Store = Sm80BwdTileStore<Traits, typename Traits::TiledMmaDkv, kBlockN>;
    Store::store(acc_dk, sdK, gdK, row_limit, problem.head_dim, tidx);
    Store::store(acc_dv, sdV, gdV, row_limit, problem.head_dim, tidx);
  }
};

// Deterministic mode: dQ = scale * acc_dq of one query tile, through Q's shared-memory buffer.
template <class DqTraits>
struct Sm80BwdDqEpilogue {
  using Element = typename DqTraits::Element;
  static constexpr int kBlockM = DqTraits::kBlockM;
  static constexpr int kHeadDim = DqTraits::kHeadDim;

  template <class AccDq>
  CUTE_DEVICE static void store(AccDq& acc_dq, typename DqTraits::SharedStorage& smem, const BackwardParams& params,
                                int m_block, int head_idx, int batch_idx, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    const ProblemParams& problem = params.problem;
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) acc_dq(i) *= problem.scale;
    Tensor sdQ = make_tensor(make_smem_ptr(smem.q.data()), typename DqTraits::SmemLayoutQ{});  // (BLK_M, HEAD_DIM)
    Tensor gdQ = gmem_rows_tile<kBlockM, kHeadDim, Element>(params.dq, batch_idx, head_idx, m_block * kBlockM);
    // Every warp has finished reading Q (and any cp.async into it has landed: the mainloop's last
    // wait) before Q's buffer is overwritten.
    __syncthreads();
    Sm80BwdTileStore<DqTraits, typename DqTraits::TiledMma, kBlockM>::store(
        acc_dq, sdQ, gdQ, problem.seqlen_q - m_block * kBlockM, problem.head_dim, tidx);
  }
};

// Non-deterministic mode, after every atomic add has landed: dQ = scale * workspace, rows of one
// (query head, batch) slice, 8 columns (two 16-byte loads, one 16-byte store) per thread and step.
template <class Element>
struct Sm80BwdDqConvert {
  template <int kRows>
  CUTE_DEVICE static void run(const BackwardParams& params, int row_block, int head_idx, int batch_idx) {
    static_assert(DqAccumLayout::kPanelRows % kRows == 0, "row blocks lie inside one row panel");
    const ProblemParams& problem = params.problem;
    const DqAccumLayout layout = DqAccumLayout::make(problem);
    const int row0 = row_block * kRows;
    const int rows = min(kRows, problem.seqlen_q - row0);
    const int vectors_per_row = problem.head_dim / 8;  // the GPU API requires head_dim % 8 == 0
    const float* src = params.dq_accum + layout.offset(batch_idx, head_idx, row0, 0);
    const int64_t dst_offset = static_cast<int64_t>(batch_idx) * params.dq.stride_batch +
                               static_cast<int64_t>(head_idx) * params.dq.stride_head +
                               static_cast<int64_t>(row0) * params.dq.stride_seq;
    Element* dst = static_cast<Element*>(params.dq.ptr) + dst_offset;
    cutlass::NumericArrayConverter<Element, float, 8, cutlass::FloatRoundStyle::round_to_nearest> convert;
    for (int i = static_cast<int>(threadIdx.x); i < rows * vectors_per_row; i += static_cast<int>(blockDim.x)) {
      const int r = i / vectors_per_row;
      const int c = (i - r * vectors_per_row) * 8;
      const int64_t in_offset = static_cast<int64_t>(c / DqAccumLayout::kPanelCols) * DqAccumLayout::kPanelElems +
                                r * DqAccumLayout::kPanelCols + c % DqAccumLayout::kPanelCols;
      const float4* in = reinterpret_cast<const float4*>(src + in_offset);
      const float4 lo = in[0];
      const float4 hi = in[1];
      cutlass::Array<float, 8> values;
      values[0] = lo.x * problem.scale;
      values[1] = lo.y * problem.scale;
      values[2] = lo.z * problem.scale;
      values[3] = lo.w * problem.scale;
      values[4] = hi.x * problem.scale;
      values[5] = hi.y * problem.scale;
      values[6] = hi.z * problem.scale;
      values[7] = hi.w * problem.scale;
      const cutlass::Array<Element, 8> out = convert(values);
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(r) * params.dq.stride_seq + c) =
          *reinterpret_cast<const uint4*>(&out);
    }
  }
};

}  // namespace flash_sigmoid::sm80

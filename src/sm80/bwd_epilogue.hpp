// Layer: sm80. Where the backward's gradients leave the registers:
//   - dQ tiles added into the fp32 workspace with red.global.add.f32, paired on sm_90, whole or in
//     parts (non-deterministic mode), and the workspace converted to dQ afterwards (scale applied
//     there, once);
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
// Inside, it is blocked: [batch, heads_q, rows / 128, pitch / 8, 128, 8], i.e. panels of 128 rows
// by 8 columns, 4 KiB each. Two reasons:
//   - Within a query tile (which divides 128 rows) an element's offset is a compile-time constant,
//     (col / 8) * 1024 + row * 8 + col % 8, so the atomics need one base address per tile and
//     immediates, instead of a 64-bit address per row kept in registers.
//   - One warp-wide reduction of an m16n8 accumulator atom (8 rows x 8 columns: a column pair per
//     thread, 4 threads per row) then covers 64 contiguous floats, two 128-byte lines. With rows
//     of 32 (or more) columns it touched 8 lines, and the load/store unit's global queue, which
//     works per line, filled (Nsight Compute: lg_throttle stalls at the reductions, and the next
//     instruction waiting until they drained). Measured in docs/sm80_backward.md.
// Offsets are int64: one (batch, head) slice alone may hold more than 2^31 floats.
struct DqAccumLayout {
  static constexpr int kPanelRows = 128;
  static constexpr int kPanelCols = 8;
  static constexpr int kPanelElems = kPanelRows * kPanelCols;
  static constexpr int kPitchAlign = 32;  // the pitch is head_dim rounded up to this

  int row_panels = 0;  // rows / 128
  int col_panels = 0;  // pitch / 8
  int heads_q = 0;

  CUTE_HOST_DEVICE static DqAccumLayout make(const ProblemParams& p) {
    DqAccumLayout l;
    l.row_panels = (p.seqlen_q + kPanelRows - 1) / kPanelRows;
    l.col_panels = (p.head_dim + kPitchAlign - 1) / kPitchAlign * (kPitchAlign / kPanelCols);
    l.heads_q = p.heads_q;
    return l;
  }
  // Offset of (row, col) of a (batch, head) slice; col_panel = col / 8, col % 8 added by callers.
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

  // Whether every column panel of a slice starting at column slice_col0 exists in a workspace of
  // this pitch (the head dim fills its bucket: the usual case). Then the reductions need no
  // per-element predicate and can be issued in parts (add_part).
  CUTE_HOST_DEVICE static bool slice_in_pitch(int slice_col0, int pitch) { return slice_col0 + kSliceDim <= pitch; }

  // tile(r, c) += acc_dq(r, c) for part `part` of `parts` equal parts of the accumulator, with no
  // predicate: the caller checked slice_in_pitch. Issued in parts, the reductions can be spread
  // over another product's k-steps instead of arriving as one burst (bwd_mainloop.hpp). One
  // red.global.add per pair of values on sm_90 (red.global.add.v2.f32): values 2j and 2j+1 of an
  // accumulator atom are columns c and c+1 of one row, adjacent in the workspace, and c is even, so
  // the pair is 8-byte aligned; one per value before sm_90. acc_dq (MMA, MMA_M, MMA_N) is a
  // TiledMmaDq accumulator of one (BLK_M, DQ_SLICE) slice. Columns in [head_dim, pitch) add exact
  // zeros (K's were zero-filled), and so do rows past seqlen_q inside the rounded rows (their dO
  // rows were zero-filled), so neither needs a predicate.
  template <class AccDq>
  CUTE_DEVICE static void add_part(AccDq const& acc_dq, float* tile, int part, int parts, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    Tensor tdQgdQ = partition(tile, tidx);  // (MMA, MMA_M, MMA_N)
    static_assert(decltype(size(acc_dq))::value == decltype(size(tdQgdQ))::value, "one address per accumulator");
    static_assert(decltype(size<0, 0>(tdQgdQ))::value == 2 && decltype(stride<0, 0>(tdQgdQ))::value == 1,
                  "accumulator values 2j, 2j+1 are adjacent columns");
    constexpr int kPairs = decltype(size(acc_dq))::value / 2;
    // After unrolling, part and parts are constants where the caller's loop is unrolled, and the
    // range test folds away.
    CUTE_UNROLL
    for (int j = 0; j < kPairs; ++j) {
      if (j >= part * kPairs / parts && j < (part + 1) * kPairs / parts) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        atomicAdd(reinterpret_cast<float2*>(&tdQgdQ(2 * j)), make_float2(acc_dq(2 * j), acc_dq(2 * j + 1)));
#else
        atomicAdd(&tdQgdQ(2 * j), acc_dq(2 * j));
        atomicAdd(&tdQgdQ(2 * j + 1), acc_dq(2 * j + 1));
#endif
      }
    }
  }

  // All of tile(r, c) += acc_dq(r, c) for a slice whose first column is slice_col0, predicated on
  // the column panels that exist (slice_col0 + c < pitch) where the slice is not whole.
  template <class AccDq>
  CUTE_DEVICE static void add(AccDq const& acc_dq, float* tile, int slice_col0, int pitch, int tidx) {
    using namespace cute;
    using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
    if (slice_in_pitch(slice_col0, pitch)) {
      add_part(acc_dq, tile, 0, 1, tidx);
      return;
    }
    Tensor tdQgdQ = partition(tile, tidx);                                                             // (MMA, MMA_M, MMA_N)
    Tensor tdQcdQ = Mma{}.get_thread_slice(tidx).partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kSliceDim>>{}));
    CUTE_UNROLL
    for (int i = 0; i < size(acc_dq); ++i) {
      if (get<1>(tdQcdQ(i)) < pitch - slice_col0) atomicAdd(&tdQgdQ(i), acc_dq(i));
    }
  }

 private:
  using Mma = typename Traits::TiledMmaDq;
  // The thread's addresses of the (BLK_M, DQ_SLICE) workspace tile at `tile`, in the accumulator's
  // partition.
  CUTE_DEVICE static auto partition(float* tile, int tidx) {
    return Mma{}.get_thread_slice(tidx).partition_C(cute::make_tensor(cute::make_gmem_ptr(tile), TileLayout{}));
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
// than per product), dV = acc_dv, rounded to Element, staged in K's and V's shared-memory buffers in
// the accumulator's partition, then stored as 16-byte vectors predicated on rows < seqlen_k and
// columns < head_dim. Generic over the traits' layouts: the sm90 backward uses it too, with its
// swizzled buffers and warpgroup MMA partition (sm90/bwd_epilogue.hpp).
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
    // No cp.async still writes K or V (the mainloop's last groups are empty; a block whose query
    // range is empty issued none), and every thread is past its last product that reads them,
    // before either buffer is overwritten.
    cute::cp_async_wait<0>();
    __syncthreads();
    using StoreAtom = typename Traits::SmemCopyAtomStore;
    store_accumulator<Element, StoreAtom>(typename Traits::TiledMmaDkv{}, acc_dk, sdK, tidx);
    store_accumulator<Element, StoreAtom>(typename Traits::TiledMmaDkv{}, acc_dv, sdV, tidx);
    // Both tiles are re-partitioned across threads for the global stores.
    __syncthreads();
    typename Traits::GmemTiledCopyStore gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{}));
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdK), gmem_thr_copy.partition_D(gdK), coords, row_limit,
                    problem.head_dim);
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(sdV), gmem_thr_copy.partition_D(gdV), coords, row_limit,
                    problem.head_dim);
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
    static_assert(DqAccumLayout::kPanelCols % 8 == 0, "a thread's 8 columns lie in one panel row (two float4 loads)");
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

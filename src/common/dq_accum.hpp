// Layer: common kernel parts. The device side of the backward's fp32 dQ workspace
// (dq_accum_layout.hpp) in the atomic (default) mode, for every kernel family:
//   - DqAccumAtomicAdd: a dQ tile added into the workspace with red.global.add.f32 (paired on sm_90),
//     whole or in parts;
//   - DqAccumWorkspace: its size as a kernel owns it (what the registry reports to the API), the
//     clearing memset before the dK/dV kernel and the convert kernel after it (dQ = scale *
//     workspace, rounded to Element).
//
// Owns: the conversions (round to nearest) and the predication that writes exactly rows < seqlen_q
// and columns < head_dim. Does not own: how the dQ tiles were computed (the families' mainloops).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include <cute/tensor.hpp>
#include <cutlass/numeric_conversion.h>

#include "common/dq_accum_layout.hpp"
#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/tile_scheduler.hpp"

namespace flash_sigmoid {

// Traits: kBlockM (query rows per tile), kDqSliceDim (head-dim columns per dQ slice) and
// TiledMmaDq (the dQ product, whose accumulator partition the reductions follow).
template <class Traits>
struct DqAccumAtomicAdd {
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

// Non-deterministic mode, after every atomic add has landed: dQ = scale * workspace (and dropout's
// inverse keep rate: backward_dq_dk_scale), rows of one (query head, batch) slice, 8 columns (two
// 16-byte loads, one 16-byte store) per thread and step.
template <class Element>
struct DqAccumConvert {
  template <int kRows>
  CUTE_DEVICE static void run(const BackwardParams& params, int row_block, int head_idx, int batch_idx) {
    static_assert(DqAccumLayout::kPanelRows % kRows == 0, "row blocks lie inside one row panel");
    static_assert(DqAccumLayout::kPanelCols % 8 == 0, "a thread's 8 columns lie in one panel row (two float4 loads)");
    const ProblemParams& problem = params.problem;
    const DqAccumLayout layout = DqAccumLayout::make(problem);
    const SeqlenInfo seqlen = SeqlenInfo::make(problem, batch_idx);
    const int row0 = row_block * kRows;
    const int rows = min(kRows, seqlen.seqlen_q - row0);  // none past a packed sequence's end
    if (rows <= 0) return;
    const int vectors_per_row = problem.head_dim / 8;  // the GPU API requires head_dim % 8 == 0
    const float* src = params.dq_accum + layout.offset(batch_idx, seqlen.offset_q, head_idx, row0, 0);
    const int64_t dst_offset = static_cast<int64_t>(batch_idx) * params.dq.stride_batch +
                               static_cast<int64_t>(head_idx) * params.dq.stride_head +
                               (static_cast<int64_t>(seqlen.offset_q) + row0) * params.dq.stride_seq;
    Element* dst = static_cast<Element*>(params.dq.ptr) + dst_offset;
    const float dq_scale = backward_dq_dk_scale(problem);  // with dropout's inverse keep rate
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
      values[0] = lo.x * dq_scale;
      values[1] = lo.y * dq_scale;
      values[2] = lo.z * dq_scale;
      values[3] = lo.w * dq_scale;
      values[4] = hi.x * dq_scale;
      values[5] = hi.y * dq_scale;
      values[6] = hi.z * dq_scale;
      values[7] = hi.w * dq_scale;
      const cutlass::Array<Element, 8> out = convert(values);
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(r) * params.dq.stride_seq + c) =
          *reinterpret_cast<const uint4*>(&out);
    }
  }
};

// One block per (kRows query rows, query head, batch).
template <class Element, int kRows, int kThreads>
__global__ void __launch_bounds__(kThreads) dq_accum_convert_kernel(const __grid_constant__ BackwardParams params) {
  using Scheduler = QueryTileScheduler<kRows, /*kLongestFirst=*/false>;
  const QueryTileWork work = Scheduler::first_work(params.problem);
  DqAccumConvert<Element>::template run<kRows>(params, work.m_block, work.head_idx, work.batch_idx);
}

// The workspace as the atomic-mode backward of every family uses it.
struct DqAccumWorkspace {
  static size_t bytes(const BackwardParams& params) { return dq_accum_workspace_bytes(params); }

  // The atomics add into zeros; a problem without keys converts those zeros into dQ = 0.
  static cudaError_t clear(const BackwardParams& params, cudaStream_t stream) {
    return cudaMemsetAsync(params.dq_accum, 0, bytes(params), stream);
  }

  template <class Element>
  static cudaError_t convert(const BackwardParams& params, cudaStream_t stream) {
    constexpr int kRows = 64;
    constexpr int kThreads = 256;
    const LaunchShape shape{QueryTileScheduler<kRows, false>::grid(params.problem), kThreads, 0};
    return launch_kernel(&dq_accum_convert_kernel<Element, kRows, kThreads>, shape, stream, params);
  }
};

}  // namespace flash_sigmoid

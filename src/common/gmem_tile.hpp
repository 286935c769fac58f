// Layer: common kernel parts. Tiles of the [batch, seqlen, heads, head_dim] tensors in global
// memory, and the thread-level copies between them, shared memory and accumulator registers that
// every kernel family uses:
//   - the 16-byte-vector copy layouts (GmemTileCopies: cp.async with zero fill in, plain 16-byte
//     stores out) for a block of kNThreads threads;
//   - a (batch, head) slice or a row tile of a tensor (int64 base offset, int offsets inside);
//   - predicated tile copies (zero fill in; rows/columns past the limits neither read nor stored);
//   - an fp32 accumulator fragment rounded into a shared-memory tile in its own partition.
//
// Owns: instruction sequences over CuTe tensors whose shapes the caller chose. Does not own: tile
// shapes, shared-memory layouts, or any barrier: every function here is thread-local, and the
// caller says which barrier makes the shared memory it reads valid. Works for any TiledMMA
// (mma.sync or warpgroup) because it only asks CuTe for the accumulator's partition.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/params.hpp"
#include "common/score_variant.hpp"

namespace flash_sigmoid {

// Global memory in 16-byte vectors: a row of 8 threads covers 128 contiguous bytes (one cache
// line), or 4 threads (64 bytes) where the head dim is not a multiple of 64.
template <class Element, int kHeadDim, int kNThreads>
struct GmemTileCopies {
  static_assert(kHeadDim % 32 == 0, "head-dim buckets are multiples of 32 (whole gmem copy rows)");
  static constexpr int kElemsPer16B = 16 / int(sizeof(Element));
  static constexpr int kGmemThreadsPerRow = (kHeadDim % 64 == 0 ? 64 : 32) / kElemsPer16B;
  static constexpr int kGmemRowsPerPass = kNThreads / kGmemThreadsPerRow;
  static_assert(kNThreads % kGmemThreadsPerRow == 0, "whole rows per copy pass");
  using GmemThreadLayout = cute::Layout<cute::Shape<cute::Int<kGmemRowsPerPass>, cute::Int<kGmemThreadsPerRow>>,
                                        cute::Stride<cute::Int<kGmemThreadsPerRow>, cute::_1>>;
  using GmemValueLayout = cute::Layout<cute::Shape<cute::_1, cute::Int<kElemsPer16B>>>;
  // cp.async.cg (L2 only: K/V tiles are re-read by other blocks, never by this SM's L1) with zero
  // fill: rows past the sequence and head-dim columns past head_dim land in shared memory as zeros
  // (and read no global memory).
  using GmemTiledCopyLoad = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>, Element>{}, GmemThreadLayout{},
      GmemValueLayout{}));
  // Output tiles: 16-byte shared-memory loads, then 16-byte global stores.
  using GmemTiledCopyStore = decltype(cute::make_tiled_copy(
      cute::Copy_Atom<cute::UniversalCopy<cute::uint128_t>, Element>{}, GmemThreadLayout{}, GmemValueLayout{}));
};

// (rows, HEAD_DIM) view of one (batch, head) slice of a [batch, seqlen, heads, head_dim] tensor,
// from row first_row on: a packed sequence's rows (first_row = its offset, SeqlenInfo; the API
// sets stride_batch to 0 for packed tensors), or a dense entry's (first_row = 0). The base offset
// is int64; offsets inside the slice fit in int (validated by the API).
template <int kHeadDim, class Element>
CUTE_DEVICE auto gmem_head_slice(const StridedPtr& t, int batch_idx, int head_idx, int first_row, int rows) {
  using namespace cute;
  const int64_t offset = static_cast<int64_t>(batch_idx) * t.stride_batch +
                         static_cast<int64_t>(head_idx) * t.stride_head + static_cast<int64_t>(first_row) * t.stride_seq;
  Element* base = static_cast<Element*>(t.ptr) + offset;
  return make_tensor(make_gmem_ptr(base), make_shape(rows, Int<kHeadDim>{}),
                     make_stride(static_cast<int>(t.stride_seq), _1{}));
}

// (kRows, HEAD_DIM) tile of one (batch, head) slice, starting at row row0 of the tensor's seq
// dimension (a packed sequence's tiles add the sequence's offset, as above). The tile's base offset
// is int64; offsets inside the tile are int (the API bounds a slice's offsets below 2^31; rows past
// the sequence are never dereferenced).
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

// Shared -> global for one thread's partition of an output tile, (CPY, CPY_ROW, CPY_COL): rows
// >= row_limit and columns >= col_limit are neither read back nor stored.
template <class TiledCopy, class SmemTensor, class GmemTensor, class CoordTensor>
CUTE_DEVICE void store_tile_rows(TiledCopy const& tiled_copy, SmemTensor const& src, GmemTensor&& dst,
                                 CoordTensor const& coords, int row_limit, int col_limit) {
  using namespace cute;
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

// An fp32 accumulator fragment of tiled_mma, rounded to Element, stored into the shared-memory
// tile smem (the product's (M, N) shape) in the accumulator's own partition: each thread's
// adjacent column pairs as 32-bit stores. No barrier: the caller synchronises before others read.
template <class Element, class CopyAtom, class TiledMma, class Acc, class SmemTensor>
CUTE_DEVICE void store_accumulator(TiledMma const& tiled_mma, Acc const& acc, SmemTensor&& smem, int tidx) {
  using namespace cute;
  Tensor converted = convert_fragment<Element>(acc);  // (MMA, MMA_M, MMA_N)
  auto tiled_copy = make_tiled_copy_C(CopyAtom{}, tiled_mma);
  auto thr_copy = tiled_copy.get_thread_slice(tidx);
  copy(tiled_copy, thr_copy.retile_S(converted), thr_copy.partition_D(smem));
}

// Rounds a (ROWS, HEAD_DIM) accumulator to Element into a shared-memory staging tile, then stores
// it to global memory predicated on rows < row_limit and columns < head_dim. The traits name the
// store atom and the global copy (over the threads that call this). The caller guarantees that no
// thread still reads the staging buffer and no cp.async still writes it. sync: the barrier of the
// storing threads between the two steps (all of the block's by default).
struct BlockSync {
  CUTE_DEVICE void operator()() const { __syncthreads(); }
};

template <class Traits, class TiledMma, int kRows>
struct AccumulatorTileStore {
  using Element = typename Traits::Element;
  static constexpr int kHeadDim = Traits::kHeadDim;

  template <class Acc, class SmemTensor, class GmemTensor, class Sync = BlockSync>
  CUTE_DEVICE static void store(Acc const& acc, SmemTensor&& staging, GmemTensor&& gmem, int row_limit,
                                int head_dim, int tidx, Sync sync = {}) {
    using namespace cute;
    store_accumulator<Element, typename Traits::SmemCopyAtomStore>(TiledMma{}, acc, staging, tidx);
    // The tile is re-partitioned across threads for the global stores.
    sync();
    typename Traits::GmemTiledCopyStore gmem_tiled_copy;
    auto gmem_thr_copy = gmem_tiled_copy.get_thread_slice(tidx);
    Tensor coords = gmem_thr_copy.partition_D(make_identity_tensor(Shape<Int<kRows>, Int<kHeadDim>>{}));
    store_tile_rows(gmem_tiled_copy, gmem_thr_copy.partition_S(staging), gmem_thr_copy.partition_D(gmem), coords,
                    row_limit, head_dim);
  }
};

}  // namespace flash_sigmoid

// Layer: sm90. Compile-time configuration of the Hopper forward (wgmma) for one (Element, head-dim
// bucket): the tile table, the two warpgroup MMAs, the swizzled shared-memory layouts (V also seen
// transposed) and the copies.
//
// Owns: kSm90FwdTileTable and the CuTe types derived from a row. Does not own: any run-time value
// or instruction sequence (fwd_mainloop.hpp), or the global copies' shapes, which are common to
// every family (common/gmem_tile.hpp: 16-byte cp.async with zero fill, 16-byte stores).
// docs/sm90.md explains the choices.
#pragma once

#include <type_traits>

#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "common/gmem_tile.hpp"
#include "sm90/common_layouts.hpp"

namespace flash_sigmoid::sm90 {

// Per thread block: two warpgroups (256 threads), each owning 64 rows of the kBlockM = 128 query
// rows, and kBlockN keys per step; K and V double-buffered.
struct Sm90FwdTileShape {
  int head_dim;
  int block_m;
  int block_n;
};

inline constexpr Sm90FwdTileShape kSm90FwdTileTable[] = {
    // head_dim, block_m, block_n
    {64, 128, 128},
    {128, 128, 128},
};

constexpr Sm90FwdTileShape sm90_fwd_tile_shape(int head_dim) {
  for (const Sm90FwdTileShape& row : kSm90FwdTileTable) {
    if (row.head_dim == head_dim) return row;
  }
  return Sm90FwdTileShape{0, 0, 0};
}

template <class Element_, int kHeadDim_>
struct Sm90FwdTraits {
  using Element = Element_;
  static constexpr Sm90FwdTileShape kShape = sm90_fwd_tile_shape(kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kSm90FwdTileTable");
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>,
                "the sm90 forward takes fp16 or bf16 operands");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kNWarpGroups = kBlockM / 64;
  static constexpr int kNThreads = kNWarpGroups * 128;
  static constexpr int kStages = 2;
  static_assert(kBlockM % 64 == 0 && kHeadDim % 64 == 0 && kBlockN % 64 == 0, "whole 64-row GMMA tiles and 128-byte rows");

  // S = Q K^T: (BLK_M, BLK_N), K extent HEAD_DIM, both operands K-major; warpgroup w owns query rows
  // [64 w, 64 w + 64).
  using TiledMmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpGroups>, cute::_1, cute::_1>>{}));
  // O += P V: (BLK_M, HEAD_DIM), K extent BLK_N; A = P from the S accumulator's registers, B = V read
  // along the head dim (MN-major).
  using TiledMmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpGroups>, cute::_1, cute::_1>>{}));

  // 128-byte-swizzled rows (common_layouts.hpp); P V reads V through its transposed view.
  using SmemLayoutQ = RowsLayout<Element, kBlockM, kHeadDim>;             // (BLK_M, HEAD_DIM)
  using SmemLayoutKV = RowsLayout<Element, kBlockN, kHeadDim, kStages>;  // (BLK_N, HEAD_DIM, STAGE)
  using SmemLayoutVt = TransposedLayout<SmemLayoutKV>;                   // (HEAD_DIM, BLK_N, STAGE)
  using SmemCopyAtomStore = cute::Copy_Atom<cute::UniversalCopy<uint32_t>, Element>;

  using GmemCopies = GmemTileCopies<Element, kHeadDim, kNThreads>;
  using GmemTiledCopyLoad = typename GmemCopies::GmemTiledCopyLoad;
  using GmemTiledCopyStore = typename GmemCopies::GmemTiledCopyStore;
  static_assert(kBlockM % GmemCopies::kGmemRowsPerPass == 0 && kBlockN % GmemCopies::kGmemRowsPerPass == 0,
                "tiles are whole copy passes");

  struct SharedStorage {
    cute::array_aligned<Element, kBlockM * kHeadDim, 1024> q;  // Q, then O in the epilogue
    cute::array_aligned<Element, kBlockN * kHeadDim * kStages, 1024> k;
    cute::array_aligned<Element, kBlockN * kHeadDim * kStages, 1024> v;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;  // + alignment slack of the dynamic base
};

}  // namespace flash_sigmoid::sm90

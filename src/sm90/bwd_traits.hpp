// Layer: sm90. Compile-time configuration of the Hopper backward (wgmma) for one (Element, head-dim
// bucket): the tile table, the three warpgroup MMAs, the swizzled shared-memory layouts and their
// transposed views, and the copies.
//
// Owns: kSm90BwdTileTable and the CuTe types derived from a row. Does not own: any run-time value
// or instruction sequence (bwd_mainloop.hpp), or the global copies' shapes, which are common to
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

// Per thread block: kBlockN = 128 keys, two warpgroups (256 threads), kBlockM query rows per step.
// Warpgroup w owns keys [64 w, 64 w + 64) of the key tile for S^T, dP^T, dV and dK, so the S^T and
// dP^T accumulators of a warpgroup are the A operands (from registers) of its own dV and dK
// products. dQ (BLK_M x HEAD_DIM) is split between the two warpgroups: dq_wg_m of them along the
// query rows, the rest along the head dim (64 x 64 each at both head dims).
struct Sm90BwdTileShape {
  int head_dim;
  int block_m;
  int block_n;
  int dq_wg_m;
};

inline constexpr Sm90BwdTileShape kSm90BwdTileTable[] = {
    // head_dim, block_m, block_n, dq_wg_m
    {64, 128, 128, 2},
    {128, 64, 128, 1},
};

constexpr Sm90BwdTileShape sm90_bwd_tile_shape(int head_dim) {
  for (const Sm90BwdTileShape& row : kSm90BwdTileTable) {
    if (row.head_dim == head_dim) return row;
  }
  return Sm90BwdTileShape{0, 0, 0, 0};
}

template <class Element_, int kHeadDim_>
struct Sm90BwdTraits {
  using Element = Element_;
  using ElementAccum = float;
  static constexpr Sm90BwdTileShape kShape = sm90_bwd_tile_shape(kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kSm90BwdTileTable");
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>,
                "the sm90 backward takes fp16 or bf16 operands");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kNWarpGroups = 2;
  static constexpr int kNThreads = kNWarpGroups * 128;
  static constexpr int kStages = 2;  // Q and dO: the next query tile lands while this one is used
  static constexpr int kDqWgM = kShape.dq_wg_m;
  static constexpr int kDqWgN = kNWarpGroups / kDqWgM;
  // The names DqAccumAtomicAdd reads: dQ is one slice of the whole head dim.
  static constexpr int kDqSliceDim = kHeadDim;
  static_assert(kBlockN == 64 * kNWarpGroups, "one 64-key slice of the key tile per warpgroup");
  static_assert(128 % kBlockM == 0, "query tiles tile the 128-row rounding of the dQ workspace");

  // ---- The products. GMMA atoms are 64 rows (M) by N by 16 (K).
  // S^T = K Q^T and dP^T = V dO^T: (BLK_N, BLK_M), K extent HEAD_DIM; both operands K-major.
  using TiledMmaSdP = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kBlockM>, cute::Int<kHeadDim>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpGroups>, cute::_1, cute::_1>>{}));
  // dV += P^T dO and dK += dZ^T Q: (BLK_N, HEAD_DIM), K extent BLK_M. A (P^T, dZ^T) from the S^T and
  // dP^T accumulators in registers; B (dO, Q) read along the head dim, i.e. MN-major.
  using TiledMmaDkv = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockM>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kNWarpGroups>, cute::_1, cute::_1>>{}));
  // dQ = dZ K: (BLK_M, HEAD_DIM), K extent BLK_N. A = dZ from shared memory (written as dZ^T, so
  // MN-major), B = K read along the head dim (MN-major).
  using TiledMmaDq = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float,
                                 cute::Shape<cute::Int<kBlockM / kDqWgM>, cute::Int<kHeadDim / kDqWgN>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::MN, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kDqWgM>, cute::Int<kDqWgN>, cute::_1>>{}));

  // ---- Shared memory: 128-byte-swizzled rows (common_layouts.hpp), 1 KiB aligned. Each tile is
  // written once, row-major as it comes from global memory (or as dZ^T from the accumulators), and
  // read by the products either way round through its transposed view.
  static_assert(kHeadDim % 64 == 0 && kBlockM % 64 == 0, "whole 128-byte swizzle rows");
  using SmemLayoutQ = RowsLayout<Element, kBlockM, kHeadDim, kStages>;  // (BLK_M, HEAD_DIM, STAGE), also dO
  using SmemLayoutQt = TransposedLayout<SmemLayoutQ>;                   // (HEAD_DIM, BLK_M, STAGE)
  using SmemLayoutKV = RowsLayout<Element, kBlockN, kHeadDim>;          // (BLK_N, HEAD_DIM)
  using SmemLayoutKt = TransposedLayout<SmemLayoutKV>;                  // (HEAD_DIM, BLK_N)
  using SmemLayoutdZt = RowsLayout<Element, kBlockN, kBlockM>;          // (BLK_N, BLK_M)
  using SmemLayoutdZ = TransposedLayout<SmemLayoutdZt>;                 // (BLK_M, BLK_N)

  // dZ^T accumulator pairs (two adjacent query columns, converted) as 32-bit shared stores; dK and
  // dV staged the same way.
  using SmemCopyAtomStore = cute::Copy_Atom<cute::UniversalCopy<uint32_t>, Element>;

  // Global copies (common/gmem_tile.hpp): 8 threads x 16 bytes per 64-column row, 256 threads.
  using GmemCopies = GmemTileCopies<Element, kHeadDim, kNThreads>;
  using GmemTiledCopyLoad = typename GmemCopies::GmemTiledCopyLoad;
  using GmemTiledCopyStore = typename GmemCopies::GmemTiledCopyStore;
  static_assert(kBlockM % GmemCopies::kGmemRowsPerPass == 0 && kBlockN % GmemCopies::kGmemRowsPerPass == 0,
                "tiles are whole copy passes");

  static constexpr int kQTileElems = kBlockM * kHeadDim;
  static constexpr int kKVTileElems = kBlockN * kHeadDim;
  static constexpr int kdZTileElems = kBlockN * kBlockM;
  struct SharedStorage {
    cute::array_aligned<Element, kQTileElems * kStages, 1024> q;
    cute::array_aligned<Element, kQTileElems * kStages, 1024> dout;
    cute::array_aligned<Element, kKVTileElems, 1024> k;  // K, then dK in the epilogue
    cute::array_aligned<Element, kKVTileElems, 1024> v;  // V, then dV in the epilogue
    cute::array_aligned<Element, kdZTileElems, 1024> dz;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;  // + alignment slack of the dynamic base
};

}  // namespace flash_sigmoid::sm90

// Layer: sm80. Compile-time configuration of the Ampere forward kernel for one (Element, head-dim
// bucket): the tile table, the tiled MMA, shared-memory layouts and every copy the kernel uses.
//
// Owns: the one table of tile shapes (kFwdTileTable), and the CuTe types derived from a row of it.
// Does not own: any run-time value (sizes, strides, pointers) or any instruction sequence; the
// mainloop, epilogue and kernel read these types and never choose tile shapes themselves.
// docs/sm80_forward.md explains each choice.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "common/gmem_tile.hpp"

namespace flash_sigmoid::sm80 {

// One row per head-dim bucket. kBlockM query rows and kBlockN keys per tile, kNWarps warps, each
// warp owning 16-row slices of the query tile (MMA_M = kBlockM / (16 * kNWarps) slices).
struct FwdTileShape {
  int head_dim;
  int block_m;
  int block_n;
  int warps;
};

inline constexpr FwdTileShape kFwdTileTable[] = {
    // head_dim, block_m, block_n, warps
    {32, 128, 128, 4},
    {64, 128, 64, 4},
    {96, 128, 64, 4},
    {128, 128, 48, 4},
    {160, 128, 64, 8},
    {192, 128, 64, 8},
    {224, 128, 64, 8},
    {256, 128, 64, 8},
};

constexpr FwdTileShape fwd_tile_shape(int head_dim) {
  for (const FwdTileShape& row : kFwdTileTable) {
    if (row.head_dim == head_dim) return row;
  }
  return FwdTileShape{0, 0, 0, 0};
}

template <class Element_, int kHeadDim_>
struct Sm80FwdTraits {
  using Element = Element_;
  using ElementAccum = float;

  static constexpr FwdTileShape kShape = fwd_tile_shape(kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kFwdTileTable");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kNWarps = kShape.warps;
  static constexpr int kNThreads = kNWarps * 32;

  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>,
                "the sm80 forward kernel takes fp16 or bf16 operands");

  // ---- Tensor cores: warps stacked along M, each warp a 16 x 16 (M x N) tile of m16n8k16 atoms.
  // The N permutation of 16 lets one ldmatrix.x4 feed two n8 atoms with a 16 x 16 B tile.
  using MmaOp = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, cute::SM80_16x8x16_F32F16F16F32_TN,
                                   cute::SM80_16x8x16_F32BF16BF16F32_TN>;
  using TiledMma = cute::TiledMMA<cute::MMA_Atom<MmaOp>, cute::Layout<cute::Shape<cute::Int<kNWarps>, cute::_1, cute::_1>>,
                                  cute::Tile<cute::Int<16 * kNWarps>, cute::_16, cute::_16>>;

  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole 16-row MMA slices of the query tile");
  static_assert(kBlockN % 16 == 0, "the key tile is the K extent of P @ V: whole k16 steps");

  // ---- Shared memory: row-major tiles whose rows are padded by 16 bytes. A row pitch of
  // (kHeadDim + 8) elements is 4 or 20 banks mod 32, so the 8 rows of one ldmatrix phase (and of
  // the O fragment stores) hit 8 distinct 16-byte bank groups: conflict free, like an XOR swizzle.
  // Unlike a swizzle, every fragment address is the thread's base plus a compile-time immediate,
  // so ldmatrix needs one address register per operand instead of one per swizzle phase (about
  // 17 registers fewer at head dim 128, where the kernel has none to spare; docs/sm80_forward.md).
  static constexpr int kRowPitch = kHeadDim + 8;
  static_assert((kRowPitch * 2) % 16 == 0, "rows start 16-byte aligned (cp.async, ldmatrix)");
  static_assert((kRowPitch / 2) % 32 == 4 || (kRowPitch / 2) % 32 == 20,
                "row pitch of 4 or 20 banks: 8 consecutive rows cover all 32 banks");
  using SmemLayoutQ = cute::Layout<cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>,
                                   cute::Stride<cute::Int<kRowPitch>, cute::_1>>;
  using SmemLayoutKV = cute::Layout<cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>,
                                    cute::Stride<cute::Int<kRowPitch>, cute::_1>>;
  // V seen as the (HEAD_DIM, BLK_N) B operand of P @ V: the same bytes, transposed view.
  using SmemLayoutVt = cute::Layout<cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                    cute::Stride<cute::_1, cute::Int<kRowPitch>>>;
  // O reuses Q's buffer (same shape; Q is dead once the last Q K^T product is done).
  using SmemLayoutO = SmemLayoutQ;

  // ldmatrix: Q and K non-transposed (A and B of the TN product), V transposed.
  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, Element>;
  // O accumulator pairs (two adjacent columns) to shared memory as 32-bit stores.
  using SmemCopyAtomStore = cute::Copy_Atom<cute::UniversalCopy<uint32_t>, Element>;

  struct SharedStorage {
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutQ>, 128> q;  // Q, then O
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>, 128> k;
    cute::array_aligned<Element, cute::cosize_v<SmemLayoutKV>, 128> v;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));

  // ---- Global memory: 16-byte vectors (common/gmem_tile.hpp): cp.async.cg with zero fill for Q,
  // K and V, so out-of-range rows and head-dim columns land in shared memory as zeros; O through
  // 16-byte shared-memory loads, then 16-byte global stores.
  using GmemCopies = GmemTileCopies<Element, kHeadDim, kNThreads>;
  static_assert(kBlockM % GmemCopies::kGmemRowsPerPass == 0 && kBlockN % GmemCopies::kGmemRowsPerPass == 0,
                "tiles are whole copy passes (no partial thread rows)");
  using GmemTiledCopyLoad = typename GmemCopies::GmemTiledCopyLoad;
  using GmemTiledCopyStore = typename GmemCopies::GmemTiledCopyStore;
};

}  // namespace flash_sigmoid::sm80

// Layer: sm80. Compile-time configuration of the Ampere backward kernels for one (Element, head-dim
// bucket): the two tile tables, the tiled MMAs, shared-memory layouts and every copy the kernels use.
//
//   Sm80BwdTraits    the dK/dV kernel: one key tile per thread block, looping over query tiles; it
//                    also accumulates dQ into the fp32 workspace with atomics (non-deterministic).
//   Sm80BwdDqTraits  the deterministic dQ kernel: one query tile per thread block, looping over
//                    key tiles (the forward's shape).
//
// Owns: the tile tables (kBwdTileTable, kBwdDqTileTable) and the CuTe types derived from a row.
// Does not own: any run-time value or instruction sequence. docs/sm80_backward.md explains each
// choice; shared-memory conventions (padded rows instead of a swizzle) follow sm80/fwd_traits.hpp.
#pragma once

#include <type_traits>

#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "common/gmem_tile.hpp"

namespace flash_sigmoid::sm80 {

// ---- The dK/dV kernel's tiles. Per thread block: kBlockN keys, kBlockM query rows per step,
// kNWarps warps. The three products that tile differently each get their own warp arrangement:
//   S, dP (BLK_M x BLK_N)      sdp_warps_m warps along the query rows, the rest along the keys
//   dK, dV (BLK_N x HEAD_DIM)  dkv_warps_n warps along the keys, the rest along the head dim
//   dQ (BLK_M x HEAD_DIM)      dq_warps_m warps along the query rows, the rest along the head dim
// q_stages = 2 double-buffers Q (the next query tile loads while this one is used); 1 where shared
// memory must stay within the A100's 163 KiB. dq_splits > 1 computes dQ = dZ K in that many
// head-dim slices, one after the other, so that only one slice's accumulator is live next to the
// dK/dV accumulators (head dim 256: 32 registers instead of 64; dZ is read once per slice).
// sdp_splits > 1 forms S, P, dP and dZ in that many key-column slices of the tile, one after the
// other, for the same reason: P must stay in fp32 registers until its dP is formed, and next to the
// dK/dV accumulators only a slice of S and dP fits (Q and dO fragments are re-read per slice).
// Head dims 64, 96 and 128 fit the whole tile (one slice, 2-11% faster; docs/sm80_backward.md).
struct BwdTileShape {
  int head_dim;
  int block_m;
  int block_n;
  int warps;
  int sdp_warps_m;
  int dkv_warps_n;
  int dq_warps_m;
  int q_stages;
  int dq_splits;
  int sdp_splits;
};

inline constexpr BwdTileShape kBwdTileTable[] = {
    // head_dim, block_m, block_n, warps, sdp_warps_m, dkv_warps_n, dq_warps_m, q_stages, dq_splits, sdp_splits
    {32, 128, 128, 8, 4, 4, 4, 2, 1, 2},
    {64, 128, 128, 8, 2, 4, 4, 2, 1, 1},
    {96, 64, 128, 8, 2, 4, 4, 2, 1, 1},
    {128, 64, 128, 8, 2, 4, 2, 2, 1, 1},
    {160, 64, 64, 8, 4, 4, 4, 2, 1, 1},
    {192, 64, 64, 8, 4, 2, 2, 2, 1, 1},
    {224, 64, 64, 8, 4, 4, 4, 1, 1, 1},
    {256, 64, 64, 8, 4, 2, 2, 1, 2, 1},
};

constexpr BwdTileShape bwd_tile_shape(int head_dim) {
  for (const BwdTileShape& row : kBwdTileTable) {
    if (row.head_dim == head_dim) return row;
  }
  return BwdTileShape{0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
}

// ---- The deterministic dQ kernel's tiles: warps stacked along the query rows (each warp owns
// 16-row slices), kBlockN keys per step with K and V double-buffered.
struct BwdDqTileShape {
  int head_dim;
  int block_m;
  int block_n;
  int warps;
};

inline constexpr BwdDqTileShape kBwdDqTileTable[] = {
    // head_dim, block_m, block_n, warps
    {32, 128, 128, 8},
    {64, 128, 64, 8},
    {96, 128, 64, 8},
    {128, 128, 64, 8},
    {160, 64, 64, 4},
    {192, 64, 64, 4},
    {224, 64, 32, 4},
    {256, 64, 32, 4},
};

constexpr BwdDqTileShape bwd_dq_tile_shape(int head_dim) {
  for (const BwdDqTileShape& row : kBwdDqTileTable) {
    if (row.head_dim == head_dim) return row;
  }
  return BwdDqTileShape{0, 0, 0, 0};
}

// What both kernels share: operand types, the MMA atom, the ldmatrix atoms and the global copies.
// Global copies (16-byte cp.async with zero fill in, 16-byte stores out) from common/gmem_tile.hpp.
template <class Element_, int kHeadDim_, int kNThreads_>
struct Sm80BwdCommon : GmemTileCopies<Element_, kHeadDim_, kNThreads_> {
  using Element = Element_;
  using ElementAccum = float;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kNThreads = kNThreads_;
  using Copies = GmemTileCopies<Element_, kHeadDim_, kNThreads_>;

  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>,
                "the sm80 backward kernels take fp16 or bf16 operands");
  static_assert(kHeadDim % 32 == 0, "head-dim buckets are multiples of 32 (whole gmem copy rows)");

  using MmaOp = std::conditional_t<std::is_same_v<Element, cutlass::half_t>, cute::SM80_16x8x16_F32F16F16F32_TN,
                                   cute::SM80_16x8x16_F32BF16BF16F32_TN>;
  // kWarpsM x kWarpsN warps of m16n8k16 atoms. The N permutation of 16 per warp lets one
  // ldmatrix.x4 feed two n8 atoms with a 16 x 16 B tile (both the .trans and the plain form).
  template <int kWarpsM, int kWarpsN>
  using TiledMmaWarps =
      cute::TiledMMA<cute::MMA_Atom<MmaOp>, cute::Layout<cute::Shape<cute::Int<kWarpsM>, cute::Int<kWarpsN>, cute::_1>>,
                     cute::Tile<cute::Int<16 * kWarpsM>, cute::Int<16 * kWarpsN>, cute::_16>>;

  // Rows of head-dim tiles (Q, dO, K, V, and dQ/dK/dV staging) padded by 16 bytes: a pitch of 4 or
  // 20 banks mod 32, so the 8 rows of one ldmatrix phase (plain or transposed) and of the
  // accumulator-pair stores hit 8 distinct 16-byte bank groups (sm80/fwd_traits.hpp).
  static constexpr int kRowPitch = kHeadDim + 8;
  static_assert((kRowPitch / 2) % 32 == 4 || (kRowPitch / 2) % 32 == 20,
                "row pitch of 4 or 20 banks: 8 consecutive rows cover all 32 banks");

  // ldmatrix: plain for operands whose K extent is contiguous in shared memory, transposed for
  // the others (all of dV = P^T dO, dK = dZ^T Q, and K as the B operand of dQ = dZ K).
  using SmemCopyAtom = cute::Copy_Atom<cute::SM75_U32x4_LDSM_N, Element>;
  using SmemCopyAtomTransposed = cute::Copy_Atom<cute::SM75_U16x8_LDSM_T, Element>;
  // Accumulator pairs (two adjacent columns, converted) to shared memory as 32-bit stores.
  using SmemCopyAtomStore = cute::Copy_Atom<cute::UniversalCopy<uint32_t>, Element>;

  // (ROWS, HEAD_DIM) padded row-major tile, and its (HEAD_DIM, ROWS) transposed view.
  template <int kRows>
  using SmemLayoutRows = cute::Layout<cute::Shape<cute::Int<kRows>, cute::Int<kHeadDim>>,
                                      cute::Stride<cute::Int<kRowPitch>, cute::_1>>;
  template <int kRows>
  using SmemLayoutRowsT = cute::Layout<cute::Shape<cute::Int<kHeadDim>, cute::Int<kRows>>,
                                       cute::Stride<cute::_1, cute::Int<kRowPitch>>>;
};

template <class Element_, int kHeadDim_>
struct Sm80BwdTraits : Sm80BwdCommon<Element_, kHeadDim_, bwd_tile_shape(kHeadDim_).warps * 32> {
  using Base = Sm80BwdCommon<Element_, kHeadDim_, bwd_tile_shape(kHeadDim_).warps * 32>;
  using Element = typename Base::Element;
  using Base::kHeadDim;
  using Base::kNThreads;
  using Base::kRowPitch;

  static constexpr BwdTileShape kShape = bwd_tile_shape(kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kBwdTileTable");

  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kNWarps = kShape.warps;
  static constexpr int kQStages = kShape.q_stages;
  static constexpr int kDqSplits = kShape.dq_splits;
  static constexpr int kDqSliceDim = kHeadDim / kDqSplits;  // head-dim columns per dQ slice
  static constexpr int kSdpSplits = kShape.sdp_splits;
  static constexpr int kSdpSliceN = kBlockN / kSdpSplits;  // key columns per S/dP slice

  // S = Q K^T and dP = dO V^T: (BLK_M, BLK_N), K extent HEAD_DIM.
  using TiledMmaSdP = typename Base::template TiledMmaWarps<kShape.sdp_warps_m, kNWarps / kShape.sdp_warps_m>;
  // dV += P^T dO and dK += dZ^T Q: (BLK_N, HEAD_DIM), K extent BLK_M.
  using TiledMmaDkv = typename Base::template TiledMmaWarps<kShape.dkv_warps_n, kNWarps / kShape.dkv_warps_n>;
  // dQ = dZ K: (BLK_M, DQ_SLICE) per slice, K extent BLK_N.
  using TiledMmaDq = typename Base::template TiledMmaWarps<kShape.dq_warps_m, kNWarps / kShape.dq_warps_m>;

  static_assert(kNWarps % kShape.sdp_warps_m == 0 && kNWarps % kShape.dkv_warps_n == 0 &&
                    kNWarps % kShape.dq_warps_m == 0,
                "warp arrangements use every warp");
  static_assert(kBlockN % kSdpSplits == 0, "S/dP slices split the key tile evenly");
  static_assert(kBlockM % (16 * kShape.sdp_warps_m) == 0 && kSdpSliceN % (16 * (kNWarps / kShape.sdp_warps_m)) == 0,
                "S and dP: whole MMA tiles per slice");
  static_assert(kBlockN % (16 * kShape.dkv_warps_n) == 0 && kHeadDim % (16 * (kNWarps / kShape.dkv_warps_n)) == 0,
                "dK and dV: whole MMA tiles");
  static_assert(kHeadDim % kDqSplits == 0 && kDqSliceDim % 32 == 0, "dQ slices are whole workspace panels");
  static_assert(kBlockM % (16 * kShape.dq_warps_m) == 0 && kDqSliceDim % (16 * (kNWarps / kShape.dq_warps_m)) == 0,
                "dQ: whole MMA tiles");
  static_assert(kBlockM % 16 == 0 && kBlockN % 16 == 0, "K extents of the dK/dV and dQ products: whole k16 steps");
  // dq_accum rows are rounded up to 128 (api/validate.cpp), so a query tile never crosses it.
  static_assert(128 % kBlockM == 0, "query tiles tile the 128-row rounding of the dQ workspace");
  static_assert(kQStages == 1 || kQStages == 2, "Q is single- or double-buffered");
  static_assert(kBlockM % Base::Copies::kGmemRowsPerPass == 0 && kBlockN % Base::Copies::kGmemRowsPerPass == 0,
                "tiles are whole copy passes (no partial thread rows)");

  // ---- Shared memory. Q and dO tiles (BLK_M, HEAD_DIM), K and V (BLK_N, HEAD_DIM), P and dZ
  // (BLK_M, BLK_N), every one padded row-major with a transposed view for the products that read
  // it along the other mode.
  static constexpr int kPdzPitch = kBlockN + 8;
  static_assert((kPdzPitch / 2) % 32 == 4 || (kPdzPitch / 2) % 32 == 20, "P/dZ row pitch: conflict free");
  static constexpr int kQTileElems = kBlockM * kRowPitch;  // one Q stage (also dO)
  static constexpr int kKVTileElems = kBlockN * kRowPitch;
  static constexpr int kPdzTileElems = kBlockM * kPdzPitch;

  using SmemLayoutQ = cute::Layout<cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>, cute::Int<kQStages>>,
                                   cute::Stride<cute::Int<kRowPitch>, cute::_1, cute::Int<kQTileElems>>>;
  using SmemLayoutQt = cute::Layout<cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockM>, cute::Int<kQStages>>,
                                    cute::Stride<cute::_1, cute::Int<kRowPitch>, cute::Int<kQTileElems>>>;
  using SmemLayoutdO = typename Base::template SmemLayoutRows<kBlockM>;
  using SmemLayoutdOt = typename Base::template SmemLayoutRowsT<kBlockM>;
  using SmemLayoutKV = typename Base::template SmemLayoutRows<kBlockN>;
  using SmemLayoutKVt = typename Base::template SmemLayoutRowsT<kBlockN>;
  using SmemLayoutPdz = cute::Layout<cute::Shape<cute::Int<kBlockM>, cute::Int<kBlockN>>,
                                     cute::Stride<cute::Int<kPdzPitch>, cute::_1>>;
  using SmemLayoutPdzt = cute::Layout<cute::Shape<cute::Int<kBlockN>, cute::Int<kBlockM>>,
                                      cute::Stride<cute::_1, cute::Int<kPdzPitch>>>;

  struct SharedStorage {
    cute::array_aligned<Element, kQTileElems * kQStages, 128> q;
    cute::array_aligned<Element, kQTileElems, 128> dout;
    cute::array_aligned<Element, kKVTileElems, 128> k;  // K, then dK in the epilogue
    cute::array_aligned<Element, kKVTileElems, 128> v;  // V, then dV in the epilogue
    cute::array_aligned<Element, kPdzTileElems, 128> p;
    cute::array_aligned<Element, kPdzTileElems, 128> dz;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 163 * 1024, "fits the A100's opt-in shared memory per block");
};

template <class Element_, int kHeadDim_>
struct Sm80BwdDqTraits : Sm80BwdCommon<Element_, kHeadDim_, bwd_dq_tile_shape(kHeadDim_).warps * 32> {
  using Base = Sm80BwdCommon<Element_, kHeadDim_, bwd_dq_tile_shape(kHeadDim_).warps * 32>;
  using Element = typename Base::Element;
  using Base::kHeadDim;
  using Base::kNThreads;
  using Base::kRowPitch;

  static constexpr BwdDqTileShape kShape = bwd_dq_tile_shape(kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kBwdDqTileTable");

  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kNWarps = kShape.warps;
  static constexpr int kKVStages = 2;

  // Warps stacked along the query rows, so S, dP and dQ share one row partition and dZ moves from
  // the dP accumulator to the A operand of dZ K in registers (as P does in the forward).
  using TiledMma = typename Base::template TiledMmaWarps<kNWarps, 1>;
  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole 16-row MMA slices of the query tile");
  static_assert(kBlockN % 16 == 0, "the key tile is the K extent of dZ K: whole k16 steps");
  static_assert(kBlockM % Base::Copies::kGmemRowsPerPass == 0 && kBlockN % Base::Copies::kGmemRowsPerPass == 0,
                "tiles are whole copy passes (no partial thread rows)");

  static constexpr int kQTileElems = kBlockM * kRowPitch;
  static constexpr int kKVTileElems = kBlockN * kRowPitch;
  using SmemLayoutQ = typename Base::template SmemLayoutRows<kBlockM>;
  using SmemLayoutKV = cute::Layout<cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>, cute::Int<kKVStages>>,
                                    cute::Stride<cute::Int<kRowPitch>, cute::_1, cute::Int<kKVTileElems>>>;
  using SmemLayoutKt = cute::Layout<cute::Shape<cute::Int<kHeadDim>, cute::Int<kBlockN>, cute::Int<kKVStages>>,
                                    cute::Stride<cute::_1, cute::Int<kRowPitch>, cute::Int<kKVTileElems>>>;

  struct SharedStorage {
    cute::array_aligned<Element, kQTileElems, 128> q;  // Q, then dQ in the epilogue
    cute::array_aligned<Element, kQTileElems, 128> dout;
    cute::array_aligned<Element, kKVTileElems * kKVStages, 128> k;
    cute::array_aligned<Element, kKVTileElems * kKVStages, 128> v;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage));
  static_assert(kSmemBytes <= 163 * 1024, "fits the A100's opt-in shared memory per block");
};

}  // namespace flash_sigmoid::sm80

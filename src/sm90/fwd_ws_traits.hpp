// Layer: sm90. Compile-time configuration of the warp-specialized Hopper forward (TMA loads, one
// producer warp, two consumer warpgroups) for one (Element, head-dim bucket): the tile table, the
// two warpgroup MMAs, the shared-memory layouts, the TMA copy types and the shared storage with its
// mbarriers.
//
// Owns: kSm90FwdWsTileTable, the register budgets of the two roles and the CuTe types derived from
// a row. Does not own: any run-time value (fwd_ws_launch.hpp builds the TMA descriptors) or
// instruction sequence (fwd_ws_mainloop.hpp). docs/sm90.md explains the choices.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/numeric_types.h>

#include "common/gmem_tile.hpp"
#include "sm90/common_layouts.hpp"

namespace flash_sigmoid::sm90 {

// The tile shapes per head dim, in one table so one run can compare them: kSquare, 128 query rows
// on two consumer warpgroups (128 keys up to D = 128, fewer above); kWide, after FlashAttention-3's choice, 3 consumer warpgroups of 64
// rows at D = 64 (fewer Q re-reads per key tile, more math per barrier) and 176-key tiles at D = 128;
// kDeep, 128 x 128 with three K/V stages.
enum class WsTiles : int { kSquare = 0, kWide = 1, kDeep = 2 };

struct Sm90FwdWsTileShape {
  WsTiles tiles;
  int head_dim;
  int block_m;  // 64 query rows per consumer warpgroup
  int block_n;
  int stages;   // K and V buffers each
};

inline constexpr Sm90FwdWsTileShape kSm90FwdWsTileTable[] = {
    // tiles, head_dim, block_m, block_n, stages
    {WsTiles::kSquare, 64, 128, 128, 2},
    {WsTiles::kSquare, 128, 128, 128, 2},
    {WsTiles::kWide, 64, 192, 128, 2},
    {WsTiles::kWide, 128, 128, 176, 2},
    {WsTiles::kDeep, 64, 128, 128, 3},
    {WsTiles::kDeep, 128, 128, 128, 3},
    // Above D = 128 the O accumulator (64 x D fp32 per warpgroup: 96 or 128 registers a thread)
    // and the shared memory (Q plus two K and two V stages: 216 KB at 192, 224 KB at 256) set the
    // key tile: FlashAttention-3's 112 and 80.
    {WsTiles::kSquare, 192, 128, 112, 2},
    {WsTiles::kSquare, 256, 128, 80, 2},
};

constexpr Sm90FwdWsTileShape sm90_fwd_ws_tile_shape(WsTiles tiles, int head_dim) {
  for (const Sm90FwdWsTileShape& row : kSm90FwdWsTileTable) {
    if (row.tiles == tiles && row.head_dim == head_dim) return row;
  }
  return Sm90FwdWsTileShape{tiles, 0, 0, 0, 0};
}

// A Q/K/V/O tensor as TMA sees it: (seq, head_dim, head, batch), head_dim contiguous.
using TmaGmemShape = cute::Shape<int32_t, int32_t, int32_t, int32_t>;
using TmaGmemStride = cute::Stride<int64_t, cute::_1, int64_t, int64_t>;

// kSeparateO_: O is staged in a buffer of its own instead of Q's, so that a persistent block's next
// Q may load while this tile's O is stored (the producer waits only for the last S product).
struct NoBuffer {};

template <class Element_, int kHeadDim_, WsTiles kTiles = WsTiles::kSquare, bool kSeparateO_ = false>
struct Sm90FwdWsTraits {
  using Element = Element_;
  static constexpr Sm90FwdWsTileShape kShape = sm90_fwd_ws_tile_shape(kTiles, kHeadDim_);
  static_assert(kShape.head_dim == kHeadDim_, "head-dim bucket missing from kSm90FwdWsTileTable");
  static_assert(std::is_same_v<Element, cutlass::half_t> || std::is_same_v<Element, cutlass::bfloat16_t>,
                "the sm90 forward takes fp16 or bf16 operands");

  static constexpr int kHeadDim = kHeadDim_;
  static constexpr bool kSeparateO = kSeparateO_;
  static constexpr int kBlockM = kShape.block_m;
  static constexpr int kBlockN = kShape.block_n;
  static constexpr int kStages = kShape.stages;
  static constexpr int kNConsumerWarpGroups = kBlockM / 64;
  static constexpr int kNConsumerThreads = kNConsumerWarpGroups * 128;
  static constexpr int kNThreads = kNConsumerThreads + 128;  // warpgroup 0 produces
  static_assert(kBlockM % 64 == 0 && kHeadDim % 64 == 0 && kBlockN % 16 == 0, "whole GMMA tiles and 128-byte rows");
  static_assert(kNConsumerWarpGroups == 2 || kNConsumerWarpGroups == 3, "two or three consumer warpgroups");

  // setmaxnreg budgets: a launch of kNThreads threads gives each 65536 / kNThreads registers
  // (rounded down to 8); the warpgroups' budgets must not sum to more (a larger request hangs in
  // setmaxnreg.inc).
  static constexpr int kProducerRegisters = kNConsumerWarpGroups == 2 ? 24 : 32;
  static constexpr int kConsumerRegisters = kNConsumerWarpGroups == 2 ? 240 : 160;
  static_assert(kProducerRegisters + kNConsumerWarpGroups * kConsumerRegisters <=
                    (65536 / kNThreads / 8 * 8) * (kNThreads / 128),
                "register budgets exceed what the launch gives");

  // S = Q K^T and O += P V as in the lockstep kernel (fwd_traits.hpp): consumer warpgroup w owns
  // query rows [64 w, 64 w + 64).
  using TiledMmaS = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kBlockN>, cute::Int<kHeadDim>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<cute::Shape<cute::Int<kNConsumerWarpGroups>, cute::_1, cute::_1>>{}));
  using TiledMmaO = decltype(cute::make_tiled_mma(
      cute::GMMA::rs_op_selector<Element, Element, float, cute::Shape<cute::_64, cute::Int<kHeadDim>, cute::Int<kBlockN>>,
                                 cute::GMMA::Major::K, cute::GMMA::Major::MN>(),
      cute::Layout<cute::Shape<cute::Int<kNConsumerWarpGroups>, cute::_1, cute::_1>>{}));

  // One wgmma instruction spans a whole key tile (or the whole head dim): N = 80, 112 or 176 exist
  // only with CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED (kernel_table.py passes it to the sm90 units);
  // without it CuTe quietly splits such a tile into 64 x 16 instructions, five to eleven per step.
  static_assert(cute::size<1>(typename TiledMmaS::AtomShape_MNK{}) == kBlockN &&
                    cute::size<1>(typename TiledMmaO::AtomShape_MNK{}) == kHeadDim,
                "S or O split into narrower wgmma instructions: build with -DCUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED");

  using SmemLayoutQ = RowsLayout<Element, kBlockM, kHeadDim>;             // (BLK_M, HEAD_DIM)
  using SmemLayoutKV = RowsLayout<Element, kBlockN, kHeadDim, kStages>;  // (BLK_N, HEAD_DIM, STAGE)
  using SmemLayoutVt = TransposedLayout<SmemLayoutKV>;                   // (HEAD_DIM, BLK_N, STAGE)
  using SmemCopyAtomStore = cute::Copy_Atom<cute::UniversalCopy<uint32_t>, Element>;

  // The epilogue's global stores are the common 16-byte row copies, by the consumer threads (with a
  // separate O buffer, each consumer warpgroup stores its own 64 rows: WarpGroupGmemTiledCopyStore).
  using GmemCopies = GmemTileCopies<Element, kHeadDim, kNConsumerThreads>;
  using GmemTiledCopyStore = typename GmemCopies::GmemTiledCopyStore;
  static_assert(kBlockM % GmemCopies::kGmemRowsPerPass == 0, "tiles are whole copy passes");
  using WarpGroupGmemCopies = GmemTileCopies<Element, kHeadDim, 128>;
  using WarpGroupGmemTiledCopyStore = typename WarpGroupGmemCopies::GmemTiledCopyStore;
  static_assert(64 % WarpGroupGmemCopies::kGmemRowsPerPass == 0, "a warpgroup's rows are whole copy passes");

  // The TMA copies: the types only (the descriptors are built per call on the host). One Q tile of
  // (BLK_M, HEAD_DIM); one K or V stage of (BLK_N, HEAD_DIM).
  using GmemTensor = decltype(cute::make_tensor(cute::make_gmem_ptr(static_cast<Element const*>(nullptr)),
                                                TmaGmemShape{}, TmaGmemStride{}));
  using TmaQ = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{}, SmemLayoutQ{},
                                            cute::Shape<cute::Int<kBlockM>, cute::Int<kHeadDim>>{}, cute::_1{}));
  using TmaKV = decltype(cute::make_tma_copy(cute::SM90_TMA_LOAD{}, GmemTensor{},
                                             cute::take<0, 2>(SmemLayoutKV{}),
                                             cute::Shape<cute::Int<kBlockN>, cute::Int<kHeadDim>>{}, cute::_1{}));
  static constexpr uint32_t kTmaBytesQ = kBlockM * kHeadDim * sizeof(Element);
  static constexpr uint32_t kTmaBytesKV = kBlockN * kHeadDim * sizeof(Element);

  struct SharedStorage {
    cute::array_aligned<Element, kBlockM * kHeadDim, 1024> q;  // Q, then O in the epilogue (unless kSeparateO)
    cute::array_aligned<Element, kBlockN * kHeadDim * kStages, 1024> k;
    cute::array_aligned<Element, kBlockN * kHeadDim * kStages, 1024> v;
    // mbarriers: "full" completes when a TMA tile has landed, "empty" when every consumer thread
    // has finished reading a stage.
    alignas(8) uint64_t q_full;
    uint64_t q_empty;  // a persistent block's consumers are done with Q's buffer (its last S, or O's staging)
    uint64_t k_full[kStages], k_empty[kStages];
    uint64_t v_full[kStages], v_empty[kStages];
    // O's staging (kSeparateO; last, so that the other members' offsets do not depend on it).
    std::conditional_t<kSeparateO, cute::array_aligned<Element, kBlockM * kHeadDim, 1024>, NoBuffer> o;
  };
  static constexpr int kSmemBytes = int(sizeof(SharedStorage)) + 1024;  // + alignment slack of the dynamic base
  static_assert(kSmemBytes <= 227 * 1024, "Q and the K/V stages exceed the 227 KB of shared memory a block may have");
};

}  // namespace flash_sigmoid::sm90

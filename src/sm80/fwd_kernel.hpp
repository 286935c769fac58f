// Layer: sm80. The forward __global__ kernel: one thread block per (query tile, query head, batch).
//
// Owns: mapping the block to its problem slice (batch, query head, kv head under GQA, tile), the
// per-(batch, head) base pointers (int64) and the global tensors, the key-tile range from the mask,
// and the order mainloop -> epilogue. Does not own: the pipeline (fwd_mainloop.hpp), the O store
// (fwd_epilogue.hpp), tile shapes (fwd_traits.hpp) or the launch (fwd_launch.hpp).
//
// Warp roles: none. All kNWarps warps do the same work on their own 16-row slices of the query
// tile (rows w*16 + i*16*kNWarps, i < MMA_M): every warp issues its share of the cp.async loads,
// its own ldmatrix reads and MMAs, the score function on its S fragment, and its share of the O
// stores. Barriers are block-wide (__syncthreads); docs/sm80_forward.md draws the tile.
#pragma once

#include <cstdint>

#include <cute/tensor.hpp>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "sm80/fwd_epilogue.hpp"
#include "sm80/fwd_mainloop.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// (rows, HEAD_DIM) view of one (batch, head) slice of a [batch, seqlen, heads, head_dim] tensor.
// The (batch, head) offset is int64; offsets inside the slice fit in int (validated by the API).
template <int kHeadDim, class Element>
CUTE_DEVICE auto head_slice(const StridedPtr& t, int batch_idx, int head_idx, int rows) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  const int64_t offset = static_cast<int64_t>(batch_idx) * t.stride_batch + static_cast<int64_t>(head_idx) * t.stride_head;
  Element* base = static_cast<Element*>(t.ptr) + offset;
  return make_tensor(make_gmem_ptr(base), make_shape(rows, Int<kHeadDim>{}),
                     make_stride(static_cast<int>(t.stride_seq), _1{}));
}

template <class Traits, class Variant>
__global__ void __launch_bounds__(Traits::kNThreads, 1) sm80_fwd_kernel(const __grid_constant__ ForwardParams params) {
  using namespace cute;
  using cute::Tensor;  // flash_sigmoid::Tensor (public API) would hide it
  using Element = typename Traits::Element;
  using Mask = typename Variant::Mask;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kHeadDim = Traits::kHeadDim;

  extern __shared__ __align__(128) char smem_raw[];
  auto& smem = *reinterpret_cast<typename Traits::SharedStorage*>(smem_raw);

  const ProblemParams& problem = params.problem;
  // Query tiles in reverse launch order: under a causal (right-bounded) mask the last tiles see the
  // most keys, and starting them first shortens the tail of the grid.
  const int m_block = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int head_idx = static_cast<int>(blockIdx.y);
  const int batch_idx = static_cast<int>(blockIdx.z);
  const int kv_head_idx = head_idx / problem.group_size;
  const int tidx = static_cast<int>(threadIdx.x);

  const Mask mask = mask_from_problem<Mask>(problem);
  const BlockRange range = key_block_range<kBlockM, kBlockN>(mask, m_block);
  const int q_rows = problem.seqlen_q - m_block * kBlockM;

  Tensor mQ = head_slice<kHeadDim, Element>(params.q, batch_idx, head_idx, problem.seqlen_q);      // (SEQ_Q, HEAD_DIM)
  Tensor mK = head_slice<kHeadDim, Element>(params.k, batch_idx, kv_head_idx, problem.seqlen_k);   // (SEQ_K, HEAD_DIM)
  Tensor mV = head_slice<kHeadDim, Element>(params.v, batch_idx, kv_head_idx, problem.seqlen_k);   // (SEQ_K, HEAD_DIM)
  Tensor mO = head_slice<kHeadDim, Element>(params.out, batch_idx, head_idx, problem.seqlen_q);    // (SEQ_Q, HEAD_DIM)
  Tensor gQ = local_tile(mQ, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (BLK_M, HEAD_DIM)
  Tensor gO = local_tile(mO, Shape<Int<kBlockM>, Int<kHeadDim>>{}, make_coord(m_block, 0));  // (BLK_M, HEAD_DIM)
  Tensor gK = local_tile(mK, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));        // (BLK_N, HEAD_DIM, n)
  Tensor gV = local_tile(mV, Shape<Int<kBlockN>, Int<kHeadDim>>{}, make_coord(_, 0));        // (BLK_N, HEAD_DIM, n)

  typename Traits::TiledMma tiled_mma;
  Tensor acc_o = partition_fragment_C(tiled_mma, Shape<Int<kBlockM>, Int<kHeadDim>>{});  // (MMA, MMA_M, MMA_HEAD_DIM)
  clear(acc_o);

  // An empty key range (seqlen_k == 0, or a window that hides every key of these rows) skips the
  // mainloop and stores O = 0.
  if (!range.empty()) {
    const Variant variant = Variant::make(problem, mask, batch_idx, head_idx);
    Sm80FwdMainloop<Traits, Variant>::run(gQ, gK, gV, smem, variant, range, m_block, q_rows, problem.seqlen_k,
                                          problem.head_dim, acc_o, tidx);
  }
  Sm80FwdEpilogue<Traits>::store(acc_o, smem, gO, q_rows, problem.head_dim, tidx);
}

}  // namespace flash_sigmoid::sm80

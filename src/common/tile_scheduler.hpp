// Layer: common kernel parts. Which work a thread block does, and the sequence it belongs to:
//
//   SeqlenInfo            the lengths of one batch entry's query and key sequences (and, for
//                         packed tensors, where they start); every kernel takes its lengths and its
//                         mask from here, never from the problem directly.
//   QueryTileScheduler    work = (query tile, query head, batch): forward, deterministic dQ,
//                         the dQ convert kernel.
//   KeyTileScheduler      work = (key tile, kv head, batch): the dK/dV kernels.
//
// A scheduler maps the launch to work tiles on the host (grid) and on the device (first_work,
// next_work). The two here are static: one tile per thread block, the grid is the tile count, and
// next_work ends the block's loop at once, so a kernel body may be written either as one tile or as
// the persistent loop
//     for (auto work = Scheduler::first_work(problem); ; ) { ...; if (!Scheduler::next_work(problem, work)) break; }
// Persistent schedulers (a grid of #SMs, tiles handed out statically or by an atomic counter,
// longest-first under a causal mask) implement the same three functions and keep the same WorkTile,
// so a kernel switches by naming another scheduler in its traits.
//
// Ordering. Under a right-bounded (causal) mask the last query tiles see the most keys and the
// first key tiles are seen by the most queries; blocks are launched in rising blockIdx order, so
// QueryTileScheduler (kLongestFirst) hands out query tiles in reverse and KeyTileScheduler key
// tiles in order, which starts the longest work first and shortens the tail of the grid.
//
// Does not own: block ranges inside a tile (block_range.hpp) or the launch itself (launch.hpp).
#pragma once

#include <cuda_runtime_api.h>

#include "base/host_device.hpp"
#include "common/block_range.hpp"
#include "common/params.hpp"

namespace flash_sigmoid {

// One batch entry's sequences. Dense batches: every entry has the problem's lengths and starts at
// row 0 of its batch slice. Packed (varlen) problems: sequence b's lengths and first rows come from
// cu_seqlens_q/k[b] and [b + 1] (two loads each, device memory). Kernels take their lengths, their
// mask and their tiles' first rows from here, never from the problem directly; a block whose query
// tile starts at or past seqlen_q has no rows to compute (the grid is sized by the longest sequence).
struct SeqlenInfo {
  int seqlen_q = 0;
  int seqlen_k = 0;
  int offset_q = 0;  // the sequence's first row in q and out (0 dense: the batch stride selects the entry)
  int offset_k = 0;  // the same in k and v

  FLASH_SIGMOID_HOST_DEVICE static SeqlenInfo make(const ProblemParams& problem, int batch_idx) {
    SeqlenInfo s;
    if (is_packed(problem)) {
      s.offset_q = problem.cu_seqlens_q[batch_idx];
      s.offset_k = problem.cu_seqlens_k[batch_idx];
      s.seqlen_q = problem.cu_seqlens_q[batch_idx + 1] - s.offset_q;
      s.seqlen_k = problem.cu_seqlens_k[batch_idx + 1] - s.offset_k;
    } else {
      s.seqlen_q = problem.seqlen_q;
      s.seqlen_k = problem.seqlen_k;
    }
    return s;
  }

  // The compiled mask kind (MaskBand<kHasLeft, kHasRight>) for these sequences: what every
  // kernel's block ranges and fragment masks start from.
  template <class Mask>
  FLASH_SIGMOID_HOST_DEVICE Mask mask(const ProblemParams& problem) const {
    Mask m;
    m.seqlen_q = seqlen_q;
    m.seqlen_k = seqlen_k;
    m.left = problem.mask.left;
    m.right = problem.mask.right;
    return m;
  }
};

// Work of a query-tile kernel: query tile m_block of query head head_idx (which reads kv head
// kv_head_idx under GQA) of batch entry batch_idx.
struct QueryTileWork {
  int m_block = 0, head_idx = 0, kv_head_idx = 0, batch_idx = 0;
};

// Work of a key-tile kernel: key tile n_block of kv head kv_head_idx of batch entry batch_idx (the
// kernel loops over the query heads of the group itself).
struct KeyTileWork {
  int n_block = 0, kv_head_idx = 0, batch_idx = 0;
};

template <int kBlockM, bool kLongestFirst = true>
struct QueryTileScheduler {
  using WorkTile = QueryTileWork;

  static dim3 grid(const ProblemParams& problem) {
    return dim3(static_cast<unsigned>(ceil_div_int(problem.seqlen_q, kBlockM)), static_cast<unsigned>(problem.heads_q),
                static_cast<unsigned>(problem.batch));
  }

#if defined(__CUDACC__)
  __device__ __forceinline__ static WorkTile first_work(const ProblemParams& problem) {
    WorkTile w;
    w.m_block = kLongestFirst ? static_cast<int>(gridDim.x - 1 - blockIdx.x) : static_cast<int>(blockIdx.x);
    w.head_idx = static_cast<int>(blockIdx.y);
    w.batch_idx = static_cast<int>(blockIdx.z);
    w.kv_head_idx = w.head_idx / problem.group_size;
    return w;
  }
  __device__ __forceinline__ static bool next_work(const ProblemParams&, WorkTile&) { return false; }  // one tile
#endif
};

template <int kBlockN>
struct KeyTileScheduler {
  using WorkTile = KeyTileWork;

  static dim3 grid(const ProblemParams& problem) {
    return dim3(static_cast<unsigned>(ceil_div_int(problem.seqlen_k, kBlockN)), static_cast<unsigned>(problem.heads_kv),
                static_cast<unsigned>(problem.batch));
  }

#if defined(__CUDACC__)
  __device__ __forceinline__ static WorkTile first_work(const ProblemParams& /*problem*/) {
    return WorkTile{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.z)};
  }
  __device__ __forceinline__ static bool next_work(const ProblemParams&, WorkTile&) { return false; }  // one tile
#endif
};

}  // namespace flash_sigmoid

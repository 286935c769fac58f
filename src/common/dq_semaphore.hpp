// Layer: common kernel parts. Ordered dQ additions for a deterministic backward that adds dQ into
// the fp32 workspace (common/dq_accum_layout.hpp) from many key tiles: one int32 counter per
// (batch entry, query head, query tile), placed after the accumulator in the same workspace and
// zeroed with it. The key tiles that see query tile m are a contiguous run [n_lo, n_hi) (the
// block ranges are exact: tests/cpp/test_policies.cpp), and key tile n adds its part of the
// tile's dQ only when the counter equals n - n_lo, then raises it by one: the float additions into
// each element happen in ascending key-tile order whatever the timing, so dQ is bitwise
// reproducible.
//
// Progress: a key tile waits only for lower key tiles of the same (kv head, batch), which the
// grid (x = key tile fastest) dispatches before it, so a waiting block never holds up one it
// waits for. A counter that never reaches its value (a bug) traps after 2^28 polls (minutes)
// instead of hanging the device for good.
//
// Owns: the counters' layout and size, the wait and the signal. Does not own: which tile is added
// when (the mainloop's order) or the accumulator's layout.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/host_device.hpp"
#include "common/block_range.hpp"
#include "common/dq_accum_layout.hpp"
#include "common/params.hpp"

namespace flash_sigmoid {

template <int kBlockM>
struct DqTileSemaphores {
  // The accumulator (DqAccumLayout::bytes, from the layout's panels so that kernels can compute
  // it too) rounded up to 256 bytes, then the counters.
  FLASH_SIGMOID_HOST_DEVICE static size_t accumulator_bytes(const ProblemParams& p) {
    const DqAccumLayout l = DqAccumLayout::make(p);
    const size_t slices = static_cast<size_t>(is_packed(p) ? 1 : p.batch) * static_cast<size_t>(p.heads_q);
    const size_t bytes = slices * static_cast<size_t>(l.row_panels) * static_cast<size_t>(l.col_panels) *
                         DqAccumLayout::kPanelElems * sizeof(float);
    return (bytes + 255) / 256 * 256;
  }
  // Counters per query head: dense, batch * ceil(seqlen_q / kBlockM); packed, one run over the
  // sequences in which sequence b's tiles start at ceil((cu_seqlens_q[b] + kBlockM b) / kBlockM)
  // (as the accumulator's panels do, DqAccumLayout): from the sequence's own offset, whatever
  // max_seqlen_q says, and no two sequences share a counter.
  FLASH_SIGMOID_HOST_DEVICE static int64_t per_head(const ProblemParams& p) {
    return is_packed(p) ? (static_cast<int64_t>(p.total_q) + static_cast<int64_t>(kBlockM) * p.batch + kBlockM - 1) / kBlockM
                        : static_cast<int64_t>(p.batch) * ceil_div_int(p.seqlen_q, kBlockM);
  }
  FLASH_SIGMOID_HOST_DEVICE static size_t count(const ProblemParams& p) {
    return static_cast<size_t>(p.heads_q) * static_cast<size_t>(per_head(p));
  }
  FLASH_SIGMOID_HOST_DEVICE static size_t workspace_bytes(const ProblemParams& p) {
    return accumulator_bytes(p) + count(p) * sizeof(int32_t);
  }
  FLASH_SIGMOID_HOST_DEVICE static int32_t* counters(const ProblemParams& p, float* dq_accum) {
    return reinterpret_cast<int32_t*>(reinterpret_cast<char*>(dq_accum) + accumulator_bytes(p));
  }
  // offset_q: the sequence's first row (SeqlenInfo; 0 dense).
  FLASH_SIGMOID_HOST_DEVICE static int64_t index(const ProblemParams& p, int batch_idx, int offset_q, int head_idx,
                                                 int m_block) {
    const int64_t first = is_packed(p) ? (static_cast<int64_t>(offset_q) + static_cast<int64_t>(kBlockM) * batch_idx +
                                          kBlockM - 1) / kBlockM
                                       : static_cast<int64_t>(batch_idx) * ceil_div_int(p.seqlen_q, kBlockM);
    return static_cast<int64_t>(head_idx) * per_head(p) + first + m_block;
  }

#if defined(__CUDACC__)
  // One thread: the counter as it is now (relaxed; wait_for makes the observation an acquire).
  __device__ __forceinline__ static int32_t peek(const int32_t* counter) {
    int32_t seen;
    asm volatile("ld.relaxed.gpu.global.b32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
    return seen;
  }
  // One thread, with `seen` from an earlier peek: polls until the counter equals value, then
  // fences (acquire), so that the additions of the key tiles before it happen before this block's
  // once the caller's block barrier has passed.
  __device__ __forceinline__ static void wait_for(const int32_t* counter, int32_t seen, int32_t value) {
    for (uint32_t polls = 0; seen != value; ++polls) {
      if (polls == (1u << 28)) __trap();
      seen = peek(counter);
    }
    asm volatile("fence.acq_rel.gpu;" : : : "memory");
  }
  // One thread, after a block barrier that follows every thread's additions of the tile: the
  // counter + 1 (release).
  __device__ __forceinline__ static void signal(int32_t* counter) {
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;" : : "l"(counter) : "memory");
  }
#endif
};

}  // namespace flash_sigmoid

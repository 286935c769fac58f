// Layer: common kernel parts. The fp32 dQ workspace of the backward's atomic (default) mode: its
// layout and its size. Plain arithmetic (no CuTe), so that the registry and the API's validation
// can ask for the size on the host; the kernels address it with the same struct (dq_accum.hpp).
//
// Rows = seqlen_q rounded up to 128, pitch = head_dim rounded up to 32 (not the kernel's head-dim
// bucket, which depends on what was built). Inside, it is blocked: [batch, heads_q, rows / 128,
// pitch / 8, 128, 8], i.e. panels of 128 rows by 8 columns, 4 KiB each. Two reasons:
//   - Within a query tile (which divides 128 rows) an element's offset is a compile-time constant,
//     (col / 8) * 1024 + row * 8 + col % 8, so the atomics need one base address per tile and
//     immediates, instead of a 64-bit address per row kept in registers.
//   - One warp-wide reduction of an m16n8 accumulator atom (8 rows x 8 columns: a column pair per
//     thread, 4 threads per row) then covers 64 contiguous floats, two 128-byte lines. With rows
//     of 32 (or more) columns it touched 8 lines, and the load/store unit's global queue, which
//     works per line, filled (Nsight Compute: lg_throttle stalls at the reductions, and the next
//     instruction waiting until they drained). Measured in docs/sm80_backward.md.
// Offsets are int64: one (batch, head) slice alone may hold more than 2^31 floats.
//
// Packed (varlen) problems: one run of rows per head, [heads_q, row_panels, pitch / 8, 128, 8],
// where sequence b's rows start at panel ceil((cu_seqlens_q[b] + 128 b) / 128) (FlashAttention-2's
// padding, computable from the sequence's own offset without a prefix pass): each sequence's rows
// start a panel of their own, so its query tiles keep their static offsets, and sequence b's panels
// end at or before b + 1's first (ceil(x / 128) + ceil(n / 128) <= ceil((x + n) / 128) + 1). The
// run is round_up(total_q + 128 batch, 128) rows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/host_device.hpp"
#include "common/params.hpp"

namespace flash_sigmoid {

struct DqAccumLayout {
  static constexpr int kPanelRows = 128;
  static constexpr int kPanelCols = 8;
  static constexpr int kPanelElems = kPanelRows * kPanelCols;
  static constexpr int kPitchAlign = 32;  // the pitch is head_dim rounded up to this

  int row_panels = 0;  // rows / 128 (of a batch entry; packed: of a head's whole run)
  int col_panels = 0;  // pitch / 8
  int heads_q = 0;
  bool packed = false;

  // The rows of one (batch, head) slice (dense) or of one head's run of sequences (packed).
  FLASH_SIGMOID_HOST_DEVICE static int64_t slice_rows(const ProblemParams& p) {
    return is_packed(p) ? static_cast<int64_t>(p.total_q) + static_cast<int64_t>(kPanelRows) * p.batch : p.seqlen_q;
  }

  FLASH_SIGMOID_HOST_DEVICE static DqAccumLayout make(const ProblemParams& p) {
    DqAccumLayout l;
    l.row_panels = static_cast<int>((slice_rows(p) + kPanelRows - 1) / kPanelRows);
    l.col_panels = (p.head_dim + kPitchAlign - 1) / kPitchAlign * (kPitchAlign / kPanelCols);
    l.heads_q = p.heads_q;
    l.packed = is_packed(p);
    return l;
  }
  // Offset of (row, col) of batch entry batch_idx's rows for query head head_idx; offset_q: the
  // entry's first row in q (SeqlenInfo; 0 dense). col_panel = col / 8, col % 8 added by callers.
  FLASH_SIGMOID_HOST_DEVICE int64_t offset(int batch_idx, int offset_q, int head_idx, int row, int col_panel) const {
    const int64_t first_panel =
        packed ? static_cast<int64_t>(head_idx) * row_panels +
                     (static_cast<int64_t>(offset_q) + static_cast<int64_t>(kPanelRows) * batch_idx + kPanelRows - 1) /
                         kPanelRows
               : (static_cast<int64_t>(batch_idx) * heads_q + head_idx) * row_panels;
    const int64_t panel = first_panel + row / kPanelRows;
    return (panel * col_panels + col_panel) * kPanelElems + static_cast<int64_t>(row % kPanelRows) * kPanelCols;
  }

  // Bytes of the whole workspace, batch * heads_q * round_up(seqlen_q, 128) * round_up(head_dim, 32)
  // * 4, in 64 bits; false if that exceeds 2^63 - 1 (zero strides let problems of any size pass the
  // tensor checks, so the API asks this before anything is sized).
  static bool checked_bytes(int64_t batch, int64_t heads_q, int64_t seqlen_q, int64_t head_dim, uint64_t* bytes) {
    uint64_t b = static_cast<uint64_t>(batch);
    const uint64_t factors[4] = {static_cast<uint64_t>(heads_q),
                                 static_cast<uint64_t>((seqlen_q + kPanelRows - 1) / kPanelRows * kPanelRows),
                                 static_cast<uint64_t>((head_dim + kPitchAlign - 1) / kPitchAlign * kPitchAlign),
                                 sizeof(float)};
    bool overflow = false;
    for (uint64_t f : factors) overflow = overflow || __builtin_mul_overflow(b, f, &b);
    *bytes = b;
    return !overflow && b <= static_cast<uint64_t>(INT64_MAX);
  }
  // The same for a validated problem (which the API guarantees to fit).
  static size_t bytes(const ProblemParams& p) {
    uint64_t b = 0;
    checked_bytes(is_packed(p) ? 1 : p.batch, p.heads_q, slice_rows(p), p.head_dim, &b);
    return static_cast<size_t>(b);
  }
};

// The workspace an atomic-mode backward needs for these params: the accumulator, or nothing in
// deterministic mode or without queries (then no atomics and no convert run).
inline size_t dq_accum_workspace_bytes(const BackwardParams& params) {
  const ProblemParams& p = params.problem;
  if (params.deterministic || p.batch == 0 || p.heads_q == 0 || p.total_q == 0) return 0;
  return DqAccumLayout::bytes(p);
}

}  // namespace flash_sigmoid

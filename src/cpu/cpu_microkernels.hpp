// Layer: CPU implementation. The two small matrix products every CPU task is made of, written as
// register-blocked loops over 4-lane vectors (no intrinsics, no reassociation):
//
//   rows_dot_tile:   out[r][c]  = sum_d x[r][d] * y_t[d][c]               (scores S, dP)
//   rows_accumulate: acc[r][:] += sum_{j in [lo_r, hi_r)} w[r][j] * y[j][:] (P V, dZ K, P^T dO, dZ^T Q)
//
// Owns only the loop structure: kRowBlock rows by kColBlock columns of fp32 accumulators stay in
// registers while the reduction index runs. Every output element is summed in ascending order of
// its reduction index whatever the blocking, so results do not depend on how rows are grouped.
// rows_accumulate honours each row's own [lo, hi): entries outside it are never read, so a masked
// (i, j) contributes nothing at all (not even 0 * NaN).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace flash_sigmoid::cpu_impl {

constexpr int kRowBlock = 4;  // rows per register block
constexpr int kColBlock = 8;  // columns per register block; widths below are multiples of it

// Four fp32 lanes as a GCC/Clang vector extension: element-wise arithmetic (no reassociation),
// one SSE or NEON register (the baseline of x86-64 and AArch64). A column block is kLaneVectors of
// them. Loads and stores go through memcpy, so no alignment is assumed.
using Lanes = float __attribute__((vector_size(4 * sizeof(float))));
constexpr int kLaneVectors = kColBlock / 4;

inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store_lanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof v); }

// out[r * ld_out + c0 + c] = sum_{d < depth} x[r * ldx + d] * y_t[d * ldy + c0 + c], r < kRows, c < kColBlock.
template <int kRows>
inline void dot_block(const float* x, int64_t ldx, const float* y_t, int64_t ldy, int64_t depth, int64_t c0, float* out,
                      int64_t ld_out) {
  Lanes acc[kRows][kLaneVectors] = {};
  for (int64_t d = 0; d < depth; ++d) {
    Lanes y[kLaneVectors];
    for (int v = 0; v < kLaneVectors; ++v) y[v] = load_lanes(y_t + d * ldy + c0 + 4 * v);
    for (int r = 0; r < kRows; ++r) {
      const float xr = x[r * ldx + d];
      for (int v = 0; v < kLaneVectors; ++v) acc[r][v] += xr * y[v];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kLaneVectors; ++v) store_lanes(out + r * ld_out + c0 + 4 * v, acc[r][v]);
  }
}

// acc[r * ld_acc + c0 + c] += sum_{j in [lo[r], hi[r])} w[r * ldw + j] * y[j * ldy + c0 + c], j ascending.
template <int kRows>
inline void accumulate_block(const float* w, int64_t ldw, const int64_t* lo, const int64_t* hi, const float* y,
                             int64_t ldy, int64_t c0, float* acc_out, int64_t ld_acc) {
  Lanes acc[kRows][kLaneVectors];
  int64_t j_begin = lo[0], j_end = hi[0];
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kLaneVectors; ++v) acc[r][v] = load_lanes(acc_out + r * ld_acc + c0 + 4 * v);
    j_begin = std::min(j_begin, lo[r]);
    j_end = std::max(j_end, hi[r]);
  }
  for (int64_t j = j_begin; j < j_end; ++j) {
    Lanes yj[kLaneVectors];
    for (int v = 0; v < kLaneVectors; ++v) yj[v] = load_lanes(y + j * ldy + c0 + 4 * v);
    for (int r = 0; r < kRows; ++r) {
      if (j < lo[r] || j >= hi[r]) continue;
      const float wr = w[r * ldw + j];
      for (int v = 0; v < kLaneVectors; ++v) acc[r][v] += wr * yj[v];
    }
  }
  for (int r = 0; r < kRows; ++r) {
    for (int v = 0; v < kLaneVectors; ++v) store_lanes(acc_out + r * ld_acc + c0 + 4 * v, acc[r][v]);
  }
}

// out (rows, width) = x (rows, depth) * y_t (depth, width); width a multiple of kColBlock.
inline void rows_dot_tile(const float* x, int64_t ldx, int64_t rows, const float* y_t, int64_t ldy, int64_t depth,
                          int64_t width, float* out, int64_t ld_out) {
  int64_t r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    for (int64_t c0 = 0; c0 < width; c0 += kColBlock) {
      dot_block<kRowBlock>(x + r * ldx, ldx, y_t, ldy, depth, c0, out + r * ld_out, ld_out);
    }
  }
  for (; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < width; c0 += kColBlock)
      dot_block<1>(x + r * ldx, ldx, y_t, ldy, depth, c0, out + r * ld_out, ld_out);
  }
}

// acc (rows, width) += w (rows, *) * y (*, width), row r summing only over j in [lo[r], hi[r]);
// width a multiple of kColBlock.
inline void rows_accumulate(const float* w, int64_t ldw, const int64_t* lo, const int64_t* hi, int64_t rows,
                            const float* y, int64_t ldy, int64_t width, float* acc, int64_t ld_acc) {
  int64_t r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    for (int64_t c0 = 0; c0 < width; c0 += kColBlock) {
      accumulate_block<kRowBlock>(w + r * ldw, ldw, lo + r, hi + r, y, ldy, c0, acc + r * ld_acc, ld_acc);
    }
  }
  for (; r < rows; ++r) {
    for (int64_t c0 = 0; c0 < width; c0 += kColBlock) {
      accumulate_block<1>(w + r * ldw, ldw, lo + r, hi + r, y, ldy, c0, acc + r * ld_acc, ld_acc);
    }
  }
}

}  // namespace flash_sigmoid::cpu_impl

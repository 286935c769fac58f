// Layer: CPU implementation. What the forward and backward share: the problem in the CPU
// implementation's own terms (mask band, ALiBi, logits, sigmoid) and fp32 tiles of q/k/v/dout.
//
// Written from DESIGN §1 alone; deliberately does not include src/policies/ or src/common/, so that
// it is a second opinion against the GPU kernels rather than a copy of them.
//
//   z[i, j] = scale * (q_i . k_j) + bias - slope[b, h] * |i + Sk - Sq - j|
//   p[i, j] = sigmoid(z[i, j]) where  i + Sk - Sq - left <= j <= i + Sk - Sq + right,  else 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "cpu_convert.hpp"
#include "cpu_microkernels.hpp"
#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Keys per tile (k/v are converted to fp32 once per tile) and query rows per task. Fixed, so the
// tasks, and the code path each row takes, do not depend on the thread count.
constexpr int64_t kBlockN = 64;
constexpr int64_t kBlockM = 32;

// Tiles of `block` rows covering `length` rows.
inline int64_t tile_count(int64_t length, int64_t block) { return (length + block - 1) / block; }

// Task `task` of a parallel loop over (batch, head, tile), tiles fastest:
// task = (batch * heads + head) * tiles + tile.
struct TileTask {
  int64_t batch;
  int64_t head;
  int64_t tile;
};
inline TileTask tile_task(int64_t task, int64_t heads, int64_t tiles) {
  return TileTask{task / tiles / heads, (task / tiles) % heads, task % tiles};
}

// Tile rows are padded to a multiple of kColBlock floats (the padding is kept at zero).
inline int64_t padded_width(int64_t n) { return (n + kColBlock - 1) / kColBlock * kColBlock; }

// Half-open index range [begin, end); empty when end <= begin.
struct IndexRange {
  int64_t begin;
  int64_t end;
  bool empty() const { return end <= begin; }
};

struct CpuProblem {
  FlashSigmoidDType dtype;
  int64_t batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
  int64_t group;   // heads_q / heads_kv: query head h reads kv head h / group
  int64_t offset;  // seqlen_k - seqlen_q: the bottom-right alignment of causal and window
  // Window reach to the left and right of the diagonal i + offset. Unbounded (-1) and anything
  // larger than seqlen_q + seqlen_k become seqlen_q + seqlen_k, which reaches every key and keeps
  // the index arithmetic below far from overflow.
  int64_t left, right;
  float scale, bias;
  const float* alibi_slopes;  // nullptr: no ALiBi
  int64_t alibi_stride_batch;

  // Keys visible from query row i.
  IndexRange visible_keys(int64_t i) const {
    const int64_t diag = i + offset;
    IndexRange r{std::max<int64_t>(0, diag - left), std::min(seqlen_k, diag + right + 1)};
    if (r.end < r.begin) r.end = r.begin;
    return r;
  }

  // The keys visible from any of the rows [q0, q0 + rows), as one range (each row's keys are
  // contiguous and move right with the row); rows that see nothing do not widen it. Empty when no
  // row sees a key.
  IndexRange visible_keys_of_rows(int64_t q0, int64_t rows) const {
    IndexRange keys{seqlen_k, 0};
    for (int64_t r = 0; r < rows; ++r) {
      const IndexRange kr = visible_keys(q0 + r);
      if (kr.empty()) continue;
      keys.begin = std::min(keys.begin, kr.begin);
      keys.end = std::max(keys.end, kr.end);
    }
    return keys;
  }

  // Keys of the tile [k0, k0 + n) visible from query row i, relative to k0 (possibly empty).
  IndexRange visible_keys_in(int64_t i, int64_t k0, int64_t n) const {
    const IndexRange r = visible_keys(i);
    const int64_t begin = std::clamp(r.begin - k0, int64_t{0}, n);
    return IndexRange{begin, std::clamp(r.end - k0, begin, n)};
  }

  // Query rows that see at least one key in [k_begin, k_end) (k_end > k_begin): from the first
  // row whose reach to the right touches k_begin to the last whose reach to the left touches k_end-1.
  IndexRange queries_seeing(int64_t k_begin, int64_t k_end) const {
    IndexRange r{std::max<int64_t>(0, k_begin - offset - right), std::min(seqlen_q, k_end - offset + left)};
    if (r.end < r.begin) r.end = r.begin;
    return r;
  }

  float alibi_slope(int64_t b, int64_t h) const {
    return alibi_slopes ? alibi_slopes[b * alibi_stride_batch + h] : 0.0f;
  }
};

template <class Args>
CpuProblem make_cpu_problem(const Args& args) {
  const FlashSigmoidProblem& p = args.problem;
  CpuProblem c;
  c.dtype = p.dtype;
  c.batch = p.batch;
  c.seqlen_q = p.seqlen_q;
  c.seqlen_k = p.seqlen_k;
  c.heads_q = p.heads_q;
  c.heads_kv = p.heads_kv;
  c.head_dim = p.head_dim;
  c.group = p.heads_kv > 0 ? p.heads_q / p.heads_kv : 1;
  c.offset = p.seqlen_k - p.seqlen_q;
  const int64_t unbounded = p.seqlen_q + p.seqlen_k;
  auto reach = [unbounded](int64_t w) { return w < 0 ? unbounded : std::min(w, unbounded); };
  c.left = reach(p.window_left);
  c.right = p.causal ? 0 : reach(p.window_right);  // causal is the window (-1 or left, 0)
  c.scale = p.scale;
  c.bias = p.sigmoid_bias;
  c.alibi_slopes = p.alibi_slopes;
  c.alibi_stride_batch = p.alibi_stride_batch;
  return c;
}

// sigmoid(z) and sigmoid'(z) = p * (1 - p), both from e = exp(-|z|) so that neither loses
// accuracy on either side: p = 1/(1+e) or e/(1+e), p*(1-p) = e/(1+e)^2 (no 1 - p cancellation).
// NaN in, NaN out; z = +-inf gives p = 1 or 0 and a zero derivative.
// The forward's P is the backward's P bit for bit (same operations).
inline float sigmoid(float z) {
  const float e = std::exp(-std::fabs(z));
  return (z >= 0.0f ? 1.0f : e) * (1.0f / (1.0f + e));
}

inline void sigmoid_and_derivative(float z, float* p, float* dp_dz) {
  const float e = std::exp(-std::fabs(z));
  const float r = 1.0f / (1.0f + e);
  *p = (z >= 0.0f ? 1.0f : e) * r;
  *dp_dz = e * r * r;
}

// tile[jj * ld + d] = t[b, s0 + jj, h, d] for jj < n, d < head_dim; zero for head_dim <= d < ld.
inline void load_rows(const FlashSigmoidTensor& t, const CpuProblem& p, int64_t b, int64_t h, int64_t s0, int64_t n,
                      int64_t ld, float* tile) {
  for (int64_t jj = 0; jj < n; ++jj) {
    float* row = tile + jj * ld;
    load_row(t, p.dtype, b, s0 + jj, h, p.head_dim, row);
    std::fill(row + p.head_dim, row + ld, 0.0f);
  }
}

// tile_t[d * kBlockN + jj] = t[b, s0 + jj, h, d] for jj < n <= kBlockN, d < head_dim; zero for
// n <= jj < padded_width(n). row_buf holds head_dim floats.
inline void load_rows_transposed(const FlashSigmoidTensor& t, const CpuProblem& p, int64_t b, int64_t h, int64_t s0,
                                 int64_t n, float* row_buf, float* tile_t) {
  for (int64_t jj = 0; jj < n; ++jj) {
    load_row(t, p.dtype, b, s0 + jj, h, p.head_dim, row_buf);
    for (int64_t d = 0; d < p.head_dim; ++d) tile_t[d * kBlockN + jj] = row_buf[d];
  }
  for (int64_t d = 0; d < p.head_dim; ++d)
    std::fill(tile_t + d * kBlockN + n, tile_t + d * kBlockN + padded_width(n), 0.0f);
}

// z for query row i against keys k0 + jj, jj in [j0, j1), from scores s[jj] = q_i . k.
inline void scores_to_logits(const CpuProblem& p, float slope, int64_t i, int64_t k0, int64_t j0, int64_t j1,
                             float* s) {
  const int64_t diag = i + p.offset;
  for (int64_t jj = j0; jj < j1; ++jj) {
    const int64_t distance = std::abs(diag - (k0 + jj));
    s[jj] = p.scale * s[jj] + p.bias - slope * static_cast<float>(distance);
  }
}

}  // namespace flash_sigmoid::cpu_impl

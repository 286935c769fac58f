// Layer: CPU implementation. What the forward and backward share: the problem in the CPU
// implementation's own terms (mask band, ALiBi), the TileBand of a tile, and fp32 tiles of
// q/k/v/dout. The arithmetic inside a tile is cpu_kernels.hpp's.
//
// Written from DESIGN §1 alone; deliberately does not include src/policies/ or src/common/, so that
// it is a second opinion against the GPU kernels rather than a copy of them. The one exception is
// the dropout mask (cpu_dropout.hpp says why).
//
//   z[i, j] = scale * (q_i . k_j) + bias - slope[b, h] * |i + Sk - Sq - j|
//   p[i, j] = sigmoid(z[i, j]) where  i + Sk - Sq - left <= j <= i + Sk - Sq + right,  else 0.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_convert.hpp"
#include "cpu_dropout.hpp"
#include "cpu_kernels.hpp"
#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Tile sizes. Fixed, so the tasks and the summation order do not depend on the thread count.
// Forward: kBlockM queries per task (the columns of its score tile: a multiple of every build's nr)
// against kFwdBlockN keys at a time (rows of the score tile). Backward: kBlockN keys per tile (the
// score tile's columns: a multiple of nr) against kBwdBlockM queries at a time. Every row count
// is a multiple of the GEMM's 6-row register block, and the score tiles (<= 36 KiB) stay in L2.
constexpr int64_t kBlockM = 96;
constexpr int64_t kFwdBlockN = 72;
constexpr int64_t kBlockN = 48;
constexpr int64_t kBwdBlockM = 72;

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

// n rounded up to a multiple of `multiple`: tile rows are padded to the kernels' nr (padding kept at zero).
inline int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

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
  int64_t alibi_offset;  // added to every ALiBi distance
  // A paged k/v (a batch-1 part of a KV-cache call, cpu_sequences.hpp): key j is slot
  // j % page_size of page kv_pages[j / page_size]. nullptr: k/v are [batch, seqlen_k] rows.
  const int32_t* kv_pages;
  int64_t page_size;
  CpuDropout dropout;  // the part's mask (docs/dropout.md); disabled without dropout

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

// first_batch: the call's index of the part's batch entry 0 (cpu_sequences.hpp), for the dropout
// mask. The seed pair is read from host memory (the API layer has checked the pointer).
template <class Args>
CpuProblem make_cpu_problem(const Args& args, int64_t first_batch) {
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
  c.alibi_offset = p.alibi_offset;
  c.kv_pages = p.block_table;
  c.page_size = p.page_size;
  c.dropout.first_batch = first_batch;
  if (make_dropout(p.dropout_p, 0, 0).enabled()) {
    c.dropout.params = make_dropout(p.dropout_p, p.dropout_seed[0], p.dropout_seed[1]);
  }
  return c;
}

// tile[jj * ld + d] = t[b, s0 + jj, h, d] in fp32 for jj < n, d < head_dim; zero for head_dim <= d < ld.
inline void load_rows(const CpuKernels& kernels, const FlashSigmoidTensor& t, const CpuProblem& p, int64_t b, int64_t h,
                      int64_t s0, int64_t n, int64_t ld, float* tile) {
  const size_t element = p.dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2;
  for (int64_t jj = 0; jj < n; ++jj) {
    float* row = tile + jj * ld;
    const char* src = static_cast<const char*>(t.data) + static_cast<size_t>(row_offset(t, b, s0 + jj, h)) * element;
    kernels.widen(p.dtype, src, p.head_dim, row);
    std::fill(row + p.head_dim, row + ld, 0.0f);
  }
}

// Rows [s0, s0 + n) of head h of t as a packed fp32 tile (row stride width). fp32 rows are copied
// too: reading them in place (rows heads * head_dim floats apart) costs more in cache-set conflicts
// (a 2 KiB stride maps 64 rows onto two L1 sets) than the copy does; measured ~10-15% at D = 64, H = 8.
struct RowTile {
  const float* data;
  int64_t ld;
};
inline RowTile rows_tile(const CpuKernels& kernels, const FlashSigmoidTensor& t, const CpuProblem& p, int64_t b,
                         int64_t h, int64_t s0, int64_t n, int64_t width, float* buffer) {
  load_rows(kernels, t, p, b, h, s0, n, width, buffer);
  return RowTile{buffer, width};
}

// rows_tile for the keys of k or v: a paged cache (p.kv_pages) is read in place, row by row
// through its pages, with the same conversion as a dense one, so a paged call computes bitwise
// what the dense call on the assembled cache computes.
inline RowTile key_rows_tile(const CpuKernels& kernels, const FlashSigmoidTensor& t, const CpuProblem& p, int64_t b,
                             int64_t h, int64_t s0, int64_t n, int64_t width, float* buffer) {
  if (p.kv_pages == nullptr) return rows_tile(kernels, t, p, b, h, s0, n, width, buffer);
  const size_t element = p.dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2;
  for (int64_t jj = 0; jj < n; ++jj) {
    const int64_t s = s0 + jj;
    const int64_t offset = p.kv_pages[s / p.page_size] * t.stride_batch + (s % p.page_size) * t.stride_seq +
                           h * t.stride_head;
    float* row = buffer + jj * width;
    kernels.widen(p.dtype, static_cast<const char*>(t.data) + static_cast<size_t>(offset) * element, p.head_dim, row);
    std::fill(row + p.head_dim, row + width, 0.0f);
  }
  return RowTile{buffer, width};
}

// tile_t[d * ld_t + jj] = rows[jj * ld_rows + d] for jj < n, d < head_dim; zero for n <= jj < n_alloc.
inline void transpose_rows(const float* rows, int64_t ld_rows, int64_t n, int64_t head_dim, float* tile_t,
                           int64_t ld_t, int64_t n_alloc) {
  for (int64_t d = 0; d < head_dim; ++d) {
    float* col = tile_t + d * ld_t;
    for (int64_t jj = 0; jj < n; ++jj) col[jj] = rows[jj * ld_rows + d];
    std::fill(col + n, col + n_alloc, 0.0f);
  }
}

// The TileBand (cpu_kernels.hpp) of the query rows [q0, q0 + rows) against the keys [k0, k0 + n):
// queries along the tile's rows (keys along its columns) or, with keys_by_queries, the transpose.
inline TileBand tile_band(const CpuProblem& p, float slope, int64_t q0, int64_t rows, int64_t k0, int64_t n,
                          bool keys_by_queries) {
  TileBand band;
  band.base = std::clamp(q0 + p.offset - k0, -kBandLimit, kBandLimit);
  band.row_step = keys_by_queries ? -1 : 1;
  band.col_step = -band.row_step;
  band.left = std::min(p.left, kBandLimit);
  band.right = std::min(p.right, kBandLimit);
  band.rows = keys_by_queries ? n : rows;
  band.cols = keys_by_queries ? rows : n;
  // Every pair is visible iff the last row's keys start at or before k0 and the first row's end at
  // or after k0 + n (both bounds move right with the row).
  band.check_band = !(p.visible_keys(q0 + rows - 1).begin <= k0 && p.visible_keys(q0).end >= k0 + n);
  band.scale = p.scale;
  band.bias = p.bias;
  band.slope = slope;
  band.alibi_base = std::clamp(q0 + p.offset + p.alibi_offset - k0, -kBandLimit, kBandLimit);
  return band;
}

}  // namespace flash_sigmoid::cpu_impl

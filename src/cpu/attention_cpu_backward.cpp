// Layer: CPU implementation. The backward (DESIGN §1), recomputing P from q and k:
//
//   dP = dO V^T,  dZ = dP * P * (1 - P),  dQ = scale dZ K,  dK = scale dZ^T Q,  dV = P^T dO.
//
// No O, no row statistics, no atomics. Two kinds of task run in one parallel pass, each owning the
// output rows it writes:
//   - a key task (batch, kv head, tile of kBlockN keys) owns those rows of dK and dV: it keeps the
//     k/v tile in fp32 and visits, for each query head of the kv head's group in order, the query
//     rows that see the tile in chunks of kBlockM, adding their contributions in ascending row order;
//   - a query task (batch, query head, block of kBlockM query rows) owns those rows of dQ: it walks
//     the visible key tiles in ascending order, as the forward does.
// Both recompute S and dP. The summation order of every element is fixed by the problem alone, so
// gradients are bitwise identical for any thread count (`deterministic` is always honoured).
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "attention_cpu.hpp"
#include "cpu_microkernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

// For query row i against the tile keys k0 + [keys.begin, keys.end): z (scores) becomes P, dp becomes dZ.
void row_probabilities_and_grads(const CpuProblem& p, float slope, int64_t i, int64_t k0, IndexRange keys, float* z,
                                 float* dp) {
  scores_to_logits(p, slope, i, k0, keys.begin, keys.end, z);
  for (int64_t jj = keys.begin; jj < keys.end; ++jj) {
    float p_ij, dsig;
    sigmoid_and_derivative(z[jj], &p_ij, &dsig);
    z[jj] = p_ij;
    dp[jj] *= dsig;
  }
}

// Rows [n0, n0 + kBlockN) of dK and dV for one (batch, kv head).
void key_task(const FlashSigmoidBackwardArgs& args, const CpuProblem& p, int64_t task, std::vector<float>& scratch) {
  const int64_t head_dim = p.head_dim;
  const int64_t width = padded_width(head_dim);
  const TileTask t = tile_task(task, p.heads_kv, tile_count(p.seqlen_k, kBlockN));
  const int64_t n_block = t.tile;
  const int64_t kv_head_idx = t.head;
  const int64_t batch_idx = t.batch;
  const int64_t n0 = n_block * kBlockN;
  const int64_t n = std::min(kBlockN, p.seqlen_k - n0);

  scratch.resize(static_cast<size_t>(2 * head_dim * kBlockN + 2 * kBlockN * width + 2 * kBlockM * width +
                                     4 * kBlockM * kBlockN + head_dim));
  float* k_t = scratch.data();                // (head_dim, kBlockN)
  float* v_t = k_t + head_dim * kBlockN;      // (head_dim, kBlockN)
  float* dk = v_t + head_dim * kBlockN;       // (kBlockN, width), fp32 accumulator
  float* dv = dk + kBlockN * width;           // (kBlockN, width), fp32 accumulator
  float* q_rows = dv + kBlockN * width;       // (kBlockM, width): a chunk of query rows
  float* do_rows = q_rows + kBlockM * width;  // (kBlockM, width)
  float* z = do_rows + kBlockM * width;       // (kBlockM, kBlockN): scores, then P
  float* ds = z + kBlockM * kBlockN;          // (kBlockM, kBlockN): dP, then dZ
  float* p_t = ds + kBlockM * kBlockN;        // (kBlockN, kBlockM): P transposed
  float* ds_t = p_t + kBlockN * kBlockM;      // (kBlockN, kBlockM): dZ transposed
  float* row_buf = ds_t + kBlockN * kBlockM;  // (head_dim)

  load_rows_transposed(args.k, p, batch_idx, kv_head_idx, n0, n, row_buf, k_t);
  load_rows_transposed(args.v, p, batch_idx, kv_head_idx, n0, n, row_buf, v_t);
  std::fill(dk, dk + n * width, 0.0f);
  std::fill(dv, dv + n * width, 0.0f);
  std::array<int64_t, kBlockN> lo{}, hi{};  // each key's visible rows within the chunk

  const IndexRange queries = p.queries_seeing(n0, n0 + n);
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t head_idx = kv_head_idx * p.group + g;
    const float slope = p.alibi_slope(batch_idx, head_idx);
    for (int64_t c0 = queries.begin; c0 < queries.end; c0 += kBlockM) {
      const int64_t rows = std::min(kBlockM, queries.end - c0);
      load_rows(args.q, p, batch_idx, head_idx, c0, rows, width, q_rows);
      load_rows(args.dout, p, batch_idx, head_idx, c0, rows, width, do_rows);
      rows_dot_tile(q_rows, width, rows, k_t, kBlockN, head_dim, padded_width(n), z, kBlockN);
      rows_dot_tile(do_rows, width, rows, v_t, kBlockN, head_dim, padded_width(n), ds, kBlockN);
      for (int64_t r = 0; r < rows; ++r) {
        const IndexRange kr = p.visible_keys_in(c0 + r, n0, n);
        float* z_r = z + r * kBlockN;
        float* ds_r = ds + r * kBlockN;
        row_probabilities_and_grads(p, slope, c0 + r, n0, kr, z_r, ds_r);
        for (int64_t jj = kr.begin; jj < kr.end; ++jj) {
          p_t[jj * kBlockM + r] = z_r[jj];
          ds_t[jj * kBlockM + r] = ds_r[jj];
        }
      }
      // The rows of this chunk that see key jj: the same (i, j) pairs as visible_keys_in above.
      for (int64_t jj = 0; jj < n; ++jj) {
        const IndexRange qr = p.queries_seeing(n0 + jj, n0 + jj + 1);
        lo[jj] = std::clamp(qr.begin - c0, int64_t{0}, rows);
        hi[jj] = std::clamp(qr.end - c0, lo[jj], rows);
      }
      rows_accumulate(p_t, kBlockM, lo.data(), hi.data(), n, do_rows, width, width, dv, width);
      rows_accumulate(ds_t, kBlockM, lo.data(), hi.data(), n, q_rows, width, width, dk, width);
    }
  }
  for (int64_t jj = 0; jj < n; ++jj) {
    float* dk_j = dk + jj * width;
    for (int64_t d = 0; d < head_dim; ++d) dk_j[d] *= p.scale;
    store_row(args.dk, p.dtype, batch_idx, n0 + jj, kv_head_idx, head_dim, dk_j);
    store_row(args.dv, p.dtype, batch_idx, n0 + jj, kv_head_idx, head_dim, dv + jj * width);
  }
}

// Rows [q0, q0 + kBlockM) of dQ for one (batch, query head).
void query_task(const FlashSigmoidBackwardArgs& args, const CpuProblem& p, int64_t task, std::vector<float>& scratch) {
  const int64_t head_dim = p.head_dim;
  const int64_t width = padded_width(head_dim);
  const TileTask t = tile_task(task, p.heads_q, tile_count(p.seqlen_q, kBlockM));
  const int64_t m_block = t.tile;
  const int64_t head_idx = t.head;
  const int64_t batch_idx = t.batch;
  const int64_t kv_head_idx = head_idx / p.group;
  const int64_t q0 = m_block * kBlockM;
  const int64_t rows = std::min(kBlockM, p.seqlen_q - q0);

  scratch.resize(static_cast<size_t>(3 * kBlockM * width + 2 * head_dim * kBlockN + kBlockN * width +
                                     2 * kBlockM * kBlockN + head_dim));
  float* q_tile = scratch.data();              // (kBlockM, width)
  float* do_tile = q_tile + kBlockM * width;   // (kBlockM, width)
  float* dq_tile = do_tile + kBlockM * width;  // (kBlockM, width), fp32 accumulator
  float* k_t = dq_tile + kBlockM * width;      // (head_dim, kBlockN)
  float* v_t = k_t + head_dim * kBlockN;       // (head_dim, kBlockN)
  float* k_tile = v_t + head_dim * kBlockN;    // (kBlockN, width)
  float* z = k_tile + kBlockN * width;         // (kBlockM, kBlockN): scores, then P
  float* ds = z + kBlockM * kBlockN;           // (kBlockM, kBlockN): dP, then dZ
  float* row_buf = ds + kBlockM * kBlockN;     // (head_dim)

  load_rows(args.q, p, batch_idx, head_idx, q0, rows, width, q_tile);
  load_rows(args.dout, p, batch_idx, head_idx, q0, rows, width, do_tile);
  std::fill(dq_tile, dq_tile + rows * width, 0.0f);

  const IndexRange keys = p.visible_keys_of_rows(q0, rows);
  const float slope = p.alibi_slope(batch_idx, head_idx);
  std::array<int64_t, kBlockM> lo{}, hi{};  // each row's visible keys within the tile

  for (int64_t n0 = keys.begin; n0 < keys.end; n0 += kBlockN) {
    const int64_t n = std::min(kBlockN, keys.end - n0);
    load_rows(args.k, p, batch_idx, kv_head_idx, n0, n, width, k_tile);
    for (int64_t jj = 0; jj < n; ++jj) {
      for (int64_t d = 0; d < head_dim; ++d) k_t[d * kBlockN + jj] = k_tile[jj * width + d];
    }
    for (int64_t d = 0; d < head_dim; ++d) std::fill(k_t + d * kBlockN + n, k_t + d * kBlockN + padded_width(n), 0.0f);
    load_rows_transposed(args.v, p, batch_idx, kv_head_idx, n0, n, row_buf, v_t);
    rows_dot_tile(q_tile, width, rows, k_t, kBlockN, head_dim, padded_width(n), z, kBlockN);
    rows_dot_tile(do_tile, width, rows, v_t, kBlockN, head_dim, padded_width(n), ds, kBlockN);
    for (int64_t r = 0; r < rows; ++r) {
      const IndexRange kr = p.visible_keys_in(q0 + r, n0, n);
      lo[r] = kr.begin;
      hi[r] = kr.end;
      row_probabilities_and_grads(p, slope, q0 + r, n0, kr, z + r * kBlockN, ds + r * kBlockN);
    }
    rows_accumulate(ds, kBlockN, lo.data(), hi.data(), rows, k_tile, width, width, dq_tile, width);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* dq = dq_tile + r * width;
    for (int64_t d = 0; d < head_dim; ++d) dq[d] *= p.scale;
    store_row(args.dq, p.dtype, batch_idx, q0 + r, head_idx, head_dim, dq);
  }
}

}  // namespace

bool backward(const FlashSigmoidBackwardArgs& args, int num_threads) noexcept {
  try {
    const CpuProblem p = make_cpu_problem(args);
    if (p.batch <= 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.head_dim <= 0) return true;
    const int64_t m_blocks = tile_count(p.seqlen_q, kBlockM);
    const int64_t n_blocks = tile_count(p.seqlen_k, kBlockN);
    // Key tasks first: they are the larger ones (a whole group of query heads each).
    const int64_t key_tasks = p.batch * p.heads_kv * n_blocks;
    const int64_t query_tasks = p.batch * p.heads_q * m_blocks;
    const int64_t work = p.batch * p.heads_q * p.seqlen_q * p.seqlen_k * p.head_dim;  // per GEMM
    return parallel_for(key_tasks + query_tasks, num_threads, work, [&](int64_t task, std::vector<float>& scratch) {
      if (task < key_tasks) {
        key_task(args, p, task, scratch);
      } else {
        query_task(args, p, task - key_tasks, scratch);
      }
    });
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

// Layer: CPU implementation. The forward, O = sigmoid(Z) V per batch and query head (DESIGN §1).
//
// One task is (batch, query head, block of kBlockM query rows). It converts its q rows to fp32 and
// transposes them once (q_t, head_dim x kBlockM), then walks the keys any of its rows can see in
// tiles of kFwdBlockN, converting each k/v tile to fp32 rows once:
//
//   s_t (keys x queries) = K_tile Q^T      gemm; the queries run along the vector lanes
//   s_t -> P^T                              sigmoid_tile: scale, bias, ALiBi, sigma, mask, in place
//   O (queries x head_dim) += P V_tile      gemm reading P^T with swapped strides
//
// Scores are laid out keys x queries so that the first product needs no transposed copy of k (k's
// rows are the broadcast operand) and q is transposed once per task rather than k once per tile.
// Every element of O sums its keys in ascending order, so results depend neither on the thread
// count nor on which worker ran a task. Does not validate arguments (the API layer does).
#include "attention_cpu.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_kernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

void forward_task(const FlashSigmoidForwardArgs& args, const CpuProblem& p, const CpuKernels& kernels, int64_t task,
                  std::vector<float>& scratch) {
  const int64_t head_dim = p.head_dim;
  const int64_t width = round_up(head_dim, kernels.nr);  // rows of v and O
  const TileTask t = tile_task(task, p.heads_q, tile_count(p.seqlen_q, kBlockM));
  const int64_t head_idx = t.head;
  const int64_t batch_idx = t.batch;
  const int64_t kv_head_idx = head_idx / p.group;
  const int64_t q0 = t.tile * kBlockM;
  const int64_t rows = std::min(kBlockM, p.seqlen_q - q0);
  const int64_t cols = round_up(rows, kernels.nr);  // query columns of s_t

  scratch.resize(static_cast<size_t>(head_dim * kBlockM + kBlockM * width + kFwdBlockN * head_dim + kFwdBlockN * width +
                                     kFwdBlockN * kBlockM + kBlockM * width));
  float* q_t = scratch.data();               // (head_dim, kBlockM)
  float* o = q_t + head_dim * kBlockM;       // (kBlockM, width), fp32 accumulator
  float* k_rows = o + kBlockM * width;       // (kFwdBlockN, head_dim)
  float* v_rows = k_rows + kFwdBlockN * head_dim;  // (kFwdBlockN, width)
  float* s_t = v_rows + kFwdBlockN * width;     // (kFwdBlockN, kBlockM): scores, then P^T
  float* q_rows = s_t + kFwdBlockN * kBlockM;   // (kBlockM, width): q before the transpose

  const RowTile q = rows_tile(kernels, args.q, p, batch_idx, head_idx, q0, rows, width, q_rows);
  transpose_rows(q.data, q.ld, rows, head_dim, q_t, kBlockM, cols);
  std::fill(o, o + rows * width, 0.0f);

  const IndexRange keys = p.visible_keys_of_rows(q0, rows);
  const float slope = p.alibi_slope(batch_idx, head_idx);
  for (int64_t n0 = keys.begin; n0 < keys.end; n0 += kFwdBlockN) {
    const int64_t n = std::min(kFwdBlockN, keys.end - n0);
    const RowTile k = rows_tile(kernels, args.k, p, batch_idx, kv_head_idx, n0, n, head_dim, k_rows);
    const RowTile v = rows_tile(kernels, args.v, p, batch_idx, kv_head_idx, n0, n, width, v_rows);
    kernels.gemm(n, cols, head_dim, k.data, k.ld, 1, q_t, kBlockM, s_t, kBlockM, false);
    kernels.sigmoid_tile(tile_band(p, slope, q0, rows, n0, n, /*keys_by_queries=*/true), s_t, kBlockM, n, cols);
    kernels.gemm(rows, width, n, s_t, 1, kBlockM, v.data, v.ld, o, width, true);
  }
  for (int64_t r = 0; r < rows; ++r) {
    store_row(args.out, p.dtype, batch_idx, q0 + r, head_idx, head_dim, o + r * width);
  }
}

}  // namespace

bool forward(const FlashSigmoidForwardArgs& args, int num_threads) noexcept {
  try {
    const CpuProblem p = make_cpu_problem(args);
    if (p.batch <= 0 || p.heads_q <= 0 || p.seqlen_q <= 0 || p.head_dim <= 0) return true;
    const CpuKernels& kernels = select_kernels();
    const int64_t m_blocks = tile_count(p.seqlen_q, kBlockM);
    const int64_t work = p.batch * p.heads_q * p.seqlen_q * p.seqlen_k * p.head_dim;  // per GEMM
    return parallel_for(p.batch * p.heads_q * m_blocks, num_threads, work, [&](int64_t task, std::vector<float>& scratch) {
      forward_task(args, p, kernels, task, scratch);
    });
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

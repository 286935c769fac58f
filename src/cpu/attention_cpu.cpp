// Layer: CPU implementation. The forward, O = sigmoid(Z) V per batch and query head (DESIGN §1).
//
// One task is (batch, query head, block of kBlockM query rows). It converts its q rows to fp32 and
// transposes them once (q_t, head_dim x kBlockM), then walks the keys any of its rows can see in
// tiles of kFwdBlockN, converting each k/v tile to fp32 rows once:
//
//   s_t (keys x queries) = K_tile Q^T      gemm; the queries run along the vector lanes
//   s_t -> P^T                              sigmoid_tile: scale, bias, ALiBi, sigma, mask, in place
//   P^T -> P'^T = P^T * M / (1 - p)         with dropout (cpu_dropout.hpp), in place
//   O (queries x head_dim) += P V_tile      gemm reading P^T with swapped strides
//
// Scores are laid out keys x queries so that the first product needs no transposed copy of k (k's
// rows are the broadcast operand) and q is transposed once per task rather than k once per tile.
// Every element of O sums its keys in ascending order, so results depend neither on the thread
// count nor on which worker ran a task. Packed sequences, per-sequence biases and KV caches run
// the same tasks on each dense part of the call (cpu_sequences.hpp); a paged cache's keys are read
// in place through its pages (key_rows_tile). Does not validate arguments (the API
// layer does).
#include "attention_cpu.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_kernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_sequences.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

// Query blocks per task: they share each k/v tile's conversion (18% of the forward at one block
// per task, S 2048, D 64, fp32), while every block still visits only its own visible keys.
constexpr int64_t kFwdBlocksPerTask = 4;

void forward_task(const FlashSigmoidForwardArgs& args, const CpuProblem& p, const CpuKernels& kernels, int64_t task,
                  std::vector<float>& scratch) {
  const int64_t head_dim = p.head_dim;
  const int64_t width = round_up(head_dim, kernels.nr);  // rows of v and O
  const TileTask t = tile_task(task, p.heads_q, tile_count(p.seqlen_q, kBlockM * kFwdBlocksPerTask));
  const int64_t head_idx = t.head;
  const int64_t batch_idx = t.batch;
  const int64_t kv_head_idx = head_idx / p.group;
  const int64_t task_q0 = t.tile * kBlockM * kFwdBlocksPerTask;
  const int64_t blocks = std::min(kFwdBlocksPerTask, tile_count(p.seqlen_q - task_q0, kBlockM));

  const int64_t per_block = head_dim * kBlockM + kBlockM * width;
  const int64_t keep_floats = p.dropout.enabled() ? (kFwdBlockN * kBlockM + 3) / 4 : 0;
  scratch.resize(static_cast<size_t>(blocks * per_block + kFwdBlockN * head_dim + kFwdBlockN * width +
                                     kFwdBlockN * kBlockM + kBlockM * width + keep_floats));
  float* k_rows = scratch.data() + blocks * per_block;  // (kFwdBlockN, head_dim)
  float* v_rows = k_rows + kFwdBlockN * head_dim;       // (kFwdBlockN, width)
  float* s_t = v_rows + kFwdBlockN * width;             // (kFwdBlockN, kBlockM): scores, then P^T
  float* q_rows = s_t + kFwdBlockN * kBlockM;           // (kBlockM, width): q before the transpose
  uint8_t* keep = reinterpret_cast<uint8_t*>(q_rows + kBlockM * width);  // (kBlockM, kFwdBlockN): dropout
  struct Block {
    int64_t q0, rows, cols;  // cols: query columns of s_t
    float* q_t;              // (head_dim, kBlockM)
    float* o;                // (kBlockM, width), fp32 accumulator
    IndexRange keys;         // the keys any of its rows sees
  };
  Block block[kFwdBlocksPerTask];
  IndexRange keys{p.seqlen_k, 0};  // the union of the blocks' keys
  for (int64_t b = 0; b < blocks; ++b) {
    Block& bl = block[b];
    bl.q0 = task_q0 + b * kBlockM;
    bl.rows = std::min(kBlockM, p.seqlen_q - bl.q0);
    bl.cols = round_up(bl.rows, kernels.nr);
    bl.q_t = scratch.data() + b * per_block;
    bl.o = bl.q_t + head_dim * kBlockM;
    const RowTile q = rows_tile(kernels, args.q, p, batch_idx, head_idx, bl.q0, bl.rows, width, q_rows);
    transpose_rows(q.data, q.ld, bl.rows, head_dim, bl.q_t, kBlockM, bl.cols);
    std::fill(bl.o, bl.o + bl.rows * width, 0.0f);
    bl.keys = p.visible_keys_of_rows(bl.q0, bl.rows);
    if (bl.keys.empty()) continue;
    keys.begin = std::min(keys.begin, bl.keys.begin);
    keys.end = std::max(keys.end, bl.keys.end);
  }

  const float slope = p.alibi_slope(batch_idx, head_idx);
  const uint32_t bh = p.dropout.bh(batch_idx, p.heads_q, head_idx);
  for (int64_t n0 = keys.begin; n0 < keys.end; n0 += kFwdBlockN) {
    const int64_t n = std::min(kFwdBlockN, keys.end - n0);
    const RowTile k = key_rows_tile(kernels, args.k, p, batch_idx, kv_head_idx, n0, n, head_dim, k_rows);
    const RowTile v = key_rows_tile(kernels, args.v, p, batch_idx, kv_head_idx, n0, n, width, v_rows);
    for (int64_t b = 0; b < blocks; ++b) {
      const Block& bl = block[b];
      // This block's keys of the tile, [k0, k0 + nk): each O element sums its keys in ascending
      // order, tile after tile, whatever the tiles' boundaries.
      const int64_t k0 = std::max(n0, bl.keys.begin);
      const int64_t nk = std::min(n0 + n, bl.keys.end) - k0;
      if (nk <= 0) continue;
      const float* k_tile = k.data + (k0 - n0) * k.ld;
      const float* v_tile = v.data + (k0 - n0) * v.ld;
      kernels.gemm(nk, bl.cols, head_dim, k_tile, k.ld, 1, bl.q_t, kBlockM, s_t, kBlockM, false);
      kernels.sigmoid_tile(tile_band(p, slope, bl.q0, bl.rows, k0, nk, /*keys_by_queries=*/true), s_t, kBlockM, nk,
                           bl.cols);
      // P' = P * M / (1 - p): s_t's entry (query i, key j) is s_t[(j - k0) * kBlockM + i - q0].
      if (p.dropout.enabled()) {
        apply_dropout(p.dropout.params, bh, bl.q0, bl.rows, k0, nk, s_t, 1, kBlockM, keep);
      }
      kernels.gemm(bl.rows, width, nk, s_t, 1, kBlockM, v_tile, v.ld, bl.o, width, true);
    }
  }
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t r = 0; r < block[b].rows; ++r) {
      store_row(args.out, p.dtype, batch_idx, block[b].q0 + r, head_idx, head_dim, block[b].o + r * width);
    }
  }
}

}  // namespace

// One parallel loop over every part's tasks (cpu_sequences.hpp: the whole dense batch, or one
// part per packed sequence), so that many short sequences keep every worker busy. Task t of the
// loop is task t - first_task of the last part whose first_task <= t.
bool forward(const FlashSigmoidForwardArgs& args, int num_threads) noexcept {
  try {
    const std::vector<DensePart<FlashSigmoidForwardArgs>> part_args = dense_parts(args);
    struct Part {
      const FlashSigmoidForwardArgs* args;
      CpuProblem p;
    };
    std::vector<Part> parts;
    std::vector<int64_t> first_task;
    int64_t tasks = 0, work = 0;
    for (const DensePart<FlashSigmoidForwardArgs>& part : part_args) {
      const CpuProblem p = make_cpu_problem(part.args, part.first_batch);
      if (p.batch <= 0 || p.heads_q <= 0 || p.seqlen_q <= 0 || p.head_dim <= 0) continue;
      parts.push_back(Part{&part.args, p});
      first_task.push_back(tasks);
      tasks += p.batch * p.heads_q * tile_count(p.seqlen_q, kBlockM * kFwdBlocksPerTask);
      work += p.batch * p.heads_q * p.seqlen_q * p.seqlen_k * p.head_dim;  // per GEMM
    }
    if (tasks == 0) return true;
    const CpuKernels& kernels = select_kernels();
    return parallel_for(tasks, num_threads, work, [&](int64_t task, std::vector<float>& scratch) {
      const size_t i = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                           first_task.begin() - 1);
      forward_task(*parts[i].args, parts[i].p, kernels, task - first_task[i], scratch);
    });
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

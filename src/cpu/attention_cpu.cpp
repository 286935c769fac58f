// Layer: CPU implementation. The forward, O = sigmoid(Z) V per batch and query head (DESIGN §1).
//
// One task is (batch, query head, block of kBlockM query rows). It converts its q rows to fp32
// once, then walks the keys any of its rows can see in tiles of kBlockN: k transposed (the score
// product runs along keys) and v as rows (the P V product runs along head_dim), each converted once
// per tile. Scores come from rows_dot_tile; each row then turns its visible scores into P; and
// rows_accumulate adds P V over each row's own visible keys, in ascending key order, so results do
// not depend on the tiling or the thread count. Does not validate arguments (the API layer does).
#include "attention_cpu.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "cpu_microkernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

void forward_task(const FlashSigmoidForwardArgs& args, const CpuProblem& p, int64_t task, std::vector<float>& scratch) {
  const int64_t head_dim = p.head_dim;
  const int64_t width = padded_width(head_dim);
  const TileTask t = tile_task(task, p.heads_q, tile_count(p.seqlen_q, kBlockM));
  const int64_t m_block = t.tile;
  const int64_t head_idx = t.head;
  const int64_t batch_idx = t.batch;
  const int64_t kv_head_idx = head_idx / p.group;
  const int64_t q0 = m_block * kBlockM;
  const int64_t rows = std::min(kBlockM, p.seqlen_q - q0);

  scratch.resize(
      static_cast<size_t>(2 * kBlockM * width + kBlockN * (head_dim + width) + kBlockM * kBlockN + head_dim));
  float* q_tile = scratch.data();            // (kBlockM, width)
  float* o_tile = q_tile + kBlockM * width;  // (kBlockM, width), fp32 accumulator
  float* k_t = o_tile + kBlockM * width;     // (head_dim, kBlockN)
  float* v_tile = k_t + head_dim * kBlockN;  // (kBlockN, width)
  float* z = v_tile + kBlockN * width;       // (kBlockM, kBlockN): scores, logits, then P
  float* row_buf = z + kBlockM * kBlockN;    // (head_dim)

  load_rows(args.q, p, batch_idx, head_idx, q0, rows, width, q_tile);
  std::fill(o_tile, o_tile + rows * width, 0.0f);

  const IndexRange keys = p.visible_keys_of_rows(q0, rows);
  const float slope = p.alibi_slope(batch_idx, head_idx);
  std::array<int64_t, kBlockM> lo{}, hi{};  // each row's visible keys within the tile

  for (int64_t n0 = keys.begin; n0 < keys.end; n0 += kBlockN) {
    const int64_t n = std::min(kBlockN, keys.end - n0);
    load_rows_transposed(args.k, p, batch_idx, kv_head_idx, n0, n, row_buf, k_t);
    load_rows(args.v, p, batch_idx, kv_head_idx, n0, n, width, v_tile);
    rows_dot_tile(q_tile, width, rows, k_t, kBlockN, head_dim, padded_width(n), z, kBlockN);
    for (int64_t r = 0; r < rows; ++r) {
      const IndexRange kr = p.visible_keys_in(q0 + r, n0, n);
      lo[r] = kr.begin;
      hi[r] = kr.end;
      float* z_r = z + r * kBlockN;
      scores_to_logits(p, slope, q0 + r, n0, kr.begin, kr.end, z_r);
      for (int64_t jj = kr.begin; jj < kr.end; ++jj) z_r[jj] = sigmoid(z_r[jj]);
    }
    rows_accumulate(z, kBlockN, lo.data(), hi.data(), rows, v_tile, width, width, o_tile, width);
  }
  for (int64_t r = 0; r < rows; ++r) {
    store_row(args.out, p.dtype, batch_idx, q0 + r, head_idx, head_dim, o_tile + r * width);
  }
}

}  // namespace

bool forward(const FlashSigmoidForwardArgs& args, int num_threads) noexcept {
  try {
    const CpuProblem p = make_cpu_problem(args);
    if (p.batch <= 0 || p.heads_q <= 0 || p.seqlen_q <= 0 || p.head_dim <= 0) return true;
    const int64_t m_blocks = tile_count(p.seqlen_q, kBlockM);
    const int64_t work = p.batch * p.heads_q * p.seqlen_q * p.seqlen_k * p.head_dim;  // per GEMM
    return parallel_for(p.batch * p.heads_q * m_blocks, num_threads, work,
                        [&](int64_t task, std::vector<float>& scratch) { forward_task(args, p, task, scratch); });
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

// Layer: CPU implementation. The backward (DESIGN §1), recomputing P from q and k:
//
//   dP = dO V^T,  dZ = dP * P * (1 - P),  dQ = scale dZ K,  dK = scale dZ^T Q,  dV = P^T dO.
//
// Five products per (query chunk, key tile), each computed once: no O, no row statistics, no
// atomics. The work is split over keys:
//   - a key task (batch, kv head, slab of key tiles) owns those rows of dK and dV. For each key tile
//     it keeps k (rows and transposed) and v (transposed) in fp32 and visits, for each query head of
//     the kv head's group in order, the query rows that see the tile in chunks of kBwdBlockM, adding
//     their dK/dV contributions in ascending row order. Their dQ contributions go to the slab's own
//     fp32 partial of dQ (private to the task, no sharing);
//   - a reduction task (batch, query head, block of kBwdBlockM rows) then sums the slabs' partials
//     in ascending slab order into dQ.
// The slab count per kv head (kSlabsPerHead at most) and the partials' memory are functions of the
// problem alone, so every gradient element has one fixed summation order: gradients are bitwise
// identical for any thread count (`deterministic` is always honoured). Key tasks are run in waves
// of (batch, kv head) pairs so that the partials stay under kPartialBudgetBytes.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "attention_cpu.hpp"
#include "cpu_kernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

constexpr int64_t kSlabsPerHead = 8;
constexpr int64_t kPartialBudgetBytes = int64_t{256} << 20;

// How the keys of one (batch, kv head) are split into slabs, and where their dQ partials live:
// partials[((pair - first_pair) * group + g) * slabs + slab] is a (seqlen_q, width) fp32 block of
// which only the rows of queries_seeing(slab's keys) are written and read.
struct SlabPlan {
  int64_t blocks_per_slab;  // key tiles of kBlockN per slab
  int64_t slabs;            // per (batch, kv head)
  int64_t width;            // padded head dim of the partials' rows
  IndexRange slab_keys(const CpuProblem& p, int64_t slab) const {
    const int64_t begin = slab * blocks_per_slab * kBlockN;
    return IndexRange{begin, std::min(p.seqlen_k, begin + blocks_per_slab * kBlockN)};
  }
};

struct BackwardContext {
  const FlashSigmoidBackwardArgs& args;
  const CpuProblem& p;
  const CpuKernels& kernels;
  SlabPlan plan;
  int64_t first_pair;  // the wave's first (batch, kv head) pair, batch * heads_kv + kv head
  float* partials;
  float* partial(int64_t pair, int64_t g, int64_t slab) const {
    return partials + (((pair - first_pair) * p.group + g) * plan.slabs + slab) * p.seqlen_q * plan.width;
  }
};

// Rows [n0, n0 + n) of dK and dV, and this tile's share of the slab's dQ partial.
void key_tile(const BackwardContext& c, int64_t batch_idx, int64_t kv_head_idx, int64_t slab, int64_t n0, int64_t n,
              float* scratch) {
  const CpuProblem& p = c.p;
  const CpuKernels& kernels = c.kernels;
  const int64_t head_dim = p.head_dim;
  const int64_t width = c.plan.width;
  const int64_t np = round_up(n, kernels.nr);
  const int64_t pair = batch_idx * p.heads_kv + kv_head_idx;

  float* k_rows = scratch;                      // (kBlockN, width): B of dQ += dZ K
  float* k_t = k_rows + kBlockN * width;        // (head_dim, kBlockN): B of S = Q K^T
  float* v_t = k_t + head_dim * kBlockN;        // (head_dim, kBlockN): B of dP = dO V^T
  float* dk = v_t + head_dim * kBlockN;         // (kBlockN, width), fp32 accumulator
  float* dv = dk + kBlockN * width;             // (kBlockN, width), fp32 accumulator
  float* q_rows = dv + kBlockN * width;         // (kBwdBlockM, width): a chunk of query rows
  float* do_rows = q_rows + kBwdBlockM * width;  // (kBwdBlockM, width)
  float* s = do_rows + kBwdBlockM * width;      // (kBwdBlockM, kBlockN): scores, then P
  float* ds = s + kBwdBlockM * kBlockN;         // (kBwdBlockM, kBlockN): dP, then dZ

  const RowTile k = rows_tile(kernels, c.args.k, p, batch_idx, kv_head_idx, n0, n, width, k_rows);
  transpose_rows(k.data, k.ld, n, head_dim, k_t, kBlockN, np);
  const RowTile v = rows_tile(kernels, c.args.v, p, batch_idx, kv_head_idx, n0, n, width, dv);  // dv: staging
  transpose_rows(v.data, v.ld, n, head_dim, v_t, kBlockN, np);
  std::fill(dk, dk + n * width, 0.0f);
  std::fill(dv, dv + n * width, 0.0f);

  const IndexRange queries = p.queries_seeing(n0, n0 + n);
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t head_idx = kv_head_idx * p.group + g;
    const float slope = p.alibi_slope(batch_idx, head_idx);
    float* dq_partial = c.partial(pair, g, slab);
    for (int64_t c0 = queries.begin; c0 < queries.end; c0 += kBwdBlockM) {
      const int64_t rows = std::min(kBwdBlockM, queries.end - c0);
      const RowTile q = rows_tile(kernels, c.args.q, p, batch_idx, head_idx, c0, rows, width, q_rows);
      const RowTile dout = rows_tile(kernels, c.args.dout, p, batch_idx, head_idx, c0, rows, width, do_rows);
      kernels.gemm(rows, np, head_dim, q.data, q.ld, 1, k_t, kBlockN, s, kBlockN, false);
      kernels.gemm(rows, np, head_dim, dout.data, dout.ld, 1, v_t, kBlockN, ds, kBlockN, false);
      kernels.sigmoid_grad_tile(tile_band(p, slope, c0, rows, n0, n, /*keys_by_queries=*/false), s, ds, kBlockN, rows,
                                np);
      // P^T dO and dZ^T Q read the (query, key) tiles with swapped strides; then dZ K.
      kernels.gemm(n, width, rows, s, 1, kBlockN, dout.data, dout.ld, dv, width, true);
      kernels.gemm(n, width, rows, ds, 1, kBlockN, q.data, q.ld, dk, width, true);
      kernels.gemm(rows, width, n, ds, kBlockN, 1, k.data, k.ld, dq_partial + c0 * width, width, true);
    }
  }
  for (int64_t jj = 0; jj < n; ++jj) {
    float* dk_j = dk + jj * width;
    for (int64_t d = 0; d < head_dim; ++d) dk_j[d] *= p.scale;
    store_row(c.args.dk, p.dtype, batch_idx, n0 + jj, kv_head_idx, head_dim, dk_j);
    store_row(c.args.dv, p.dtype, batch_idx, n0 + jj, kv_head_idx, head_dim, dv + jj * width);
  }
}

// The key tiles of one slab of one (batch, kv head), in ascending order.
void key_task(const BackwardContext& c, int64_t task, std::vector<float>& scratch) {
  const CpuProblem& p = c.p;
  const int64_t width = c.plan.width;
  const int64_t pair = c.first_pair + task / c.plan.slabs;
  const int64_t slab = task % c.plan.slabs;
  const int64_t batch_idx = pair / p.heads_kv;
  const int64_t kv_head_idx = pair % p.heads_kv;
  scratch.resize(static_cast<size_t>(3 * kBlockN * width + 2 * p.head_dim * kBlockN + 2 * kBwdBlockM * width +
                                     2 * kBwdBlockM * kBlockN));
  const IndexRange keys = c.plan.slab_keys(p, slab);
  const IndexRange queries = p.queries_seeing(keys.begin, keys.end);
  for (int64_t g = 0; g < p.group; ++g) {
    float* dq_partial = c.partial(pair, g, slab);
    std::fill(dq_partial + queries.begin * width, dq_partial + std::max(queries.begin, queries.end) * width, 0.0f);
  }
  for (int64_t n0 = keys.begin; n0 < keys.end; n0 += kBlockN) {
    key_tile(c, batch_idx, kv_head_idx, slab, n0, std::min(kBlockN, keys.end - n0), scratch.data());
  }
}

// Rows [q0, q0 + kBwdBlockM) of dQ of one (batch, query head): the sum of the slabs' partials.
void reduce_task(const BackwardContext& c, int64_t task, std::vector<float>& scratch) {
  const CpuProblem& p = c.p;
  const int64_t width = c.plan.width;
  const int64_t m_blocks = tile_count(p.seqlen_q, kBwdBlockM);
  const int64_t pair = c.first_pair + task / (p.group * m_blocks);
  const int64_t g = task / m_blocks % p.group;
  const int64_t q0 = task % m_blocks * kBwdBlockM;
  const int64_t rows = std::min(kBwdBlockM, p.seqlen_q - q0);
  const int64_t batch_idx = pair / p.heads_kv;
  const int64_t head_idx = pair % p.heads_kv * p.group + g;
  scratch.resize(static_cast<size_t>(width));
  float* dq = scratch.data();
  for (int64_t i = q0; i < q0 + rows; ++i) {
    std::fill(dq, dq + width, 0.0f);
    for (int64_t slab = 0; slab < c.plan.slabs; ++slab) {
      const IndexRange keys = c.plan.slab_keys(p, slab);
      const IndexRange queries = p.queries_seeing(keys.begin, keys.end);
      if (i < queries.begin || i >= queries.end) continue;
      const float* part = c.partial(pair, g, slab) + i * width;
      for (int64_t d = 0; d < p.head_dim; ++d) dq[d] += part[d];
    }
    for (int64_t d = 0; d < p.head_dim; ++d) dq[d] *= p.scale;
    store_row(c.args.dq, p.dtype, batch_idx, i, head_idx, p.head_dim, dq);
  }
}

}  // namespace

bool backward(const FlashSigmoidBackwardArgs& args, int num_threads) noexcept {
  try {
    const CpuProblem p = make_cpu_problem(args);
    if (p.batch <= 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.head_dim <= 0) return true;
    const CpuKernels& kernels = select_kernels();
    const int64_t n_blocks = tile_count(p.seqlen_k, kBlockN);
    SlabPlan plan;
    plan.blocks_per_slab = std::max<int64_t>(1, tile_count(n_blocks, kSlabsPerHead));
    plan.slabs = tile_count(n_blocks, plan.blocks_per_slab);
    plan.width = round_up(p.head_dim, kernels.nr);
    const int64_t pairs = p.batch * p.heads_kv;
    const int64_t pair_bytes = p.group * plan.slabs * p.seqlen_q * plan.width * int64_t{sizeof(float)};
    const int64_t pairs_per_wave = std::clamp<int64_t>(pair_bytes > 0 ? kPartialBudgetBytes / pair_bytes : pairs, 1, pairs);
    std::vector<float> partials(static_cast<size_t>(pairs_per_wave * pair_bytes / int64_t{sizeof(float)}));
    const int64_t m_blocks = tile_count(p.seqlen_q, kBwdBlockM);
    const int64_t work_per_pair = p.group * p.seqlen_q * p.seqlen_k * p.head_dim;  // per GEMM
    for (int64_t first = 0; first < pairs; first += pairs_per_wave) {
      const int64_t wave = std::min(pairs_per_wave, pairs - first);
      const BackwardContext c{args, p, kernels, plan, first, partials.data()};
      if (!parallel_for(wave * plan.slabs, num_threads, wave * work_per_pair,
                        [&](int64_t task, std::vector<float>& scratch) { key_task(c, task, scratch); })) {
        return false;
      }
      if (!parallel_for(wave * p.group * m_blocks, num_threads, wave * p.group * p.seqlen_q * p.head_dim * plan.slabs,
                        [&](int64_t task, std::vector<float>& scratch) { reduce_task(c, task, scratch); })) {
        return false;
      }
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

// Layer: CPU implementation. The backward (DESIGN §1), recomputing P from q and k:
//
//   dP = dO V^T,  dZ = dP * P * (1 - P),  dQ = scale dZ K,  dK = scale dZ^T Q,  dV = P^T dO;
//
// with dropout (docs/dropout.md, cpu_dropout.hpp) dV = P'^T dO and dZ = (dP * M / (1 - p)) * P (1 - P),
// P' = P * M / (1 - p) and P the undropped sigma.
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
// of (batch, kv head) pairs so that the partials stay under kPartialBudgetBytes. Packed sequences
// and per-sequence biases: the pairs of every dense part of the call (cpu_sequences.hpp) share the
// waves.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "attention_cpu.hpp"
#include "cpu_kernels.hpp"
#include "cpu_parallel.hpp"
#include "cpu_sequences.hpp"
#include "cpu_tiles.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

constexpr int64_t kSlabsPerHead = 8;
constexpr int64_t kPartialBudgetBytes = int64_t{256} << 20;

// The dQ partials' memory: uninitialised (each key task zeroes the rows it writes, the reduction
// reads no others) and, on Linux, in transparent huge pages where the system grants them on
// request (madvise mode): a call's partials are fresh memory (tens of MiB at S 2048), and taking
// them as 4 KiB pages cost ~13 ms of page faults and zeroing per call at S 2048, H 8, 1 thread
// (7% of the backward), 2 MiB pages a few.
struct PartialsBuffer {
  static constexpr size_t kAlign = size_t{2} << 20;
  float* data = nullptr;
  explicit PartialsBuffer(size_t floats) {
    const size_t bytes = std::max<size_t>(kAlign, (floats * sizeof(float) + kAlign - 1) / kAlign * kAlign);
    data = static_cast<float*>(std::aligned_alloc(kAlign, bytes));
    if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(data, bytes, MADV_HUGEPAGE);  // advice only: without it, 4 KiB pages
#endif
  }
  ~PartialsBuffer() { std::free(data); }
  PartialsBuffer(const PartialsBuffer&) = delete;
  PartialsBuffer& operator=(const PartialsBuffer&) = delete;
};

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

// The keys of one slab of one (batch, kv head): rows of dK and dV, and the slab's dQ partial.
// Query chunks run outside the slab's key tiles, so that each chunk's q and dO rows are converted
// once per slab (not once per key tile) and its rows of the dQ partial stay in cache while the
// tiles add to them; the slab's k, v (both layouts) and dK/dV accumulators stay in L2. Every
// (query row, key tile) pair is visited with the same rows as a tile-by-tile loop would use (the
// rows of the chunk that see the tile), and every sum still runs in ascending order (dK/dV over
// g, then query rows; dQ over key tiles, then keys), so the gradients do not depend on this order.
void key_task(const BackwardContext& c, int64_t task, std::vector<float>& scratch) {
  const CpuProblem& p = c.p;
  const CpuKernels& kernels = c.kernels;
  const int64_t head_dim = p.head_dim;
  const int64_t width = c.plan.width;
  const int64_t pair = c.first_pair + task / c.plan.slabs;
  const int64_t slab = task % c.plan.slabs;
  const int64_t batch_idx = pair / p.heads_kv;
  const int64_t kv_head_idx = pair % p.heads_kv;
  const IndexRange keys = c.plan.slab_keys(p, slab);
  const int64_t tiles = tile_count(keys.end - keys.begin, kBlockN);
  const int64_t slab_rows = tiles * kBlockN;
  const int64_t keep_floats = p.dropout.enabled() ? (kBwdBlockM * kBlockN + 3) / 4 : 0;
  scratch.resize(static_cast<size_t>(3 * slab_rows * width + 2 * head_dim * slab_rows + 2 * kBwdBlockM * width +
                                     2 * kBwdBlockM * kBlockN + keep_floats));
  float* k_rows = scratch.data();                // (slab_rows, width): B of dQ += dZ K
  float* k_t = k_rows + slab_rows * width;       // tiles x (head_dim, kBlockN): B of S = Q K^T
  float* v_t = k_t + head_dim * slab_rows;       // tiles x (head_dim, kBlockN): B of dP = dO V^T
  float* dk = v_t + head_dim * slab_rows;        // (slab_rows, width), fp32 accumulator
  float* dv = dk + slab_rows * width;            // (slab_rows, width), fp32 accumulator
  float* q_rows = dv + slab_rows * width;        // (kBwdBlockM, width): a chunk of query rows
  float* do_rows = q_rows + kBwdBlockM * width;  // (kBwdBlockM, width)
  float* s = do_rows + kBwdBlockM * width;       // (kBwdBlockM, kBlockN): scores, then P
  float* ds = s + kBwdBlockM * kBlockN;          // (kBwdBlockM, kBlockN): dP, then dZ
  uint8_t* keep = reinterpret_cast<uint8_t*>(ds + kBwdBlockM * kBlockN);  // (kBwdBlockM, kBlockN): dropout

  auto tile_keys = [&](int64_t t) {
    const int64_t n0 = keys.begin + t * kBlockN;
    return IndexRange{n0, std::min(keys.end, n0 + kBlockN)};
  };
  for (int64_t t = 0; t < tiles; ++t) {
    const IndexRange tk = tile_keys(t);
    const int64_t n = tk.end - tk.begin;
    const int64_t np = round_up(n, kernels.nr);
    float* k_tile = k_rows + t * kBlockN * width;
    load_rows(kernels, c.args.k, p, batch_idx, kv_head_idx, tk.begin, n, width, k_tile);
    transpose_rows(k_tile, width, n, head_dim, k_t + t * head_dim * kBlockN, kBlockN, np);
    float* v_stage = dv + t * kBlockN * width;  // dv: staging before it is zeroed
    load_rows(kernels, c.args.v, p, batch_idx, kv_head_idx, tk.begin, n, width, v_stage);
    transpose_rows(v_stage, width, n, head_dim, v_t + t * head_dim * kBlockN, kBlockN, np);
  }
  std::fill(dk, dk + slab_rows * width, 0.0f);
  std::fill(dv, dv + slab_rows * width, 0.0f);

  const IndexRange queries = p.queries_seeing(keys.begin, keys.end);
  for (int64_t g = 0; g < p.group; ++g) {
    const int64_t head_idx = kv_head_idx * p.group + g;
    const float slope = p.alibi_slope(batch_idx, head_idx);
    const uint32_t bh = p.dropout.bh(batch_idx, p.heads_q, head_idx);
    float* dq_partial = c.partial(pair, g, slab);
    std::fill(dq_partial + queries.begin * width, dq_partial + std::max(queries.begin, queries.end) * width, 0.0f);
    for (int64_t c0 = queries.begin; c0 < queries.end; c0 += kBwdBlockM) {
      const int64_t rows = std::min(kBwdBlockM, queries.end - c0);
      load_rows(kernels, c.args.q, p, batch_idx, head_idx, c0, rows, width, q_rows);
      load_rows(kernels, c.args.dout, p, batch_idx, head_idx, c0, rows, width, do_rows);
      for (int64_t t = 0; t < tiles; ++t) {
        const IndexRange tk = tile_keys(t);
        const int64_t n = tk.end - tk.begin;
        const int64_t np = round_up(n, kernels.nr);
        // The chunk's rows that see this tile: [i0, i0 + m).
        const IndexRange seeing = p.queries_seeing(tk.begin, tk.end);
        const int64_t i0 = std::max(c0, seeing.begin);
        const int64_t m = std::min(c0 + rows, seeing.end) - i0;
        if (m <= 0) continue;
        const float* q = q_rows + (i0 - c0) * width;
        const float* dout = do_rows + (i0 - c0) * width;
        kernels.gemm(m, np, head_dim, q, width, 1, k_t + t * head_dim * kBlockN, kBlockN, s, kBlockN, false);
        kernels.gemm(m, np, head_dim, dout, width, 1, v_t + t * head_dim * kBlockN, kBlockN, ds, kBlockN, false);
        kernels.sigmoid_grad_tile(tile_band(p, slope, i0, m, tk.begin, n, /*keys_by_queries=*/false), s, ds, kBlockN,
                                  m, np);
        // Dropout: P' = P * M / (1 - p) for dV, and dZ = (dP' * M / (1 - p)) * P (1 - P): the mask
        // scales the undropped sigma' product after sigmoid_grad_tile (the same product in
        // another order), so that one mask serves both tiles.
        if (p.dropout.enabled()) apply_dropout(p.dropout.params, bh, i0, m, tk.begin, n, s, ds, kBlockN, 1, keep);
        // P^T dO and dZ^T Q read the (query, key) tiles with swapped strides; then dZ K.
        kernels.gemm(n, width, m, s, 1, kBlockN, dout, width, dv + t * kBlockN * width, width, true);
        kernels.gemm(n, width, m, ds, 1, kBlockN, q, width, dk + t * kBlockN * width, width, true);
        kernels.gemm(m, width, n, ds, kBlockN, 1, k_rows + t * kBlockN * width, width, dq_partial + i0 * width, width,
                     true);
      }
    }
  }
  for (int64_t jj = 0; jj < keys.end - keys.begin; ++jj) {
    float* dk_j = dk + jj * width;
    for (int64_t d = 0; d < head_dim; ++d) dk_j[d] *= p.scale;
    store_row(c.args.dk, p.dtype, batch_idx, keys.begin + jj, kv_head_idx, head_dim, dk_j);
    store_row(c.args.dv, p.dtype, batch_idx, keys.begin + jj, kv_head_idx, head_dim, dv + jj * width);
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

// One (batch, kv head) pair of one part (cpu_sequences.hpp): its key tasks own rows of dK and dV,
// its reduction tasks rows of dQ, and its dQ partials are `floats` floats of the wave's buffer.
struct PairWork {
  size_t part;
  int64_t pair;
  int64_t floats;
  int64_t key_tasks, reduce_tasks;
  int64_t key_work, reduce_work;  // multiply-adds, for the thread count
};

}  // namespace

// Every part's (batch, kv head) pairs, in order, are run in waves whose partials fit in
// kPartialBudgetBytes (at least one pair per wave); a wave's key tasks, then its reduction tasks,
// run in one parallel loop each over all of its pairs, whichever parts they belong to. A pair's
// partials do not depend on where in the buffer they live, so the gradients of a dense call are
// those of a loop over its pairs alone, and each packed sequence's those of a dense call on it.
bool backward(const FlashSigmoidBackwardArgs& args, int num_threads) noexcept {
  try {
    const std::vector<DensePart<FlashSigmoidBackwardArgs>> part_args = dense_parts(args);
    const CpuKernels& kernels = select_kernels();
    struct Part {
      const FlashSigmoidBackwardArgs* args;
      CpuProblem p;
      SlabPlan plan;
    };
    std::vector<Part> parts;
    std::vector<PairWork> pairs;
    for (const DensePart<FlashSigmoidBackwardArgs>& part : part_args) {
      const FlashSigmoidBackwardArgs& a = part.args;
      const CpuProblem p = make_cpu_problem(a, part.first_batch);
      if (p.batch <= 0 || p.heads_q <= 0 || p.heads_kv <= 0 || p.head_dim <= 0) continue;
      const int64_t n_blocks = tile_count(p.seqlen_k, kBlockN);
      SlabPlan plan;
      plan.blocks_per_slab = std::max<int64_t>(1, tile_count(n_blocks, kSlabsPerHead));
      plan.slabs = tile_count(n_blocks, plan.blocks_per_slab);
      plan.width = round_up(p.head_dim, kernels.nr);
      parts.push_back(Part{&a, p, plan});
      const int64_t m_blocks = tile_count(p.seqlen_q, kBwdBlockM);
      for (int64_t pair = 0; pair < p.batch * p.heads_kv; ++pair) {
        pairs.push_back(PairWork{parts.size() - 1, pair, p.group * plan.slabs * p.seqlen_q * plan.width, plan.slabs,
                                 p.group * m_blocks, p.group * p.seqlen_q * p.seqlen_k * p.head_dim,
                                 p.group * p.seqlen_q * p.head_dim * plan.slabs});
      }
    }
    // Waves: [wave_begin[w], wave_begin[w + 1]) of `pairs`.
    constexpr int64_t kBudgetFloats = kPartialBudgetBytes / int64_t{sizeof(float)};
    std::vector<size_t> wave_begin;
    int64_t wave_floats = 0, buffer_floats = 0;
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (wave_begin.empty() || wave_floats + pairs[i].floats > kBudgetFloats) {
        wave_begin.push_back(i);
        wave_floats = 0;
      }
      wave_floats += pairs[i].floats;
      buffer_floats = std::max(buffer_floats, wave_floats);
    }
    wave_begin.push_back(pairs.size());
    if (pairs.empty()) return true;
    const PartialsBuffer partials(static_cast<size_t>(buffer_floats));

    for (size_t w = 0; w + 1 < wave_begin.size(); ++w) {
      std::vector<BackwardContext> contexts;
      std::vector<int64_t> first_key, first_reduce;
      int64_t key_tasks = 0, reduce_tasks = 0, key_work = 0, reduce_work = 0, offset = 0;
      contexts.reserve(wave_begin[w + 1] - wave_begin[w]);
      for (size_t i = wave_begin[w]; i < wave_begin[w + 1]; ++i) {
        const PairWork& pw = pairs[i];
        const Part& part = parts[pw.part];
        contexts.push_back(BackwardContext{*part.args, part.p, kernels, part.plan, pw.pair, partials.data + offset});
        offset += pw.floats;
        first_key.push_back(key_tasks);
        first_reduce.push_back(reduce_tasks);
        key_tasks += pw.key_tasks;
        reduce_tasks += pw.reduce_tasks;
        key_work += pw.key_work;
        reduce_work += pw.reduce_work;
      }
      // The pair of task `task` of a loop whose pairs start at `first`: the last with first <= task.
      auto pair_of = [](const std::vector<int64_t>& first, int64_t task) {
        return static_cast<size_t>(std::upper_bound(first.begin(), first.end(), task) - first.begin() - 1);
      };
      if (!parallel_for(key_tasks, num_threads, key_work, [&](int64_t task, std::vector<float>& scratch) {
            const size_t i = pair_of(first_key, task);
            key_task(contexts[i], task - first_key[i], scratch);
          })) {
        return false;
      }
      if (!parallel_for(reduce_tasks, num_threads, reduce_work, [&](int64_t task, std::vector<float>& scratch) {
            const size_t i = pair_of(first_reduce, task);
            reduce_task(contexts[i], task - first_reduce[i], scratch);
          })) {
        return false;
      }
    }
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace flash_sigmoid::cpu_impl

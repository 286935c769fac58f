// Test support for the KV-cache tests (test_cpu_kvcache*.cpp): host caches in any dtype in the
// three layouts of docs/kvcache.md (rows, a row map, pages), addressed here from the layouts'
// definitions (not by the code under test), new tokens, and the append call's arguments.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "oracle.hpp"

namespace flash_sigmoid::kvcache_test {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

enum class Layout { kRows, kRowMap, kPaged };  // k/v [B, cap], [kv_rows, cap] + kv_batch_idx, or pages
inline const char* layout_name(Layout l) { return l == Layout::kRows ? "rows" : l == Layout::kRowMap ? "row_map" : "paged"; }

// Host bytes of one dtype, read and written as doubles (rounded to the dtype on write).
struct Buffer {
  FlashSigmoidDType dtype;
  std::vector<unsigned char> bytes;
  Buffer(FlashSigmoidDType t, size_t n) : dtype(t), bytes(n * oracle::element_bytes(t)) {}
  size_t eb() const { return oracle::element_bytes(dtype); }
  void put(size_t i, double x) {
    const uint32_t bits = oracle::encode(dtype, oracle::round_to(dtype, x));
    std::memcpy(bytes.data() + i * eb(), &bits, eb());  // little-endian: the low bytes
  }
  double get(size_t i) const {
    uint32_t bits = 0;
    std::memcpy(&bits, bytes.data() + i * eb(), eb());
    return oracle::decode(dtype, bits);
  }
  void* data() { return bytes.data(); }
  size_t size() const { return bytes.size() / eb(); }
};

// A batch of cache rows of capacity `cap` holding lengths[b] random keys each (NaN elsewhere), q
// [B, sq, Hq, D] random, out poisoned. Paged: every row's pages are a random choice among more
// pages than the rows use; row map: rows are a random choice among more rows than the batch.
struct KvCache {
  FlashSigmoidDType dtype;
  Layout layout;
  int64_t batch, cap, hq, hkv, d, sq, page_size;
  int64_t kv_rows, row_len;  // k/v's batch extent (rows or pages) and rows per entry (cap or page_size)
  std::vector<int32_t> lengths, row_map, table;
  std::vector<float> slopes;
  Buffer q, k, v, out;
  Problem problem;
  std::mt19937_64 rng;

  KvCache(FlashSigmoidDType type, Layout l, int64_t page, std::vector<int32_t> lens, int64_t capacity, int64_t seqlen_q,
          int64_t heads_q = 4, int64_t heads_kv = 2, int64_t head_dim = 24, uint64_t seed = 1)
      : dtype(type), layout(l), batch(static_cast<int64_t>(lens.size())), cap(capacity), hq(heads_q), hkv(heads_kv),
        d(head_dim), sq(seqlen_q), page_size(l == Layout::kPaged ? page : 0),
        kv_rows(l == Layout::kPaged ? batch * (capacity / page) + 3 : l == Layout::kRowMap ? batch + 2 : batch),
        row_len(l == Layout::kPaged ? page : capacity), lengths(std::move(lens)), q(type, batch * seqlen_q * hq * d),
        k(type, kv_rows * row_len * hkv * d), v(type, kv_rows * row_len * hkv * d), out(type, batch * seqlen_q * hq * d),
        problem(problem_init(head_dim)), rng(seed) {
    std::vector<int32_t> ids(static_cast<size_t>(kv_rows));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    if (layout == Layout::kPaged) table.assign(ids.begin(), ids.begin() + batch * pages_per_row());
    if (layout == Layout::kRowMap) row_map.assign(ids.begin(), ids.begin() + batch);
    std::normal_distribution<double> normal;
    for (size_t i = 0; i < q.size(); ++i) q.put(i, normal(rng));
    for (size_t i = 0; i < k.size(); ++i) k.put(i, kNaN), v.put(i, kNaN);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0; j < lengths[b]; ++j)
        for (int64_t h = 0; h < hkv; ++h)
          for (int64_t x = 0; x < d; ++x) k.put(key(b, j, h, x), normal(rng)), v.put(key(b, j, h, x), normal(rng));
    std::uniform_real_distribution<float> slope(0.05f, 1.0f);
    for (int64_t e = 0; e < batch * hq; ++e) slopes.push_back(slope(rng));
    poison();
    problem.dtype = dtype;
    problem.batch = batch;
    problem.seqlen_q = sq;
    problem.seqlen_k = cap;
    problem.heads_q = hq;
    problem.heads_kv = hkv;
    problem.seqused_k = lengths.data();
    problem.kv_batch_idx = layout == Layout::kRowMap ? row_map.data() : nullptr;
    problem.block_table = layout == Layout::kPaged ? table.data() : nullptr;
    problem.block_table_stride_batch = layout == Layout::kPaged ? pages_per_row() : 0;
    problem.page_size = page_size;
    problem.kv_batch = layout == Layout::kRows ? 0 : kv_rows;
  }
  int64_t pages_per_row() const { return cap / page_size; }
  void poison() {
    for (size_t i = 0; i < out.size(); ++i) out.put(i, kNaN);
  }
  // Element (key j of batch entry b, kv head h, channel x) of k/v, addressed as flash-attn does:
  // written here from the layouts' definitions, not by the code under test.
  size_t key(int64_t b, int64_t j, int64_t h, int64_t x) const {
    int64_t entry = b, slot = j;
    if (layout == Layout::kRowMap) entry = row_map[b];
    if (layout == Layout::kPaged) entry = table[b * pages_per_row() + j / page_size], slot = j % page_size;
    return static_cast<size_t>(((entry * row_len + slot) * hkv + h) * d + x);
  }
  Tensor cache_tensor(Buffer& t) { return Tensor{t.data(), row_len * hkv * d, hkv * d, d, 1}; }
  ForwardArgs forward_args() {
    ForwardArgs a{};
    a.problem = problem;
    a.q = contiguous_tensor(q.data(), sq, hq, d);
    a.k = cache_tensor(k);
    a.v = cache_tensor(v);
    a.out = contiguous_tensor(out.data(), sq, hq, d);
    return a;
  }
};

inline bool same_bytes(const Buffer& a, size_t a0, const Buffer& b, size_t n) {
  return std::memcmp(a.bytes.data() + a0 * a.eb(), b.bytes.data(), n * a.eb()) == 0;
}

struct NewTokens {
  Buffer k, v;
  NewTokens(const KvCache& c, int64_t seqlen_new, uint64_t seed)
      : k(c.dtype, c.batch * seqlen_new * c.hkv * c.d), v(c.dtype, c.batch * seqlen_new * c.hkv * c.d) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    for (size_t i = 0; i < k.size(); ++i) k.put(i, normal(rng)), v.put(i, normal(rng));
  }
};

inline KvAppendArgs append_args(KvCache& c, NewTokens& t, int64_t seqlen_new) {
  KvAppendArgs a{};
  a.problem = c.problem;
  a.problem.seqused_k = nullptr;
  a.cache_seqlens = c.lengths.data();
  a.seqlen_new = seqlen_new;
  a.k_new = contiguous_tensor(t.k.data(), seqlen_new, c.hkv, c.d);
  a.v_new = contiguous_tensor(t.v.data(), seqlen_new, c.hkv, c.d);
  a.k_cache = c.cache_tensor(c.k);
  a.v_cache = c.cache_tensor(c.v);
  return a;
}

}  // namespace flash_sigmoid::kvcache_test

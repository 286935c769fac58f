// Tests of the KV-cache fields and the append step (docs/kvcache.md) through the public API on the
// CPU: a KV-cache forward (per-row key counts seqused_k, a row map kv_batch_idx, or a paged cache
// through block_table) equals the dense call on each row's assembled keys (bitwise: the same
// arithmetic on the same values) and the fp64 oracle; the append writes the new tokens exactly
// where flash-attn 2.5.6 puts them and nothing else (page sizes 16/64/256, odd lengths, empty
// caches, rows filled to capacity); rotary in both layouts with both position rules; thread-count
// independence; every validation message, and the GPU path's Unsupported naming the field.
//
// Caches hold NaN wherever no key has been written (past each row's length, unreferenced pages and
// rows), so a read outside a row's keys makes the output non-finite and fails the bitwise checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "oracle.hpp"

namespace flash_sigmoid {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

enum class Layout { kRows, kRowMap, kPaged };  // k/v [B, cap], [kv_rows, cap] + kv_batch_idx, or pages
const char* layout_name(Layout l) { return l == Layout::kRows ? "rows" : l == Layout::kRowMap ? "row_map" : "paged"; }

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

// Row b's first `keys` keys assembled into dense [1, keys, Hkv, D] k and v, and the dense batch-1
// call on them: what the KV-cache forward must compute for that row.
struct DenseRow {
  Buffer k, v, out;
  ForwardArgs args;
  DenseRow(KvCache& c, int64_t b, int64_t keys, float bias)
      : k(c.dtype, keys * c.hkv * c.d), v(c.dtype, keys * c.hkv * c.d), out(c.dtype, c.sq * c.hq * c.d), args{} {
    for (int64_t j = 0; j < keys; ++j)
      for (int64_t h = 0; h < c.hkv; ++h)
        for (int64_t x = 0; x < c.d; ++x) {
          const size_t at = static_cast<size_t>((j * c.hkv + h) * c.d + x);
          k.put(at, c.k.get(c.key(b, j, h, x)));
          v.put(at, c.v.get(c.key(b, j, h, x)));
        }
    for (size_t i = 0; i < out.size(); ++i) out.put(i, kNaN);
    Problem& p = args.problem;
    p = problem_init(c.d);
    p.dtype = c.dtype;
    p.batch = 1, p.seqlen_q = c.sq, p.seqlen_k = keys, p.heads_q = c.hq, p.heads_kv = c.hkv;
    p.scale = c.problem.scale;
    p.causal = c.problem.causal, p.window_left = c.problem.window_left, p.window_right = c.problem.window_right;
    p.sigmoid_bias = bias;
    if (c.problem.alibi_slopes != nullptr) p.alibi_slopes = c.problem.alibi_slopes + b * c.problem.alibi_stride_batch;
    const size_t q_row = static_cast<size_t>(b * c.sq * c.hq * c.d) * c.q.eb();
    args.q = contiguous_tensor(c.q.bytes.data() + q_row, c.sq, c.hq, c.d);
    args.k = contiguous_tensor(k.data(), keys, c.hkv, c.d);
    args.v = contiguous_tensor(v.data(), keys, c.hkv, c.d);
    args.out = contiguous_tensor(out.data(), c.sq, c.hq, c.d);
  }
};

float auto_bias(int64_t keys) { return keys > 0 ? static_cast<float>(-std::log(static_cast<double>(keys))) : 0.0f; }

enum class Bias { kScalar, kAuto };
enum class Slopes { kNone, kPerHead, kPerBatchHead };
struct MaskCase {
  const char* name;
  int causal;
  int64_t left, right;
  Slopes slopes;
  Bias bias;
};
const MaskCase kMasks[] = {
    {"plain_scalar_bias", 0, -1, -1, Slopes::kNone, Bias::kScalar},
    {"causal_alibi_batch", 1, -1, -1, Slopes::kPerBatchHead, Bias::kScalar},
    {"causal_left7_auto_bias", 1, 7, -1, Slopes::kNone, Bias::kAuto},
    {"window_4_2_alibi_heads_auto_bias", 0, 4, 2, Slopes::kPerHead, Bias::kAuto},
};
void configure(KvCache& c, const MaskCase& m) {
  c.problem.causal = m.causal;
  c.problem.window_left = m.left;
  c.problem.window_right = m.right;
  c.problem.alibi_slopes = m.slopes == Slopes::kNone ? nullptr : c.slopes.data();
  c.problem.alibi_stride_batch = m.slopes == Slopes::kPerBatchHead ? c.hq : 0;
  c.problem.sigmoid_bias = m.bias == Bias::kScalar ? -1.25f : 0.0f;
  c.problem.sigmoid_bias_auto = m.bias == Bias::kAuto;
}
float bias_of(const KvCache& c, const MaskCase& m, int64_t keys) {
  return m.bias == Bias::kAuto ? auto_bias(keys) : c.problem.sigmoid_bias;
}

bool same_bytes(const Buffer& a, size_t a0, const Buffer& b, size_t n) {
  return std::memcmp(a.bytes.data() + a0 * a.eb(), b.bytes.data(), n * a.eb()) == 0;
}

// Checks the KV-cache call's output row by row against the dense call on the assembled keys
// (bitwise) and, for fp32, the fp64 oracle on them.
void expect_rows_equal_dense(KvCache& c, const MaskCase& m, const std::vector<int32_t>& keys) {
  const size_t n = static_cast<size_t>(c.sq * c.hq * c.d);
  for (int64_t b = 0; b < c.batch; ++b) {
    SCOPED_TRACE("batch entry " + std::to_string(b) + " with " + std::to_string(keys[b]) + " keys");
    DenseRow row(c, b, keys[b], bias_of(c, m, keys[b]));
    ASSERT_EQ(cpu::forward(row.args, 1), Status::kSuccess) << last_error();
    EXPECT_TRUE(same_bytes(c.out, b * n, row.out, n)) << "KV-cache row != dense call on the assembled cache";
    const std::vector<double> ref = oracle::forward(row.args);
    const double tol = c.dtype == FLASH_SIGMOID_FLOAT32 ? 1e-5 : 2e-2;
    for (size_t e = 0; e < n; ++e) {
      ASSERT_NEAR(c.out.get(b * n + e), ref[e], tol * std::max(1.0, std::abs(ref[e]))) << "element " << e;
    }
  }
}

struct ForwardCase {
  Layout layout;
  int64_t page_size;
  FlashSigmoidDType dtype;
  MaskCase mask;
};
void PrintTo(const ForwardCase& c, std::ostream* os) {
  *os << layout_name(c.layout) << c.page_size << "_" << oracle::dtype_label(c.dtype) << "_" << c.mask.name;
}
std::vector<ForwardCase> forward_cases() {
  std::vector<ForwardCase> cases;
  for (const MaskCase& m : kMasks) {
    cases.push_back({Layout::kRows, 0, FLASH_SIGMOID_FLOAT32, m});
    cases.push_back({Layout::kRowMap, 0, FLASH_SIGMOID_FLOAT32, m});
    for (int64_t page : {16, 64, 256}) cases.push_back({Layout::kPaged, page, FLASH_SIGMOID_FLOAT32, m});
  }
  cases.push_back({Layout::kPaged, 16, FLASH_SIGMOID_BFLOAT16, kMasks[1]});
  cases.push_back({Layout::kRowMap, 0, FLASH_SIGMOID_FLOAT16, kMasks[2]});
  return cases;
}

class CpuKvCacheForward : public ::testing::TestWithParam<ForwardCase> {};

// Lengths: empty, one key (fewer than the queries), odd, over several CPU key tiles (72), and the
// whole capacity; three queries, so causal rows of short caches see nothing.
TEST_P(CpuKvCacheForward, EqualsTheDenseCallOnEachRowsAssembledCache) {
  const ForwardCase& fc = GetParam();
  KvCache c(fc.dtype, fc.layout, fc.page_size, {0, 1, 17, 113, 256}, 256, 3);
  configure(c, fc.mask);
  ASSERT_EQ(cpu::forward(c.forward_args(), 2), Status::kSuccess) << last_error();
  expect_rows_equal_dense(c, fc.mask, c.lengths);
}

INSTANTIATE_TEST_SUITE_P(Layouts, CpuKvCacheForward, ::testing::ValuesIn(forward_cases()));

TEST(CpuKvCacheRows, WithoutSequsedEveryRowUsesTheWholeCapacity) {
  KvCache c(FLASH_SIGMOID_FLOAT32, Layout::kPaged, 16, {48, 48, 48}, 48, 2);
  configure(c, kMasks[1]);
  c.problem.seqused_k = nullptr;
  ASSERT_EQ(cpu::forward(c.forward_args(), 1), Status::kSuccess) << last_error();
  expect_rows_equal_dense(c, kMasks[1], c.lengths);
}

TEST(CpuKvCacheRows, ResultsDoNotDependOnTheThreadCount) {
  KvCache c(FLASH_SIGMOID_FLOAT32, Layout::kPaged, 16, {200, 3, 77, 0, 150}, 208, 5, 8, 2, 32);
  configure(c, kMasks[2]);
  ASSERT_EQ(cpu::forward(c.forward_args(), 1), Status::kSuccess) << last_error();
  const Buffer one = c.out;
  for (int threads : {2, 3, 0}) {
    c.poison();
    ASSERT_EQ(cpu::forward(c.forward_args(), threads), Status::kSuccess) << last_error();
    EXPECT_TRUE(same_bytes(c.out, 0, one, one.size())) << threads << " threads";
  }
}

// ---- the append step ----------------------------------------------------------------------------

struct NewTokens {
  Buffer k, v;
  NewTokens(const KvCache& c, int64_t seqlen_new, uint64_t seed)
      : k(c.dtype, c.batch * seqlen_new * c.hkv * c.d), v(c.dtype, c.batch * seqlen_new * c.hkv * c.d) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal;
    for (size_t i = 0; i < k.size(); ++i) k.put(i, normal(rng)), v.put(i, normal(rng));
  }
};

KvAppendArgs append_args(KvCache& c, NewTokens& t, int64_t seqlen_new) {
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

struct AppendCase {
  Layout layout;
  int64_t page_size;
  std::vector<int32_t> lengths;
  int64_t seqlen_new;
  const char* name;
};
void PrintTo(const AppendCase& c, std::ostream* os) { *os << layout_name(c.layout) << c.page_size << "_" << c.name; }
std::vector<AppendCase> append_cases() {
  std::vector<AppendCase> cases;
  for (auto [layout, page] : {std::pair{Layout::kRows, int64_t{0}}, std::pair{Layout::kRowMap, int64_t{0}},
                              std::pair{Layout::kPaged, int64_t{16}}, std::pair{Layout::kPaged, int64_t{64}},
                              std::pair{Layout::kPaged, int64_t{256}}}) {
    // Decode-like: odd lengths, a page boundary crossed, a row filled to exactly its capacity.
    cases.push_back({layout, page, {0, 5, 16, 63, 249}, 7, "odd_lengths_new7"});
    cases.push_back({layout, page, {0, 0, 0}, 40, "prefill_empty_new40"});
    cases.push_back({layout, page, {1, 255, 128}, 1, "decode_one_token"});
  }
  return cases;
}

class CpuKvCacheAppend : public ::testing::TestWithParam<AppendCase> {};

// The new tokens land at positions cache_seqlens[b] .. + seqlen_new - 1 of row b; every other byte
// of both caches (including unreferenced pages and rows) is untouched. Then the forward over the
// grown rows equals the dense call on them.
TEST_P(CpuKvCacheAppend, WritesExactlyWhereFlashAttnDoesThenAttends) {
  const AppendCase& ac = GetParam();
  KvCache c(FLASH_SIGMOID_BFLOAT16, ac.layout, ac.page_size, ac.lengths, 256, 2);
  NewTokens t(c, ac.seqlen_new, 7);
  Buffer want_k = c.k, want_v = c.v;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < ac.seqlen_new; ++i)
      for (int64_t h = 0; h < c.hkv; ++h)
        for (int64_t x = 0; x < c.d; ++x) {
          const size_t from = static_cast<size_t>(((b * ac.seqlen_new + i) * c.hkv + h) * c.d + x);
          want_k.put(c.key(b, c.lengths[b] + i, h, x), t.k.get(from));
          want_v.put(c.key(b, c.lengths[b] + i, h, x), t.v.get(from));
        }
  ASSERT_EQ(cpu::kvcache_append(append_args(c, t, ac.seqlen_new), 1), Status::kSuccess) << last_error();
  EXPECT_TRUE(same_bytes(c.k, 0, want_k, want_k.size())) << "k_cache after the append";
  EXPECT_TRUE(same_bytes(c.v, 0, want_v, want_v.size())) << "v_cache after the append";

  std::vector<int32_t> grown = c.lengths;
  for (int32_t& n : grown) n += static_cast<int32_t>(ac.seqlen_new);
  c.problem.seqused_k = grown.data();
  configure(c, kMasks[2]);
  ASSERT_EQ(cpu::forward(c.forward_args(), 2), Status::kSuccess) << last_error();
  expect_rows_equal_dense(c, kMasks[2], grown);
}

INSTANTIATE_TEST_SUITE_P(Layouts, CpuKvCacheAppend, ::testing::ValuesIn(append_cases()));

// ---- rotary -------------------------------------------------------------------------------------

struct RotaryCase {
  bool interleaved;
  int causal;
  int64_t window_left;
  Layout layout;
  const char* name;
};
void PrintTo(const RotaryCase& c, std::ostream* os) { *os << c.name; }
const RotaryCase kRotary[] = {
    {true, 0, -1, Layout::kPaged, "interleaved_noncausal_paged"},
    {false, 0, -1, Layout::kRows, "half_split_noncausal_rows"},
    {true, 1, -1, Layout::kRowMap, "interleaved_causal_row_map"},
    {false, 1, -1, Layout::kPaged, "half_split_causal_paged"},
    {false, 0, 5, Layout::kRows, "half_split_window_rows"},
};

class CpuKvCacheRotary : public ::testing::TestWithParam<RotaryCase> {};

// x rotated by the angle of position `pos` in fp64 from the fp32 tables: the first rotary_dim
// channels in pairs (2i, 2i+1) or (i, i + r/2), the rest unchanged.
std::vector<double> rotated(const std::vector<double>& x, const std::vector<float>& cos, const std::vector<float>& sin,
                            int64_t half, int64_t pos, bool interleaved) {
  std::vector<double> y = x;
  for (int64_t i = 0; i < half; ++i) {
    const size_t i1 = static_cast<size_t>(interleaved ? 2 * i : i), i2 = static_cast<size_t>(interleaved ? 2 * i + 1 : i + half);
    const double c = cos[static_cast<size_t>(pos * half + i)], s = sin[static_cast<size_t>(pos * half + i)];
    y[i1] = x[i1] * c - x[i2] * s;
    y[i2] = x[i2] * c + x[i1] * s;
  }
  return y;
}

// The new k lands rotated at its position cache_seqlens[b] + i; q's token i is rotated at
// cache_seqlens[b] + i with causal or a window, else at cache_seqlens[b] (flash-attn 2.5.6). Each
// value within one bf16 step of the fp64 rotation (the implementation rounds in fp32 first).
TEST_P(CpuKvCacheRotary, RotatesQAndTheNewKAtFlashAttnsPositions) {
  const RotaryCase& rc = GetParam();
  const int64_t seqlen_new = 3, rotary_dim = 16, half = rotary_dim / 2;
  KvCache c(FLASH_SIGMOID_BFLOAT16, rc.layout, 16, {0, 9, 30}, 64, 4);
  c.problem.causal = rc.causal;
  c.problem.window_left = rc.window_left;
  NewTokens t(c, seqlen_new, 3);
  std::vector<float> cos, sin;
  for (int64_t pos = 0; pos < 64; ++pos)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos) * std::pow(10000.0, -2.0 * static_cast<double>(i) / rotary_dim);
      cos.push_back(static_cast<float>(std::cos(angle)));
      sin.push_back(static_cast<float>(std::sin(angle)));
    }
  Buffer q_rot(c.dtype, c.q.size());
  for (size_t i = 0; i < q_rot.size(); ++i) q_rot.put(i, kNaN);
  KvAppendArgs a = append_args(c, t, seqlen_new);
  a.rotary_cos = cos.data(), a.rotary_sin = sin.data();
  a.rotary_stride = half, a.rotary_seqlen = 64, a.rotary_dim = rotary_dim, a.rotary_interleaved = rc.interleaved;
  a.q = contiguous_tensor(c.q.data(), c.sq, c.hq, c.d);
  a.q_rotated = contiguous_tensor(q_rot.data(), c.sq, c.hq, c.d);
  ASSERT_EQ(cpu::kvcache_append(a, 1), Status::kSuccess) << last_error();

  auto expect_row = [&](const Buffer& got, auto at, const Buffer& src, size_t from, int64_t pos, const char* what) {
    std::vector<double> x(static_cast<size_t>(c.d));
    for (int64_t e = 0; e < c.d; ++e) x[static_cast<size_t>(e)] = src.get(from + static_cast<size_t>(e));
    const std::vector<double> want = rotated(x, cos, sin, half, pos, rc.interleaved);
    for (int64_t e = 0; e < c.d; ++e) {
      const double w = want[static_cast<size_t>(e)], g = got.get(at(e));
      // One bf16 step, plus fp32's own rounding where x1 c and x2 s cancel; the rest copied exactly.
      const double step = e < rotary_dim ? oracle::spacing(c.dtype, w) + 1e-6 : 0.0;
      ASSERT_LE(std::abs(g - w), step) << what << " position " << pos << " channel " << e;
    }
  };
  const bool q_steps = rc.causal || rc.window_left != -1;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < seqlen_new; ++i)
      for (int64_t h = 0; h < c.hkv; ++h) {
        const size_t from = static_cast<size_t>(((b * seqlen_new + i) * c.hkv + h) * c.d);
        const int64_t pos = c.lengths[b] + i;
        expect_row(c.k, [&](int64_t e) { return c.key(b, pos, h, e); }, t.k, from, pos, "k_cache");
        for (int64_t e = 0; e < c.d; ++e) ASSERT_EQ(c.v.get(c.key(b, pos, h, e)), t.v.get(from + e)) << "v unrotated";
      }
    for (int64_t i = 0; i < c.sq; ++i)
      for (int64_t h = 0; h < c.hq; ++h) {
        const size_t from = static_cast<size_t>(((b * c.sq + i) * c.hq + h) * c.d);
        expect_row(q_rot, [&](int64_t e) { return from + static_cast<size_t>(e); }, c.q, from,
                   c.lengths[b] + (q_steps ? i : 0), "q_rotated");
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CpuKvCacheRotary, ::testing::ValuesIn(kRotary));

// ---- validation ---------------------------------------------------------------------------------

::testing::AssertionResult fails_with(Status got, Status want, const std::string& message) {
  const std::string error = last_error();
  if (got != want) return ::testing::AssertionFailure() << "status " << status_name(got) << ": " << error;
  if (error.find(message) == std::string::npos) {
    return ::testing::AssertionFailure() << "message \"" << error << "\" lacks \"" << message << "\"";
  }
  return ::testing::AssertionSuccess();
}

// A valid paged fp32 cache: 3 rows of capacity 64 in pages of 16 (12 + 3 pages), lengths 0, 17, 40.
KvCache small_paged() { return KvCache(FLASH_SIGMOID_FLOAT32, Layout::kPaged, 16, {0, 17, 40}, 64, 2, 2, 2, 8); }

TEST(CpuKvCacheValidation, ForwardErrorsNameTheArgument) {
  static int32_t cu[4] = {0, 1, 2, 3};
  static int32_t row_map[3] = {0, 1, 2};
  struct Bad {
    const char* message;
    void (*change)(KvCache&, ForwardArgs&);
  };
  const Bad bad[] = {
      {"cpu::forward: problem.page_size: expected a power of two >= 16 with problem.block_table, got 24",
       [](KvCache&, ForwardArgs& a) { a.problem.page_size = 24; }},
      {"problem.page_size: expected a power of two >= 16 with problem.block_table, got 8",
       [](KvCache&, ForwardArgs& a) { a.problem.page_size = 8; }},
      {"problem.page_size: expected 0 without problem.block_table, got 16",
       [](KvCache&, ForwardArgs& a) { a.problem.block_table = nullptr; }},
      {"problem.seqlen_k: expected a multiple of problem.page_size (16) with problem.block_table (each row's "
       "capacity), got 60",
       [](KvCache&, ForwardArgs& a) { a.problem.seqlen_k = 60; }},
      {"problem.block_table_stride_batch: expected >= seqlen_k / page_size (4, the pages of a row), got 3",
       [](KvCache&, ForwardArgs& a) { a.problem.block_table_stride_batch = 3; }},
      {"problem.kv_batch: expected >= 1 with problem.block_table (the number of pages in k and v), got 0",
       [](KvCache&, ForwardArgs& a) { a.problem.kv_batch = 0; }},
      {"problem.kv_batch: expected >= 0 (0: batch), got -1", [](KvCache&, ForwardArgs& a) { a.problem.kv_batch = -1; }},
      {"problem.block_table[6] (batch 1, page 2): expected a page of k and v (0..14), got 15",
       [](KvCache& c, ForwardArgs&) { c.lengths[1] = 40, c.table[6] = 15; }},
      {"problem.block_table[9] (batch 2, page 1): expected a page of k and v (0..14), got -1",
       [](KvCache& c, ForwardArgs&) { c.table[9] = -1; }},
      {"problem.seqused_k[2]: expected at most problem.seqlen_k (64, the cache's capacity), got 65",
       [](KvCache& c, ForwardArgs&) { c.lengths[2] = 65; }},
      {"problem.seqused_k[0]: expected >= 0, got -1", [](KvCache& c, ForwardArgs&) { c.lengths[0] = -1; }},
      {"problem.kv_batch_idx: expected NULL with problem.block_table (a paged cache maps batch entries to pages)",
       [](KvCache&, ForwardArgs& a) { a.problem.kv_batch_idx = row_map; }},
      {"problem.seqused_k: expected NULL with problem.cu_seqlens_q (packed sequences and a KV cache do not combine",
       [](KvCache&, ForwardArgs& a) {
         a.problem.cu_seqlens_q = a.problem.cu_seqlens_k = cu;
         a.problem.block_table = nullptr, a.problem.page_size = 0;
       }},
      {"k.stride_dim: expected 1 (the head dim must be contiguous), got 2",
       [](KvCache&, ForwardArgs& a) { a.k.stride_dim = 2; }},
      {"problem.seqused_k: expected a 4-byte aligned pointer to int32",
       [](KvCache& c, ForwardArgs& a) {
         a.problem.seqused_k = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(c.lengths.data()) + 2);
       }},
  };
  for (const Bad& b : bad) {
    KvCache c = small_paged();
    ForwardArgs a = c.forward_args();  // points at c's lengths and table, changed in place below
    b.change(c, a);
    EXPECT_TRUE(fails_with(cpu::forward(a, 1), Status::kInvalidArgument, b.message));
    for (size_t i = 0; i < c.out.size(); ++i) ASSERT_TRUE(std::isnan(c.out.get(i))) << b.message << ": wrote out";
  }
  // Pages past a row's used keys are never read, so their entries may be anything.
  KvCache c = small_paged();
  c.table[1 * 4 + 3] = -7;  // row 1 (17 keys) uses pages 0 and 1 only
  EXPECT_EQ(cpu::forward(c.forward_args(), 1), Status::kSuccess) << last_error();
  // A row map out of range, and the backward, which has no KV-cache fields.
  KvCache m(FLASH_SIGMOID_FLOAT32, Layout::kRowMap, 0, {3, 4, 5}, 8, 1, 2, 2, 8);
  m.row_map[1] = 5;
  EXPECT_TRUE(fails_with(cpu::forward(m.forward_args(), 1), Status::kInvalidArgument,
                         "problem.kv_batch_idx[1]: expected a row of k and v (0..4), got 5"));
  BackwardArgs g{};
  g.problem = m.problem;
  EXPECT_TRUE(fails_with(cpu::backward(g, 1), Status::kInvalidArgument,
                         "problem.seqused_k: expected NULL for the backward (the KV-cache fields are forward-only)"));
}

TEST(CpuKvCacheValidation, AppendErrorsNameTheArgument) {
  struct Bad {
    const char* message;
    void (*change)(KvAppendArgs&, KvCache&);
  };
  static float table[64 * 4];
  const Bad bad[] = {
      {"cpu::kvcache_append: cache_seqlens[2]: expected a length that with seqlen_new (7) fits problem.seqlen_k (64, "
       "the cache's capacity), got 58",
       [](KvAppendArgs&, KvCache& c) { c.lengths[2] = 58; }},
      {"cache_seqlens[0]: expected >= 0, got -2", [](KvAppendArgs&, KvCache& c) { c.lengths[0] = -2; }},
      {"cache_seqlens: expected a non-null pointer to int32 [batch], got NULL",
       [](KvAppendArgs& a, KvCache&) { a.cache_seqlens = nullptr; }},
      {"problem.seqused_k: expected NULL for the append (cache_seqlens gives the lengths)",
       [](KvAppendArgs& a, KvCache& c) { a.problem.seqused_k = c.lengths.data(); }},
      {"seqlen_new: expected >= 0, got -1", [](KvAppendArgs& a, KvCache&) { a.seqlen_new = -1; }},
      {"problem.block_table[9] (batch 2, page 1): expected a page of k and v (0..14), got 99",
       [](KvAppendArgs&, KvCache& c) { c.table[9] = 99; }},
      {"k_cache.stride_dim: expected 1 (the head dim must be contiguous), got 3",
       [](KvAppendArgs& a, KvCache&) { a.k_cache.stride_dim = 3; }},
      {"v_new.stride_dim: expected 1 (the head dim must be contiguous), got 0",
       [](KvAppendArgs& a, KvCache&) { a.v_new.stride_dim = 0; }},
      {"problem.page_size: expected a power of two >= 16 with problem.block_table, got 48",
       [](KvAppendArgs& a, KvCache&) { a.problem.page_size = 48; }},
      {"rotary_sin: expected a non-null pointer like rotary_cos (both set: rotary; both NULL: none), got NULL",
       [](KvAppendArgs& a, KvCache&) { a.rotary_cos = table; }},
      {"rotary_dim: expected an even number in 2..head_dim (8), got 5",
       [](KvAppendArgs& a, KvCache&) { a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 5; }},
      {"rotary_stride: expected >= rotary_dim / 2 (4, a table row), got 2",
       [](KvAppendArgs& a, KvCache&) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 2, a.rotary_seqlen = 64;
       }},
      {"rotary_seqlen: expected more than 46 rows (the last position of batch 2's q and new k), got 40",
       [](KvAppendArgs& a, KvCache&) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 4, a.rotary_seqlen = 40;
       }},
      {"q_rotated.data: expected a buffer other than q.data (the rotation is not in place)",
       [](KvAppendArgs& a, KvCache& c) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 4, a.rotary_seqlen = 64;
         a.q = a.q_rotated = contiguous_tensor(c.q.data(), c.sq, c.hq, c.d);
       }},
  };
  for (const Bad& b : bad) {
    KvCache c = small_paged();
    NewTokens t(c, 7, 1);
    KvAppendArgs a = append_args(c, t, 7);
    b.change(a, c);
    const Buffer k_before = c.k;
    EXPECT_TRUE(fails_with(cpu::kvcache_append(a, 1), Status::kInvalidArgument, b.message));
    EXPECT_TRUE(same_bytes(c.k, 0, k_before, k_before.size())) << b.message << ": wrote the cache before failing";
  }
  KvCache c = small_paged();
  NewTokens t(c, 7, 1);
  EXPECT_TRUE(fails_with(cpu::kvcache_append(append_args(c, t, 7), -1), Status::kInvalidArgument,
                         "cpu::kvcache_append: num_threads: expected >= 0"));
  EXPECT_TRUE(fails_with(static_cast<Status>(flash_sigmoid_cpu_kvcache_append(nullptr, 1)), Status::kInvalidArgument,
                         "cpu::kvcache_append: args: expected a non-null pointer"));
}

// The GPU path never reads the KV-cache pointers (device memory there; these point nowhere): a
// valid KV-cache problem is Unsupported naming the field, before any device is asked.
TEST(GpuKvCacheValidation, KvCacheFieldsAreUnsupportedNamed) {
  alignas(16) static uint16_t q[64 * 2 * 16], k[64 * 2 * 16], v[64 * 2 * 16], o[64 * 2 * 16];
  ForwardArgs a{};
  a.problem = problem_init(16);
  a.problem.dtype = FLASH_SIGMOID_BFLOAT16;
  a.problem.batch = 2, a.problem.seqlen_q = 1, a.problem.seqlen_k = 64, a.problem.heads_q = 2, a.problem.heads_kv = 2;
  a.q = contiguous_tensor(q, 1, 2, 16);
  a.k = contiguous_tensor(k, 64, 2, 16);
  a.v = contiguous_tensor(v, 64, 2, 16);
  a.out = contiguous_tensor(o, 1, 2, 16);
  const auto* nowhere = reinterpret_cast<const int32_t*>(uintptr_t{0x1000});  // never dereferenced
  const std::string gpu = " is not implemented on the GPU yet (docs/kvcache.md)";
  ForwardArgs used = a;
  used.problem.seqused_k = nowhere;
  EXPECT_TRUE(fails_with(forward(used, {}, nullptr), Status::kUnsupported,
                         "forward: problem.seqused_k: per-batch key counts (a KV cache)" + gpu));
  EXPECT_TRUE(fails_with(can_implement(used), Status::kUnsupported, "can_implement: problem.seqused_k"));
  ForwardArgs mapped = a;
  mapped.problem.kv_batch_idx = nowhere;
  EXPECT_TRUE(fails_with(forward(mapped, {}, nullptr), Status::kUnsupported,
                         "forward: problem.kv_batch_idx: a KV-cache row map" + gpu));
  ForwardArgs paged = a;
  paged.problem.block_table = nowhere;
  paged.problem.block_table_stride_batch = 4, paged.problem.page_size = 16, paged.problem.kv_batch = 2;
  paged.k.stride_batch = paged.v.stride_batch = 16 * 2 * 16;
  EXPECT_TRUE(fails_with(forward(paged, {}, nullptr), Status::kUnsupported,
                         "forward: problem.block_table: a paged KV cache" + gpu));
  // The cheap checks still come first: a bad page size is InvalidArgument, not Unsupported.
  paged.problem.page_size = 12;
  EXPECT_TRUE(fails_with(forward(paged, {}, nullptr), Status::kInvalidArgument, "problem.page_size: expected a power"));
  KvAppendArgs append{};
  append.problem = a.problem;
  append.cache_seqlens = nowhere;
  append.seqlen_new = 1;
  append.k_new = append.v_new = contiguous_tensor(q, 1, 2, 16);
  append.k_cache = a.k, append.v_cache = a.v;
  EXPECT_TRUE(fails_with(kvcache_append(append, nullptr), Status::kUnsupported,
                         "kvcache_append: the KV-cache append is not implemented on the GPU yet (docs/kvcache.md)"));
  EXPECT_TRUE(fails_with(static_cast<Status>(flash_sigmoid_kvcache_append(&append, nullptr)), Status::kUnsupported,
                         "kvcache_append: the KV-cache append"));
}

}  // namespace
}  // namespace flash_sigmoid

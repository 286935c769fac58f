// Tests of the KV-cache fields and the append step (docs/kvcache.md) through the public API on the
// CPU: a KV-cache forward (per-row key counts seqused_k, a row map kv_batch_idx, or a paged cache
// through block_table) equals the dense call on each row's assembled keys (bitwise: the same
// arithmetic on the same values) and the fp64 oracle; the append writes the new tokens exactly
// where flash-attn 2.5.6 puts them and nothing else (page sizes 16/64/256, odd lengths, empty
// caches, rows filled to capacity); rotary in both layouts with both position rules; thread-count
// independence. The validation messages are test_cpu_kvcache_validation.cpp's.
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
#include "kvcache_fixture.hpp"
#include "oracle.hpp"

namespace flash_sigmoid {
namespace {

using namespace kvcache_test;

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
  std::vector<int32_t> counts(static_cast<size_t>(c.batch), -7);  // seqused_k_out: the forward's key counts
  KvAppendArgs args = append_args(c, t, ac.seqlen_new);
  args.seqused_k_out = counts.data();
  ASSERT_EQ(cpu::kvcache_append(args, 1), Status::kSuccess) << last_error();
  EXPECT_TRUE(same_bytes(c.k, 0, want_k, want_k.size())) << "k_cache after the append";
  EXPECT_TRUE(same_bytes(c.v, 0, want_v, want_v.size())) << "v_cache after the append";

  std::vector<int32_t> grown = c.lengths;
  for (int32_t& n : grown) n += static_cast<int32_t>(ac.seqlen_new);
  EXPECT_EQ(counts, grown) << "seqused_k_out";
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

}  // namespace
}  // namespace flash_sigmoid

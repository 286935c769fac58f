// Tests of packed variable-length sequences (docs/varlen.md) through the public API on the CPU:
// a packed call equals dense calls on each sequence's slice (bitwise: the same arithmetic), and
// those equal the fp64 oracle; zero-length sequences (no queries, no keys); the per-sequence and
// "auto" biases; thread-count independence; and every validation error's message, including the
// GPU path's Unsupported (which never reads the offsets).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "oracle.hpp"

namespace flash_sigmoid {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int32_t> offsets(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu{0};
  for (int32_t n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

// A packed fp32 problem: q [total_q, Hq, D], k, v [total_k, Hkv, D], random N(0, 1); outputs and
// gradients poisoned with NaN. Options are set on `problem` before the calls.
struct Packed {
  std::vector<int32_t> lq, lk, cu_q, cu_k;
  int64_t hq, hkv, d;
  std::vector<float> q, k, v, dout, out, dq, dk, dv, slopes, biases;
  Problem problem;

  Packed(std::vector<int32_t> lengths_q, std::vector<int32_t> lengths_k, int64_t heads_q, int64_t heads_kv,
         int64_t head_dim, uint64_t seed = 1)
      : lq(std::move(lengths_q)), lk(std::move(lengths_k)), cu_q(offsets(lq)), cu_k(offsets(lk)), hq(heads_q),
        hkv(heads_kv), d(head_dim), problem(problem_init(head_dim)) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal;
    auto fill = [&](std::vector<float>& t, int64_t rows, int64_t heads) {
      t.resize(static_cast<size_t>(rows * heads * d));
      for (float& x : t) x = normal(rng);
    };
    fill(q, total_q(), hq);
    fill(k, total_k(), hkv);
    fill(v, total_k(), hkv);
    fill(dout, total_q(), hq);
    std::uniform_real_distribution<float> slope(0.05f, 1.0f), bias(-4.0f, 1.0f);
    for (int64_t e = 0; e < batch() * hq; ++e) slopes.push_back(slope(rng));
    for (int64_t b = 0; b < batch(); ++b) biases.push_back(bias(rng));
    problem.dtype = FLASH_SIGMOID_FLOAT32;
    problem.batch = batch();
    problem.seqlen_q = total_q();
    problem.seqlen_k = total_k();
    problem.heads_q = hq;
    problem.heads_kv = hkv;
    problem.cu_seqlens_q = cu_q.data();
    problem.cu_seqlens_k = cu_k.data();
    for (int32_t n : lq) problem.max_seqlen_q = std::max<int64_t>(problem.max_seqlen_q, n);
    for (int32_t n : lk) problem.max_seqlen_k = std::max<int64_t>(problem.max_seqlen_k, n);
    poison();
  }
  int64_t batch() const { return static_cast<int64_t>(lq.size()); }
  int64_t total_q() const { return cu_q.back(); }
  int64_t total_k() const { return cu_k.back(); }
  void poison() {
    out.assign(q.size(), kNaN);
    dq.assign(q.size(), kNaN);
    dk.assign(k.size(), kNaN);
    dv.assign(v.size(), kNaN);
  }
  ForwardArgs forward_args() {
    ForwardArgs a{};
    a.problem = problem;
    a.q = contiguous_tensor(q.data(), total_q(), hq, d);
    a.k = contiguous_tensor(k.data(), total_k(), hkv, d);
    a.v = contiguous_tensor(v.data(), total_k(), hkv, d);
    a.out = contiguous_tensor(out.data(), total_q(), hq, d);
    return a;
  }
  BackwardArgs backward_args() {
    BackwardArgs a{};
    a.problem = problem;
    a.q = contiguous_tensor(q.data(), total_q(), hq, d);
    a.k = contiguous_tensor(k.data(), total_k(), hkv, d);
    a.v = contiguous_tensor(v.data(), total_k(), hkv, d);
    a.dout = contiguous_tensor(dout.data(), total_q(), hq, d);
    a.dq = contiguous_tensor(dq.data(), total_q(), hq, d);
    a.dk = contiguous_tensor(dk.data(), total_k(), hkv, d);
    a.dv = contiguous_tensor(dv.data(), total_k(), hkv, d);
    return a;
  }
  // The dense batch-1 problem of sequence b, written here (not by the code under test): its own
  // lengths, its row of [B, Hq] slopes, and the bias it should get.
  Problem slice_problem(int64_t b, float bias) const {
    Problem s = problem;
    s.batch = 1;
    s.seqlen_q = lq[b];
    s.seqlen_k = lk[b];
    s.cu_seqlens_q = s.cu_seqlens_k = nullptr;
    s.max_seqlen_q = s.max_seqlen_k = 0;
    s.sigmoid_bias_per_batch = nullptr;
    s.sigmoid_bias_auto = 0;
    s.sigmoid_bias = bias;
    if (problem.alibi_slopes != nullptr) {
      s.alibi_slopes = problem.alibi_slopes + b * problem.alibi_stride_batch;
      s.alibi_stride_batch = 0;
    }
    return s;
  }
  size_t row_q(int64_t b) const { return static_cast<size_t>(cu_q[b] * hq * d); }
  size_t row_k(int64_t b) const { return static_cast<size_t>(cu_k[b] * hkv * d); }
};

float auto_bias(int32_t seqlen_k) { return seqlen_k > 0 ? static_cast<float>(-std::log(static_cast<double>(seqlen_k))) : 0.0f; }

bool same_bits(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

// The lengths of most tests: empty q, empty k, 1 row, and sequences over several CPU tiles
// (kBlockM 96, kFwdBlockN 72, kBlockN 48), with Sq != Sk.
Packed mixed(uint64_t seed = 1) { return Packed({5, 0, 130, 1, 17, 40}, {9, 3, 200, 0, 17, 13}, 4, 2, 24, seed); }

// The bias sequence b should get under each of the three modes.
enum class BiasMode { kScalar, kPerBatch, kAuto };
float expected_bias(const Packed& t, BiasMode mode, int64_t b) {
  switch (mode) {
    case BiasMode::kScalar: return t.problem.sigmoid_bias;
    case BiasMode::kPerBatch: return t.biases[b];
    case BiasMode::kAuto: return auto_bias(t.lk[b]);
  }
  return 0.0f;
}
void set_bias(Packed& t, BiasMode mode) {
  t.problem.sigmoid_bias = mode == BiasMode::kScalar ? -1.25f : 0.0f;
  t.problem.sigmoid_bias_per_batch = mode == BiasMode::kPerBatch ? t.biases.data() : nullptr;
  t.problem.sigmoid_bias_auto = mode == BiasMode::kAuto;
}

enum class Slopes { kNone, kPerHead, kPerBatchHead };  // ALiBi slopes [Hq] or [B, Hq]
struct Case {
  const char* name;
  int causal;
  int64_t left, right;
  Slopes slopes;
  BiasMode bias;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }
const Case kCases[] = {
    {"plain_scalar_bias", 0, -1, -1, Slopes::kNone, BiasMode::kScalar},
    {"causal_alibi_batch_per_batch_bias", 1, -1, -1, Slopes::kPerBatchHead, BiasMode::kPerBatch},
    {"causal_left7_auto_bias", 1, 7, -1, Slopes::kNone, BiasMode::kAuto},
    {"window_4_2_alibi_heads_auto_bias", 0, 4, 2, Slopes::kPerHead, BiasMode::kAuto},
};

void configure(Packed& t, const Case& c) {
  t.problem.causal = c.causal;
  t.problem.window_left = c.left;
  t.problem.window_right = c.right;
  t.problem.alibi_slopes = c.slopes == Slopes::kNone ? nullptr : t.slopes.data();
  t.problem.alibi_stride_batch = c.slopes == Slopes::kPerBatchHead ? t.hq : 0;
  set_bias(t, c.bias);
}

class CpuVarlen : public ::testing::TestWithParam<Case> {};

TEST_P(CpuVarlen, ForwardEqualsDenseCallsOnSlicesAndTheOracle) {
  Packed t = mixed();
  configure(t, GetParam());
  ASSERT_EQ(cpu::forward(t.forward_args(), 2), Status::kSuccess) << last_error();
  for (int64_t b = 0; b < t.batch(); ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b));
    const size_t n = static_cast<size_t>(t.lq[b] * t.hq * t.d);
    std::vector<float> want(n, kNaN);
    ForwardArgs a{};
    a.problem = t.slice_problem(b, expected_bias(t, GetParam().bias, b));
    a.q = contiguous_tensor(t.q.data() + t.row_q(b), t.lq[b], t.hq, t.d);
    a.k = contiguous_tensor(t.k.data() + t.row_k(b), t.lk[b], t.hkv, t.d);
    a.v = contiguous_tensor(t.v.data() + t.row_k(b), t.lk[b], t.hkv, t.d);
    a.out = contiguous_tensor(want.data(), t.lq[b], t.hq, t.d);
    ASSERT_EQ(cpu::forward(a, 1), Status::kSuccess) << last_error();
    EXPECT_TRUE(same_bits(t.out.data() + t.row_q(b), want.data(), n)) << "packed != dense call on the slice";
    const std::vector<double> ref = oracle::forward(a);
    for (size_t e = 0; e < n; ++e) {
      ASSERT_NEAR(t.out[t.row_q(b) + e], ref[e], 1e-5 * std::max(1.0, std::abs(ref[e]))) << "element " << e;
      if (t.lk[b] == 0) {
        ASSERT_EQ(t.out[t.row_q(b) + e], 0.0f) << "a sequence without keys gives O = 0";
      }
    }
  }
}

TEST_P(CpuVarlen, BackwardEqualsDenseCallsOnSlicesAndTheOracle) {
  Packed t = mixed(2);
  configure(t, GetParam());
  ASSERT_EQ(cpu::backward(t.backward_args(), 2), Status::kSuccess) << last_error();
  for (int64_t b = 0; b < t.batch(); ++b) {
    SCOPED_TRACE("sequence " + std::to_string(b));
    const size_t nq = static_cast<size_t>(t.lq[b] * t.hq * t.d), nk = static_cast<size_t>(t.lk[b] * t.hkv * t.d);
    std::vector<float> dq(nq, kNaN), dk(nk, kNaN), dv(nk, kNaN);
    BackwardArgs a{};
    a.problem = t.slice_problem(b, expected_bias(t, GetParam().bias, b));
    a.q = contiguous_tensor(t.q.data() + t.row_q(b), t.lq[b], t.hq, t.d);
    a.k = contiguous_tensor(t.k.data() + t.row_k(b), t.lk[b], t.hkv, t.d);
    a.v = contiguous_tensor(t.v.data() + t.row_k(b), t.lk[b], t.hkv, t.d);
    a.dout = contiguous_tensor(t.dout.data() + t.row_q(b), t.lq[b], t.hq, t.d);
    a.dq = contiguous_tensor(dq.data(), t.lq[b], t.hq, t.d);
    a.dk = contiguous_tensor(dk.data(), t.lk[b], t.hkv, t.d);
    a.dv = contiguous_tensor(dv.data(), t.lk[b], t.hkv, t.d);
    ASSERT_EQ(cpu::backward(a, 1), Status::kSuccess) << last_error();
    EXPECT_TRUE(same_bits(t.dq.data() + t.row_q(b), dq.data(), nq)) << "dq: packed != dense call on the slice";
    EXPECT_TRUE(same_bits(t.dk.data() + t.row_k(b), dk.data(), nk)) << "dk: packed != dense call on the slice";
    EXPECT_TRUE(same_bits(t.dv.data() + t.row_k(b), dv.data(), nk)) << "dv: packed != dense call on the slice";
    const oracle::Gradients ref = oracle::backward(a);
    auto near = [](const float* got, const std::vector<double>& want, const char* name) {
      for (size_t e = 0; e < want.size(); ++e) {
        if (!(std::abs(got[e] - want[e]) <= 3e-5 * std::max(1.0, std::abs(want[e])))) {
          return ::testing::AssertionFailure() << name << "[" << e << "] = " << got[e] << ", oracle " << want[e];
        }
      }
      return ::testing::AssertionSuccess();
    };
    EXPECT_TRUE(near(t.dq.data() + t.row_q(b), ref.dq, "dq"));
    EXPECT_TRUE(near(t.dk.data() + t.row_k(b), ref.dk, "dk"));
    EXPECT_TRUE(near(t.dv.data() + t.row_k(b), ref.dv, "dv"));
    // No queries: no gradient reaches the keys; no keys: none reaches the queries.
    for (size_t e = 0; t.lq[b] == 0 && e < nk; ++e) ASSERT_TRUE(t.dk[t.row_k(b) + e] == 0 && t.dv[t.row_k(b) + e] == 0);
    for (size_t e = 0; t.lk[b] == 0 && e < nq; ++e) ASSERT_EQ(t.dq[t.row_q(b) + e], 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuVarlen, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(CpuVarlenDeterminism, ResultsDoNotDependOnTheThreadCount) {
  Packed t = mixed(3);
  configure(t, kCases[1]);
  ASSERT_EQ(cpu::forward(t.forward_args(), 1), Status::kSuccess) << last_error();
  ASSERT_EQ(cpu::backward(t.backward_args(), 1), Status::kSuccess) << last_error();
  const std::vector<float> out = t.out, dq = t.dq, dk = t.dk, dv = t.dv;
  t.poison();
  ASSERT_EQ(cpu::forward(t.forward_args(), 3), Status::kSuccess) << last_error();
  ASSERT_EQ(cpu::backward(t.backward_args(), 3), Status::kSuccess) << last_error();
  EXPECT_TRUE(same_bits(out.data(), t.out.data(), out.size()));
  EXPECT_TRUE(same_bits(dq.data(), t.dq.data(), dq.size()));
  EXPECT_TRUE(same_bits(dk.data(), t.dk.data(), dk.size()));
  EXPECT_TRUE(same_bits(dv.data(), t.dv.data(), dv.size()));
}

TEST(CpuVarlenEdges, OnlyEmptySequencesWriteZerosOrNothing) {
  // Two sequences with keys but no queries: dk, dv are 0; no output rows exist.
  Packed t({0, 0}, {3, 5}, 2, 2, 8);
  ASSERT_EQ(cpu::forward(t.forward_args(), 0), Status::kSuccess) << last_error();
  ASSERT_EQ(cpu::backward(t.backward_args(), 0), Status::kSuccess) << last_error();
  for (float x : t.dk) ASSERT_EQ(x, 0.0f);
  for (float x : t.dv) ASSERT_EQ(x, 0.0f);
  // Queries but no keys anywhere: O = 0 and dq = 0.
  Packed u({4, 2}, {0, 0}, 2, 1, 8);
  ASSERT_EQ(cpu::forward(u.forward_args(), 0), Status::kSuccess) << last_error();
  ASSERT_EQ(cpu::backward(u.backward_args(), 0), Status::kSuccess) << last_error();
  for (float x : u.out) ASSERT_EQ(x, 0.0f);
  for (float x : u.dq) ASSERT_EQ(x, 0.0f);
}

TEST(CpuDenseBias, PerBatchAndAutoEqualScalarCallsPerBatchEntry) {
  // Dense [B, S, H, D] with the per-sequence bias fields: batch entry b gets biases[b] or -log(Sk).
  const int64_t batch = 3, sq = 20, sk = 33, h = 2, d = 16;
  Packed t({sq, sq, sq}, {sk, sk, sk}, h, h, d);
  for (BiasMode mode : {BiasMode::kPerBatch, BiasMode::kAuto}) {
    Problem p = t.problem;
    p.cu_seqlens_q = p.cu_seqlens_k = nullptr;
    p.batch = batch, p.seqlen_q = sq, p.seqlen_k = sk;
    p.sigmoid_bias = 0.0f;
    p.sigmoid_bias_per_batch = mode == BiasMode::kPerBatch ? t.biases.data() : nullptr;
    p.sigmoid_bias_auto = mode == BiasMode::kAuto;
    std::vector<float> out(t.q.size(), kNaN), want(t.q.size(), kNaN);
    ForwardArgs a{};
    a.problem = p;
    a.q = contiguous_tensor(t.q.data(), sq, h, d);
    a.k = contiguous_tensor(t.k.data(), sk, h, d);
    a.v = contiguous_tensor(t.v.data(), sk, h, d);
    a.out = contiguous_tensor(out.data(), sq, h, d);
    ASSERT_EQ(cpu::forward(a, 2), Status::kSuccess) << last_error();
    for (int64_t b = 0; b < batch; ++b) {
      ForwardArgs s = a;
      s.problem.batch = 1;
      s.problem.sigmoid_bias_per_batch = nullptr;
      s.problem.sigmoid_bias_auto = 0;
      s.problem.sigmoid_bias = mode == BiasMode::kPerBatch ? t.biases[b] : auto_bias(sk);
      const size_t row = static_cast<size_t>(b * sq * h * d), rows_k = static_cast<size_t>(b * sk * h * d);
      s.q.data = t.q.data() + row;
      s.k.data = t.k.data() + rows_k;
      s.v.data = t.v.data() + rows_k;
      s.out.data = want.data() + row;
      ASSERT_EQ(cpu::forward(s, 1), Status::kSuccess) << last_error();
    }
    EXPECT_TRUE(same_bits(out.data(), want.data(), out.size())) << (mode == BiasMode::kAuto ? "auto" : "per batch");
  }
}

// ---- validation ---------------------------------------------------------------------------------

::testing::AssertionResult fails_with(Status got, Status want, const std::string& message) {
  const std::string error = last_error();
  if (got != want) return ::testing::AssertionFailure() << "status " << status_name(got) << ": " << error;
  if (error.find(message) == std::string::npos) {
    return ::testing::AssertionFailure() << "message \"" << error << "\" lacks \"" << message << "\"";
  }
  return ::testing::AssertionSuccess();
}

TEST(CpuVarlenValidation, EachErrorNamesTheArgument) {
  struct Bad {
    const char* message;
    void (*change)(Packed&);
  };
  const Bad bad[] = {
      {"cpu::forward: problem.cu_seqlens_k: expected a non-null pointer like problem.cu_seqlens_q (both set: packed "
       "sequences; both NULL: dense), got NULL",
       [](Packed& t) { t.problem.cu_seqlens_k = nullptr; }},
      {"problem.cu_seqlens_q: expected a non-null pointer like problem.cu_seqlens_k",
       [](Packed& t) { t.problem.cu_seqlens_q = nullptr; }},
      {"problem.max_seqlen_q: expected >= 0, got -1", [](Packed& t) { t.problem.max_seqlen_q = -1; }},
      {"problem.cu_seqlens_q: expected the first entry to be 0, got 1", [](Packed& t) { t.cu_q[0] = 1; }},
      {"problem.cu_seqlens_k: expected non-decreasing entries, got 9 then 7 at index 1",
       [](Packed& t) { t.cu_k[2] = 7; }},
      {"problem.cu_seqlens_q: expected the last entry to equal problem.seqlen_q (23, the total rows), got 22",
       [](Packed& t) { t.cu_q.back() = 22; }},
      {"problem.cu_seqlens_k: expected the last entry to equal problem.seqlen_k (29, the total rows), got 30",
       [](Packed& t) { t.problem.seqlen_k = 29; }},
      {"problem.max_seqlen_q: expected at least the longest sequence of cu_seqlens_q (17), got 16",
       [](Packed& t) { t.problem.max_seqlen_q = 16; }},
      {"problem.max_seqlen_k: expected at least the longest sequence of cu_seqlens_k (17), got 9",
       [](Packed& t) { t.problem.max_seqlen_k = 9; }},
      {"problem.sigmoid_bias_per_batch: expected NULL with problem.sigmoid_bias_auto",
       [](Packed& t) { t.problem.sigmoid_bias_per_batch = t.biases.data(), t.problem.sigmoid_bias_auto = 1; }},
      {"problem.sigmoid_bias: expected 0 with problem.sigmoid_bias_auto (which replaces it), got 0.5",
       [](Packed& t) { t.problem.sigmoid_bias_auto = 1, t.problem.sigmoid_bias = 0.5f; }},
      {"problem.sigmoid_bias: expected 0 with problem.sigmoid_bias_per_batch (which replaces it), got -1",
       [](Packed& t) { t.problem.sigmoid_bias_per_batch = t.biases.data(), t.problem.sigmoid_bias = -1.0f; }},
      {"problem.sigmoid_bias_per_batch[1]: expected a finite number, got inf",
       [](Packed& t) {
         t.biases[1] = std::numeric_limits<float>::infinity();
         t.problem.sigmoid_bias_per_batch = t.biases.data();
       }},
  };
  for (const Bad& b : bad) {
    Packed t({5, 0, 17, 1}, {9, 3, 17, 1}, 2, 2, 8);
    b.change(t);
    EXPECT_TRUE(fails_with(cpu::forward(t.forward_args(), 1), Status::kInvalidArgument, b.message));
    for (float x : t.out) ASSERT_TRUE(std::isnan(x)) << b.message << ": wrote out before failing";
    const std::string backward_message = std::string(b.message).find("cpu::forward") == 0
                                             ? "cpu::backward" + std::string(b.message).substr(12)
                                             : b.message;
    EXPECT_TRUE(fails_with(cpu::backward(t.backward_args(), 1), Status::kInvalidArgument, backward_message));
  }
}

// The GPU path never reads cu_seqlens on the host (they are device pointers there; these point
// nowhere): a valid packed problem passes validation (the kernels read the offsets), its backward
// workspace is sized for the packed rows, and the cheap checks name the field.
TEST(GpuVarlenValidation, PackedSequencesPassValidationWithoutReadingTheOffsets) {
  alignas(16) static uint16_t q[64 * 2 * 16], k[64 * 2 * 16], v[64 * 2 * 16], o[64 * 2 * 16];
  ForwardArgs a{};
  a.problem = problem_init(16);
  a.problem.dtype = FLASH_SIGMOID_BFLOAT16;
  a.problem.batch = 3, a.problem.seqlen_q = 64, a.problem.seqlen_k = 64, a.problem.heads_q = 2, a.problem.heads_kv = 2;
  a.problem.cu_seqlens_q = reinterpret_cast<const int32_t*>(uintptr_t{0x1000});  // never dereferenced
  a.problem.cu_seqlens_k = reinterpret_cast<const int32_t*>(uintptr_t{0x2000});
  a.problem.max_seqlen_q = a.problem.max_seqlen_k = 40;
  a.problem.sigmoid_bias_auto = 1;
  a.q = contiguous_tensor(q, 64, 2, 16);
  a.k = contiguous_tensor(k, 64, 2, 16);
  a.v = contiguous_tensor(v, 64, 2, 16);
  a.out = contiguous_tensor(o, 64, 2, 16);
  size_t bytes = 1;
  EXPECT_EQ(workspace_size(a, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, 0u);
  BackwardArgs g{};
  g.problem = a.problem;
  g.q = g.dq = g.dout = a.q;
  g.k = g.dk = a.k;
  g.v = g.dv = a.v;
  // One run of round_up(64 + 128 * 3, 128) = 512 rows per head, pitch 32 floats (dq_accum_layout.hpp).
  EXPECT_EQ(workspace_size(g, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, size_t{2} * 512 * 32 * 4);
  // The cheap checks: a bad max length is InvalidArgument, named.
  a.problem.max_seqlen_k = -3;
  EXPECT_TRUE(fails_with(can_implement(a), Status::kInvalidArgument, "problem.max_seqlen_k: expected >= 0, got -3"));
  a.problem.max_seqlen_k = int64_t{1} << 30;
  EXPECT_TRUE(fails_with(can_implement(a), Status::kInvalidArgument,
                         "problem.max_seqlen_k: expected < 2^30 for the GPU kernels"));
  // Rows present but a longest sequence of 0 rows: the grid would be empty.
  a.problem.max_seqlen_k = 0;
  EXPECT_TRUE(fails_with(forward(a, {}, nullptr), Status::kInvalidArgument,
                         "problem.max_seqlen_k: expected >= 1 when k has rows"));
  g.problem.max_seqlen_q = 0;
  EXPECT_TRUE(fails_with(backward(g, {}, nullptr), Status::kInvalidArgument, "problem.max_seqlen_q"));
}

}  // namespace
}  // namespace flash_sigmoid

// Tests of attention dropout in the CPU implementation (docs/dropout.md): forward and backward
// against the fp64 oracle with the mask of the policy's per-entry reference (dropout_keeps) over
// the feature grid at odd sizes (masks, GQA, ALiBi, biases, strides; fp32, fp16, bf16); packed
// sequences and per-sequence biases, each sequence dropped as its own batch index; the same seed
// giving bitwise the same results, another offset or seed another mask; thread-count
// independence; and cpu::dropout_mask (the op behind return_attn_probs) against dropout_keeps,
// with its argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "oracle.hpp"
#include "policies/dropout.hpp"
#include "scenarios.hpp"

namespace flash_sigmoid {
namespace {

using oracle::Alibi;
using oracle::Bias;
using oracle::HostTensor;
using oracle::Inputs;
using oracle::Spec;
using oracle::make;

// {seed, offset} as the API reads them (host memory for the CPU path).
struct SeedPair {
  alignas(8) uint64_t words[2];
};
constexpr SeedPair kSeed{{0x0123456789abcdefull, 7}};

// Each grid case with dropout p (0.25 and 0.1 alternate: thresholds 64 and 26, rescales 4/3 and
// 256/230). The (65, 129) and many-blocks cases keep their smaller backward sizes.
std::vector<Spec> grid() { return oracle::grid({96, 80, 1, 5000}); }
float p_of(const Spec& s) { return s.seed % 2 ? 0.25f : 0.1f; }

void set_dropout(Inputs& in, float p, const SeedPair& seed) {
  in.problem.dropout_p = p;
  in.problem.dropout_seed = seed.words;
}

class CpuDropoutGrid : public ::testing::TestWithParam<Spec> {};

TEST_P(CpuDropoutGrid, ForwardMatchesOracleWithThePolicyMask) {
  Inputs in(GetParam());
  set_dropout(in, p_of(GetParam()), kSeed);
  HostTensor out = in.new_out();
  const FlashSigmoidForwardArgs args = in.forward_args(out);
  ASSERT_EQ(cpu::forward(args, static_cast<int>(GetParam().seed % 3)), Status::kSuccess) << last_error();
  EXPECT_TRUE(oracle::matches(out, oracle::forward(args), 2.0, "out"));
  EXPECT_TRUE(out.untouched_outside_view()) << "wrote outside out's view";
}

TEST_P(CpuDropoutGrid, BackwardMatchesOracleWithThePolicyMask) {
  Inputs in(GetParam());
  set_dropout(in, p_of(GetParam()), kSeed);
  HostTensor dq = in.new_dq(), dk = in.new_dkv(), dv = in.new_dkv();
  const FlashSigmoidBackwardArgs args = in.backward_args(dq, dk, dv);
  ASSERT_EQ(cpu::backward(args, static_cast<int>(GetParam().seed % 3)), Status::kSuccess) << last_error();
  const oracle::Gradients ref = oracle::backward(args);
  EXPECT_TRUE(oracle::matches(dq, ref.dq, 3.0, "dq"));
  EXPECT_TRUE(oracle::matches(dk, ref.dk, 3.0, "dk"));
  EXPECT_TRUE(oracle::matches(dv, ref.dv, 3.0, "dv"));
  EXPECT_TRUE(dq.untouched_outside_view() && dk.untouched_outside_view() && dv.untouched_outside_view());
}

INSTANTIATE_TEST_SUITE_P(Grid, CpuDropoutGrid, ::testing::ValuesIn(grid()),
                         [](const ::testing::TestParamInfo<Spec>& param_info) { return param_info.param.label(); });

// The oracle without dropout is far from the dropped result (so the grid above cannot pass with
// the mask ignored), and p below half a step (1/512) is no dropout at all: bitwise the plain call.
TEST(CpuDropout, DropoutChangesTheResultAndTinyPIsNone) {
  Spec s = make(37, 53, 24, [](Spec& x) {
    x.heads_q = 2;
    x.causal = true;
  });
  Inputs in(s);
  HostTensor plain = in.new_out(), tiny = in.new_out(), dropped = in.new_out();
  ASSERT_EQ(cpu::forward(in.forward_args(plain), 1), Status::kSuccess);
  set_dropout(in, 1.0f / 1024, kSeed);
  ASSERT_EQ(cpu::forward(in.forward_args(tiny), 1), Status::kSuccess);
  EXPECT_EQ(plain.dense(), tiny.dense());
  set_dropout(in, 0.5f, kSeed);
  const FlashSigmoidForwardArgs args = in.forward_args(dropped);
  ASSERT_EQ(cpu::forward(args, 1), Status::kSuccess);
  EXPECT_TRUE(oracle::matches(dropped, oracle::forward(args), 2.0, "out"));
  in.problem.dropout_p = 0.0f;
  EXPECT_FALSE(oracle::matches(dropped, oracle::forward(in.forward_args(dropped)), 2.0, "out"));
}

// ---- determinism ------------------------------------------------------------------------------

struct Results {
  std::vector<double> out, dq, dk, dv;
};

Results run(Inputs& in, const SeedPair& seed, float p, int threads) {
  set_dropout(in, p, seed);
  HostTensor out = in.new_out(), dq = in.new_dq(), dk = in.new_dkv(), dv = in.new_dkv();
  EXPECT_EQ(cpu::forward(in.forward_args(out), threads), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(in.backward_args(dq, dk, dv), threads), Status::kSuccess) << last_error();
  return Results{out.dense(), dq.dense(), dk.dense(), dv.dense()};
}

// Several query blocks, key tiles and slabs per head, GQA, a window: many tasks.
Spec determinism_spec() {
  return make(230, 301, 40, [](Spec& s) {
    s.dtype = FLASH_SIGMOID_BFLOAT16;
    s.batch = 2;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.window_left = 120;
    s.alibi = Alibi::kPerHead;
    s.bias = Bias::kNegLogSk;
    s.seed = 77;
  });
}

TEST(CpuDropout, SameSeedIsBitwiseSameForAnyThreadCount) {
  Inputs in(determinism_spec());
  const Results one = run(in, kSeed, 0.3f, 1);
  for (int threads : {1, 2, 3, 7, 0}) {
    const Results r = run(in, kSeed, 0.3f, threads);
    EXPECT_EQ(r.out, one.out) << threads << " threads";
    EXPECT_EQ(r.dq, one.dq) << threads << " threads";
    EXPECT_EQ(r.dk, one.dk) << threads << " threads";
    EXPECT_EQ(r.dv, one.dv) << threads << " threads";
  }
}

// Another offset (the generator's next call) or another seed drops other entries: the outputs
// differ in most rows.
TEST(CpuDropout, AnotherOffsetOrSeedIsAnotherMask) {
  Inputs in(determinism_spec());
  const Results base = run(in, kSeed, 0.3f, 2);
  for (const SeedPair& other : {SeedPair{{kSeed.words[0], kSeed.words[1] + 1}},
                                SeedPair{{kSeed.words[0], kSeed.words[1] + (uint64_t{1} << 40)}},
                                SeedPair{{kSeed.words[0] + 1, kSeed.words[1]}}}) {
    const Results r = run(in, other, 0.3f, 2);
    size_t differ = 0;
    for (size_t e = 0; e < r.out.size(); ++e) differ += r.out[e] != base.out[e];
    EXPECT_GT(differ, r.out.size() * 9 / 10) << "seed " << other.words[0] << ", offset " << other.words[1];
    EXPECT_NE(r.dq, base.dq);
    EXPECT_NE(r.dk, base.dk);
    EXPECT_NE(r.dv, base.dv);
  }
}

// ---- packed sequences and per-sequence biases -------------------------------------------------

std::vector<int32_t> offsets(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu{0};
  for (int32_t n : lengths) cu.push_back(cu.back() + n);
  return cu;
}

// A packed fp32 problem; sequence b is checked against the oracle on its own slice as a batch-1
// problem whose batch entry 0 is the call's entry b (first_batch = b): the mask of a packed
// sequence is that of batch entry b of a dense call with its lengths (docs/dropout.md).
struct PackedDropout {
  std::vector<int32_t> lq, lk, cu_q, cu_k;
  int64_t hq = 4, hkv = 2, d = 24;
  std::vector<float> q, k, v, dout, out, dq, dk, dv, slopes;
  Problem problem;

  PackedDropout(std::vector<int32_t> lengths_q, std::vector<int32_t> lengths_k)
      : lq(std::move(lengths_q)), lk(std::move(lengths_k)), cu_q(offsets(lq)), cu_k(offsets(lk)),
        problem(problem_init(24)) {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal;
    auto fill = [&](std::vector<float>& t, int64_t rows, int64_t heads) {
      t.resize(static_cast<size_t>(rows * heads * d));
      for (float& x : t) x = normal(rng);
    };
    fill(q, cu_q.back(), hq);
    fill(k, cu_k.back(), hkv);
    fill(v, cu_k.back(), hkv);
    fill(dout, cu_q.back(), hq);
    std::uniform_real_distribution<float> slope(0.05f, 1.0f);
    for (size_t e = 0; e < lq.size() * hq; ++e) slopes.push_back(slope(rng));
    out.assign(q.size(), NAN);
    dq.assign(q.size(), NAN);
    dk.assign(k.size(), NAN);
    dv.assign(v.size(), NAN);
    problem.dtype = FLASH_SIGMOID_FLOAT32;
    problem.batch = static_cast<int64_t>(lq.size());
    problem.seqlen_q = cu_q.back();
    problem.seqlen_k = cu_k.back();
    problem.heads_q = hq;
    problem.heads_kv = hkv;
    problem.cu_seqlens_q = cu_q.data();
    problem.cu_seqlens_k = cu_k.data();
    for (int32_t n : lq) problem.max_seqlen_q = std::max<int64_t>(problem.max_seqlen_q, n);
    for (int32_t n : lk) problem.max_seqlen_k = std::max<int64_t>(problem.max_seqlen_k, n);
    problem.causal = 1;
    problem.window_left = 50;
    problem.alibi_slopes = slopes.data();
    problem.alibi_stride_batch = hq;
    problem.sigmoid_bias_auto = 1;
    problem.dropout_p = 0.2f;
    problem.dropout_seed = kSeed.words;
  }
  Tensor packed(std::vector<float>& t, int64_t rows, int64_t heads) { return contiguous_tensor(t.data(), rows, heads, d); }
  Tensor slice(std::vector<float>& t, int64_t row, int64_t rows, int64_t heads) {
    return contiguous_tensor(t.data() + row * heads * d, rows, heads, d);
  }
  // Sequence b as a dense batch-1 problem.
  Problem sequence_problem(int64_t b) const {
    Problem s = problem;
    s.batch = 1;
    s.seqlen_q = lq[b];
    s.seqlen_k = lk[b];
    s.cu_seqlens_q = s.cu_seqlens_k = nullptr;
    s.max_seqlen_q = s.max_seqlen_k = 0;
    s.sigmoid_bias_auto = 0;
    s.sigmoid_bias = lk[b] > 0 ? static_cast<float>(-std::log(static_cast<double>(lk[b]))) : 0.0f;
    s.alibi_slopes = slopes.data() + b * hq;
    s.alibi_stride_batch = 0;
    return s;
  }
};

// |got - ref| <= 1e-5 * (rms(ref) + |ref|) per element, over one sequence's rows: fp32 against fp64.
::testing::AssertionResult close(const float* got, const std::vector<double>& ref, const char* what, int64_t b) {
  double ref2 = 0;
  for (double r : ref) ref2 += r * r;
  const double rms = ref.empty() ? 0 : std::sqrt(ref2 / ref.size());
  for (size_t e = 0; e < ref.size(); ++e) {
    if (!(std::fabs(got[e] - ref[e]) <= 1e-5 * (rms + std::fabs(ref[e])) + 1e-30)) {
      return ::testing::AssertionFailure() << what << " of sequence " << b << "[" << e << "] = " << got[e]
                                           << ", expected " << ref[e];
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(CpuDropout, PackedSequencesAreDroppedAsTheirOwnBatchIndex) {
  // Empty q, empty k, one row, and sequences over several CPU tiles and dropout blocks.
  PackedDropout t({5, 0, 130, 1, 17, 40}, {9, 3, 200, 0, 17, 13});
  ForwardArgs f{};
  f.problem = t.problem;
  f.q = t.packed(t.q, t.cu_q.back(), t.hq);
  f.k = t.packed(t.k, t.cu_k.back(), t.hkv);
  f.v = t.packed(t.v, t.cu_k.back(), t.hkv);
  f.out = t.packed(t.out, t.cu_q.back(), t.hq);
  ASSERT_EQ(cpu::forward(f, 2), Status::kSuccess) << last_error();
  BackwardArgs g{};
  g.problem = t.problem;
  g.q = f.q;
  g.k = f.k;
  g.v = f.v;
  g.dout = t.packed(t.dout, t.cu_q.back(), t.hq);
  g.dq = t.packed(t.dq, t.cu_q.back(), t.hq);
  g.dk = t.packed(t.dk, t.cu_k.back(), t.hkv);
  g.dv = t.packed(t.dv, t.cu_k.back(), t.hkv);
  ASSERT_EQ(cpu::backward(g, 3), Status::kSuccess) << last_error();
  for (int64_t b = 0; b < static_cast<int64_t>(t.lq.size()); ++b) {
    const int64_t rq = t.cu_q[b], rk = t.cu_k[b], nq = t.lq[b], nk = t.lk[b];
    ForwardArgs sf{};
    sf.problem = t.sequence_problem(b);
    sf.q = t.slice(t.q, rq, nq, t.hq);
    sf.k = t.slice(t.k, rk, nk, t.hkv);
    sf.v = t.slice(t.v, rk, nk, t.hkv);
    EXPECT_TRUE(close(t.out.data() + rq * t.hq * t.d, oracle::forward(sf, b), "out", b));
    BackwardArgs sb{};
    sb.problem = sf.problem;
    sb.q = sf.q;
    sb.k = sf.k;
    sb.v = sf.v;
    sb.dout = t.slice(t.dout, rq, nq, t.hq);
    const oracle::Gradients ref = oracle::backward(sb, b);
    EXPECT_TRUE(close(t.dq.data() + rq * t.hq * t.d, ref.dq, "dq", b));
    EXPECT_TRUE(close(t.dk.data() + rk * t.hkv * t.d, ref.dk, "dk", b));
    EXPECT_TRUE(close(t.dv.data() + rk * t.hkv * t.d, ref.dv, "dv", b));
  }
  // The sequence index matters: sequence 2 checked as batch entry 0 fails.
  ForwardArgs wrong{};
  wrong.problem = t.sequence_problem(2);
  wrong.q = t.slice(t.q, t.cu_q[2], t.lq[2], t.hq);
  wrong.k = t.slice(t.k, t.cu_k[2], t.lk[2], t.hkv);
  wrong.v = t.slice(t.v, t.cu_k[2], t.lk[2], t.hkv);
  EXPECT_FALSE(close(t.out.data() + t.cu_q[2] * t.hq * t.d, oracle::forward(wrong, 0), "out", 2));
}

// A dense call with a per-batch bias runs one part per batch entry: each keeps its batch index.
TEST(CpuDropout, PerBatchBiasKeepsEachEntrysMask) {
  Spec s = make(45, 70, 16, [](Spec& x) {
    x.batch = 3;
    x.heads_q = 3;
    x.heads_kv = 1;
    x.window_left = 20;
    x.window_right = 9;
    x.alibi = Alibi::kPerBatch;
  });
  Inputs in(s);
  set_dropout(in, 0.4f, kSeed);
  const std::vector<float> biases{-1.5f, 0.25f, -3.0f};
  in.problem.sigmoid_bias_per_batch = biases.data();
  HostTensor out = in.new_out(), dq = in.new_dq(), dk = in.new_dkv(), dv = in.new_dkv();
  ASSERT_EQ(cpu::forward(in.forward_args(out), 2), Status::kSuccess) << last_error();
  ASSERT_EQ(cpu::backward(in.backward_args(dq, dk, dv), 2), Status::kSuccess) << last_error();
  // The oracle knows no per-batch bias: each entry alone, as batch index b of the call.
  for (int64_t b = 0; b < s.batch; ++b) {
    FlashSigmoidBackwardArgs a = in.backward_args(dq, dk, dv);
    a.problem.sigmoid_bias_per_batch = nullptr;
    a.problem.sigmoid_bias = biases[b];
    a.problem.batch = 1;
    a.problem.alibi_slopes = in.slopes.data() + b * s.heads_q;
    a.problem.alibi_stride_batch = 0;
    for (FlashSigmoidTensor* t : {&a.q, &a.k, &a.v, &a.dout}) {
      t->data = static_cast<char*>(t->data) + b * t->stride_batch * 4;
    }
    const FlashSigmoidForwardArgs fa{a.problem, a.q, a.k, a.v, {}};
    const std::vector<double> ref_out = oracle::forward(fa, b);
    const oracle::Gradients ref = oracle::backward(a, b);
    const std::vector<double> got_out = out.dense(), got_dq = dq.dense(), got_dk = dk.dense(), got_dv = dv.dense();
    const size_t nq = ref_out.size(), nk = ref.dk.size();
    auto part = [](const std::vector<double>& all, size_t b0, size_t n) {
      return std::vector<float>(all.begin() + b0 * n, all.begin() + (b0 + 1) * n);
    };
    EXPECT_TRUE(close(part(got_out, b, nq).data(), ref_out, "out", b));
    EXPECT_TRUE(close(part(got_dq, b, nq).data(), ref.dq, "dq", b));
    EXPECT_TRUE(close(part(got_dk, b, nk).data(), ref.dk, "dk", b));
    EXPECT_TRUE(close(part(got_dv, b, nk).data(), ref.dv, "dv", b));
  }
}

// ---- cpu::dropout_mask --------------------------------------------------------------------------

TEST(CpuDropoutMask, EqualsThePerEntryReference) {
  const int64_t first = 3, batch = 2, heads = 3, sq = 37, sk = 70;
  std::vector<uint8_t> keep(static_cast<size_t>(batch * heads * sq * sk), 0xAB);
  ASSERT_EQ(cpu::dropout_mask(0.3f, kSeed.words, first, batch, heads, sq, sk, keep.data()), Status::kSuccess)
      << last_error();
  const DropoutParams d = make_dropout(0.3f, kSeed.words[0], kSeed.words[1]);
  int64_t kept = 0, wrong = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < sq; ++i)
        for (int64_t j = 0; j < sk; ++j) {
          const uint8_t got = keep[static_cast<size_t>(((b * heads + h) * sq + i) * sk + j)];
          const bool want = dropout_keeps(d, static_cast<uint32_t>((first + b) * heads + h), i, j);
          wrong += got != (want ? 1 : 0);
          kept += want;
        }
  EXPECT_EQ(wrong, 0);
  // Kept fraction within 5 sigma of the rounded keep rate (77/256 dropped).
  const double n = static_cast<double>(batch * heads * sq * sk), rate = 1.0 - 77.0 / 256.0;
  EXPECT_NEAR(kept / n, rate, 5.0 * std::sqrt(rate * (1 - rate) / n));
}

TEST(CpuDropoutMask, NoDropoutIsAllKeptWithoutReadingTheSeed) {
  std::vector<uint8_t> keep(2 * 5 * 7, 0);
  ASSERT_EQ(cpu::dropout_mask(0.0f, nullptr, 0, 1, 2, 5, 7, keep.data()), Status::kSuccess) << last_error();
  for (uint8_t x : keep) EXPECT_EQ(x, 1);
  ASSERT_EQ(cpu::dropout_mask(0.5f, kSeed.words, 0, 0, 2, 5, 7, nullptr), Status::kSuccess) << last_error();
}

TEST(CpuDropoutMask, BadArgumentsAreNamed) {
  std::vector<uint8_t> keep(64);
  auto rejected = [](Status s, const std::string& argument) {
    const std::string message = last_error();
    return s == Status::kInvalidArgument && message.rfind("cpu::dropout_mask: " + argument + ": expected", 0) == 0;
  };
  EXPECT_TRUE(rejected(cpu::dropout_mask(1.0f, kSeed.words, 0, 1, 1, 8, 8, keep.data()), "dropout_p"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(-0.1f, kSeed.words, 0, 1, 1, 8, 8, keep.data()), "dropout_p"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(NAN, kSeed.words, 0, 1, 1, 8, 8, keep.data()), "dropout_p"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, nullptr, 0, 1, 1, 8, 8, keep.data()), "dropout_seed"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, -1, 1, 1, 8, 8, keep.data()), "batch_index"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, 0, -1, 1, 8, 8, keep.data()), "batch"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, 0, 1, 0, 8, 8, keep.data()), "heads_q"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, 0, 1, 1, -8, 8, keep.data()), "seqlen_q"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, 0, 1, 1, 8, -8, keep.data()), "seqlen_k"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, int64_t{1} << 31, 1, 4, 8, 8, keep.data()), "batch_index"));
  EXPECT_TRUE(rejected(cpu::dropout_mask(0.5f, kSeed.words, 0, 1, 1, 8, 8, nullptr), "keep"));
  // The C entry point is the same function.
  EXPECT_EQ(flash_sigmoid_cpu_dropout_mask(0.5f, nullptr, 0, 1, 1, 8, 8, keep.data()), FLASH_SIGMOID_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace flash_sigmoid

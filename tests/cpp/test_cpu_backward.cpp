// Tests of the CPU implementation's backward (flash_sigmoid::cpu::backward): against the fp64
// oracle's analytic gradients over a feature grid; the oracle's gradients against central finite
// differences of its own forward; the CPU fp32 gradients against finite differences of the CPU fp32
// forward; GQA group sums; determinism; and the empty-sequence cases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "oracle.hpp"
#include "scenarios.hpp"

namespace flash_sigmoid {
namespace {

using oracle::Alibi;
using oracle::Bias;
using oracle::HostTensor;
using oracle::Inputs;
using oracle::Layout;
using oracle::Spec;
using oracle::make;

std::vector<Spec> grid() { return oracle::grid({96, 80, 1, 2000}); }

// The CPU kernel builds every grid case runs on (src/cpu/cpu_kernels.hpp): "portable" (4 lanes, no
// FMA) everywhere, "avx2" where the CPU has it (else portable again), "auto" the best this CPU runs
// (avx512 where it has AVX-512F).
struct KernelBuild {
  explicit KernelBuild(const char* name) { ::setenv("FLASH_SIGMOID_CPU_KERNELS", name, 1); }
  ~KernelBuild() { ::unsetenv("FLASH_SIGMOID_CPU_KERNELS"); }
};
constexpr const char* kKernelBuilds[] = {"portable", "avx2", "auto"};


struct GradientOutputs {
  HostTensor dq, dk, dv;
};

GradientOutputs run_backward(Inputs& in, int threads, int deterministic = 1) {
  GradientOutputs g{in.new_dq(), in.new_dkv(), in.new_dkv()};
  FlashSigmoidBackwardArgs args = in.backward_args(g.dq, g.dk, g.dv);
  args.deterministic = deterministic;
  const Status status = cpu::backward(args, threads);
  EXPECT_EQ(status, Status::kSuccess) << last_error();
  return g;
}

class CpuBackwardGrid : public ::testing::TestWithParam<Spec> {};

TEST_P(CpuBackwardGrid, MatchesOracle) {
  Inputs in(GetParam());
  const int threads = static_cast<int>(GetParam().seed % 4);
  for (const char* build : kKernelBuilds) {
    const KernelBuild kernels(build);
    GradientOutputs g = run_backward(in, threads);
    const oracle::Gradients ref = oracle::backward(in.backward_args(g.dq, g.dk, g.dv));
    EXPECT_TRUE(oracle::matches(g.dq, ref.dq, 3.0, "dq")) << build;
    EXPECT_TRUE(oracle::matches(g.dk, ref.dk, 3.0, "dk")) << build;
    EXPECT_TRUE(oracle::matches(g.dv, ref.dv, 3.0, "dv")) << build;
    EXPECT_TRUE(g.dq.untouched_outside_view() && g.dk.untouched_outside_view() && g.dv.untouched_outside_view())
        << build << ": wrote outside a gradient view (into padding)";
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, CpuBackwardGrid, ::testing::ValuesIn(grid()),
                         [](const ::testing::TestParamInfo<Spec>& param_info) { return param_info.param.label(); });

// ---- finite differences -------------------------------------------------------------------------

// Tiny fp32 problems that between them touch causal, windows, ALiBi, GQA, bias, scale and strides.
std::vector<Spec> tiny_specs() {
  std::vector<Spec> out;
  Spec s = make(5, 7, 4);
  s.heads_q = 2;
  s.heads_kv = 1;
  s.causal = true;
  s.alibi = Alibi::kPerHead;
  s.bias = Bias::kRandom;
  s.seed = 31;
  out.push_back(s);
  s = make(6, 4, 3);
  s.batch = 2;
  s.heads_q = 2;
  s.heads_kv = 2;
  s.window_left = 1;
  s.window_right = 1;
  s.bias = Bias::kNegLogSk;
  s.scale = 0.7f;
  s.layout = Layout::kPadded;
  s.seed = 32;
  out.push_back(s);
  s = make(5, 5, 6);
  s.heads_q = 3;
  s.heads_kv = 1;
  s.window_left = 2;
  s.alibi = Alibi::kPerBatch;
  s.layout = Layout::kHeadMajor;
  s.seed = 33;
  out.push_back(s);
  return out;
}

// Central differences of loss = sum(dout * out) with respect to every element of q, k and v,
// perturbing the stored fp32 values by +-h and dividing by the perturbation actually stored.
// `loss` evaluates the loss on the current inputs.
oracle::Gradients finite_differences(Inputs& in, double h, const std::function<double()>& loss) {
  oracle::Gradients fd;
  auto differentiate = [&](HostTensor& t, std::vector<double>& grad) {
    t.for_each([&](int64_t b, int64_t s, int64_t hd, int64_t d) {
      const double x = t.get(b, s, hd, d);
      const double up = t.set(b, s, hd, d, x + h);
      const double loss_up = loss();
      const double down = t.set(b, s, hd, d, x - h);
      const double loss_down = loss();
      t.set(b, s, hd, d, x);
      grad.push_back((loss_up - loss_down) / (up - down));
    });
  };
  differentiate(in.q, fd.dq);
  differentiate(in.k, fd.dk);
  differentiate(in.v, fd.dv);
  return fd;
}

double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double err2 = 0, ref2 = 0;
  for (size_t e = 0; e < ref.size(); ++e) {
    err2 += (got[e] - ref[e]) * (got[e] - ref[e]);
    ref2 += ref[e] * ref[e];
  }
  return std::sqrt(err2 / ref2);
}

// The oracle's analytic backward against differences of the oracle's forward, both in fp64:
// h = 1e-3 leaves a truncation error of ~h^2/6 * |third derivative| (measured 4e-8..2e-7 relative)
// and a rounding error of ~1e-16/h; 1e-5 is far above both and far below any formula error.
TEST(CpuBackward, OracleMatchesFiniteDifferences) {
  for (const Spec& s : tiny_specs()) {
    Inputs in(s);
    HostTensor out = in.new_out();
    auto loss = [&]() {
      const std::vector<double> o = oracle::forward(in.forward_args(out));
      const std::vector<double> w = in.dout.dense();
      double l = 0;
      for (size_t e = 0; e < o.size(); ++e) l += w[e] * o[e];
      return l;
    };
    const oracle::Gradients fd = finite_differences(in, 1e-3, loss);
    HostTensor dq = in.new_dq(), dk = in.new_dkv(), dv = in.new_dkv();
    const oracle::Gradients analytic = oracle::backward(in.backward_args(dq, dk, dv));
    EXPECT_LT(relative_error(analytic.dq, fd.dq), 1e-5) << s.label();
    EXPECT_LT(relative_error(analytic.dk, fd.dk), 1e-5) << s.label();
    EXPECT_LT(relative_error(analytic.dv, fd.dv), 1e-5) << s.label();
  }
}

// The CPU fp32 backward against differences of the CPU fp32 forward. h = 1e-2 balances the
// truncation error (~h^2/6 * |third derivative|: the fp64 oracle shows 4e-6..2e-5 at this h) against
// rounding (each fp32 output is off by ~1e-7 relative, so each difference by ~1e-6 / 2h = 5e-5
// absolute on gradients of size ~0.1-1). Measured: 3e-6..3e-5. 5e-4 leaves a margin of 15x and
// still catches any wrong term (a missing scale, a dropped head, a wrong sigmoid' are O(1) errors).
TEST(CpuBackward, CpuMatchesFiniteDifferencesOfCpuForward) {
  for (const Spec& s : tiny_specs()) {
    Inputs in(s);
    HostTensor out = in.new_out();
    auto loss = [&]() {
      EXPECT_EQ(cpu::forward(in.forward_args(out), 1), Status::kSuccess) << last_error();
      const std::vector<double> o = out.dense();
      const std::vector<double> w = in.dout.dense();
      double l = 0;
      for (size_t e = 0; e < o.size(); ++e) l += w[e] * o[e];
      return l;
    };
    const oracle::Gradients fd = finite_differences(in, 1e-2, loss);
    GradientOutputs g = run_backward(in, 2);
    EXPECT_LT(relative_error(g.dq.dense(), fd.dq), 5e-4) << s.label();
    EXPECT_LT(relative_error(g.dk.dense(), fd.dk), 5e-4) << s.label();
    EXPECT_LT(relative_error(g.dv.dense(), fd.dv), 5e-4) << s.label();
  }
}

// ---- structure ----------------------------------------------------------------------------------

// dK/dV of a kv head are the sums over its query heads: MQA with 4 query heads equals MHA whose
// 4 kv heads are copies of the one, with the 4 per-head gradients summed.
TEST(CpuBackward, GroupedHeadsSumTheirGradients) {
  Spec s = make(19, 23, 24);
  s.heads_q = 4;
  s.heads_kv = 1;
  s.causal = true;
  s.alibi = Alibi::kPerHead;
  s.bias = Bias::kNegLogSk;
  Inputs mqa(s);
  Spec m = s;
  m.heads_kv = 4;
  Inputs mha(m);
  mha.q.for_each([&](int64_t b, int64_t i, int64_t h, int64_t d) { mha.q.set(b, i, h, d, mqa.q.get(b, i, h, d)); });
  mha.dout.for_each(
      [&](int64_t b, int64_t i, int64_t h, int64_t d) { mha.dout.set(b, i, h, d, mqa.dout.get(b, i, h, d)); });
  mha.k.for_each([&](int64_t b, int64_t j, int64_t h, int64_t d) {
    mha.k.set(b, j, h, d, mqa.k.get(b, j, 0, d));
    mha.v.set(b, j, h, d, mqa.v.get(b, j, 0, d));
  });
  mha.slopes = mqa.slopes;
  mha.problem.alibi_slopes = mha.slopes.data();
  mha.problem.sigmoid_bias = mqa.problem.sigmoid_bias;

  GradientOutputs g_mqa = run_backward(mqa, 2);
  GradientOutputs g_mha = run_backward(mha, 3);
  const std::vector<double> dq_mqa = g_mqa.dq.dense(), dq_mha = g_mha.dq.dense();
  EXPECT_LT(relative_error(dq_mqa, dq_mha), 1e-6);
  for (HostTensor* t : {&g_mqa.dk, &g_mqa.dv}) {
    HostTensor& summed_from = t == &g_mqa.dk ? g_mha.dk : g_mha.dv;
    std::vector<double> summed, got;
    t->for_each([&](int64_t b, int64_t j, int64_t, int64_t d) {
      double sum = 0;
      for (int64_t h = 0; h < 4; ++h) sum += summed_from.get(b, j, h, d);
      summed.push_back(sum);
      got.push_back(t->get(b, j, 0, d));
    });
    EXPECT_LT(relative_error(got, summed), 1e-6) << (t == &g_mqa.dk ? "dk" : "dv");
  }
}

// Bitwise identical gradients: run to run, for any thread count, deterministic flag on or off.
TEST(CpuBackward, DeterministicAcrossThreadCounts) {
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT32, FLASH_SIGMOID_BFLOAT16}) {
    Spec s = make(150, 130, 40);
    s.batch = 2;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.causal = true;
    s.alibi = Alibi::kPerHead;
    s.dtype = dtype;
    s.bias = Bias::kNegLogSk;
    Inputs in(s);
    GradientOutputs first = run_backward(in, 1);
    const std::vector<double> dq = first.dq.dense(), dk = first.dk.dense(), dv = first.dv.dense();
    auto same = [](const std::vector<double>& a, const std::vector<double>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
    };
    for (int threads : {1, 2, 3, 7, 0}) {
      for (int deterministic : {1, 0}) {
        GradientOutputs g = run_backward(in, threads, deterministic);
        EXPECT_TRUE(same(g.dq.dense(), dq)) << "dq, " << threads << " threads";
        EXPECT_TRUE(same(g.dk.dense(), dk)) << "dk, " << threads << " threads";
        EXPECT_TRUE(same(g.dv.dense(), dv)) << "dv, " << threads << " threads";
      }
    }
  }
}

// Sq = 0: dk and dv are written as zeros. Sk = 0: dq is written as zeros.
TEST(CpuBackward, EmptySequencesWriteZeros) {
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT32, FLASH_SIGMOID_FLOAT16}) {
    Spec s = make(0, 6, 8);
    s.dtype = dtype;
    s.batch = 2;
    s.heads_q = 2;
    s.heads_kv = 1;
    s.layout = Layout::kPadded;
    Inputs no_queries(s);
    GradientOutputs g = run_backward(no_queries, 2);
    for (HostTensor* t : {&g.dk, &g.dv}) {
      t->for_each([&](int64_t b, int64_t j, int64_t h, int64_t d) { EXPECT_EQ(t->get(b, j, h, d), 0.0); });
      EXPECT_TRUE(t->untouched_outside_view());
    }
    s = make(6, 0, 8);
    s.dtype = dtype;
    s.batch = 2;
    s.heads_q = 2;
    s.heads_kv = 1;
    s.layout = Layout::kHeadMajor;
    Inputs no_keys(s);
    g = run_backward(no_keys, 2);
    g.dq.for_each([&](int64_t b, int64_t i, int64_t h, int64_t d) { EXPECT_EQ(g.dq.get(b, i, h, d), 0.0); });
    EXPECT_TRUE(g.dq.untouched_outside_view());
  }
}

}  // namespace
}  // namespace flash_sigmoid

namespace flash_sigmoid {
namespace {

// More key tiles than kSlabsPerHead (attention_cpu_backward.cpp): slabs of several tiles each, whose
// dQ partials the reduction sums; against the oracle for both kernel builds and several thread counts.
TEST(CpuBackward, SlabsOfSeveralKeyTilesMatchOracle) {
  Spec s = make(70, 1100, 8);  // 23 key tiles of 48: 8 slabs of 3 tiles
  s.heads_q = 2;
  s.heads_kv = 1;
  s.window_left = 700;
  s.window_right = 900;
  s.bias = Bias::kNegLogSk;
  Inputs in(s);
  for (const char* build : kKernelBuilds) {
    const KernelBuild kernels(build);
    for (int threads : {1, 3}) {
      GradientOutputs g = run_backward(in, threads);
      const oracle::Gradients ref = oracle::backward(in.backward_args(g.dq, g.dk, g.dv));
      EXPECT_TRUE(oracle::matches(g.dq, ref.dq, 3.0, "dq")) << build << ", " << threads << " threads";
      EXPECT_TRUE(oracle::matches(g.dk, ref.dk, 3.0, "dk")) << build;
      EXPECT_TRUE(oracle::matches(g.dv, ref.dv, 3.0, "dv")) << build;
    }
  }
}

}  // namespace
}  // namespace flash_sigmoid

// Tests of the CPU implementation's forward (flash_sigmoid::cpu::forward) against the fp64 oracle
// of DESIGN §1 (oracle.hpp), over a grid covering every feature at odd sizes, plus the conventions
// asserted by hand, NaN propagation, the defined fp16 overflow, and the implementation's own
// fp16/bf16 conversions against the oracle's (every half value; every rounding boundary).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_convert.hpp"
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

std::vector<Spec> grid() { return oracle::grid({128, 100, 2, 1000}); }

// The CPU kernel builds every grid case runs on (src/cpu/cpu_kernels.hpp): "portable" (4 lanes, no
// FMA) everywhere, "avx2" where the CPU has it (else portable again), "auto" the best this CPU runs
// (avx512 where it has AVX-512F).
struct KernelBuild {
  explicit KernelBuild(const char* name) { ::setenv("FLASH_SIGMOID_CPU_KERNELS", name, 1); }
  ~KernelBuild() { ::unsetenv("FLASH_SIGMOID_CPU_KERNELS"); }
};
constexpr const char* kKernelBuilds[] = {"portable", "avx2", "auto"};


class CpuForwardGrid : public ::testing::TestWithParam<Spec> {};

TEST_P(CpuForwardGrid, MatchesOracle) {
  Inputs in(GetParam());
  for (const char* build : kKernelBuilds) {
    const KernelBuild kernels(build);
    HostTensor out = in.new_out();
    const FlashSigmoidForwardArgs args = in.forward_args(out);
    // Thread counts vary with the case (0 = one per hardware thread); results do not depend on it.
    const int threads = static_cast<int>(GetParam().seed % 4);
    ASSERT_EQ(cpu::forward(args, threads), Status::kSuccess) << last_error();
    EXPECT_TRUE(oracle::matches(out, oracle::forward(args), 2.0, "out")) << build;
    EXPECT_TRUE(out.untouched_outside_view()) << build << ": wrote outside the out view (into padding)";
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, CpuForwardGrid, ::testing::ValuesIn(grid()),
                         [](const ::testing::TestParamInfo<Spec>& param_info) { return param_info.param.label(); });

// The conventions, by hand (q = 0, so z = bias - slope * |i + Sk - Sq - j|): bottom-right
// causal alignment, the ALiBi sign and distance, and the window bounds.
TEST(CpuForward, ConventionsByHand) {
  // Sq = 2, Sk = 3, D = 1, causal, slope 0.5, bias 0.25: row 0 sees j <= 1, row 1 sees all keys.
  std::vector<float> q = {0.0f, 0.0f}, k = {1.0f, 2.0f, 3.0f}, v = {1.0f, 10.0f, 100.0f}, out = {-1.0f, -1.0f};
  const float slope = 0.5f;
  Problem p = problem_init(1);
  p.dtype = FLASH_SIGMOID_FLOAT32;
  p.batch = 1, p.seqlen_q = 2, p.seqlen_k = 3, p.heads_q = 1, p.heads_kv = 1;
  p.sigmoid_bias = 0.25f;
  p.causal = 1;
  p.alibi_slopes = &slope;
  ForwardArgs a{};
  a.problem = p;
  a.q = contiguous_tensor(q.data(), 2, 1, 1);
  a.k = contiguous_tensor(k.data(), 3, 1, 1);
  a.v = contiguous_tensor(v.data(), 3, 1, 1);
  a.out = contiguous_tensor(out.data(), 2, 1, 1);
  auto sig = [](double z) { return 1.0 / (1.0 + std::exp(-z)); };
  ASSERT_EQ(cpu::forward(a, 1), Status::kSuccess) << last_error();
  // Row 0: diagonal at j = 1; distances 1, 0.  Row 1: diagonal at j = 2; distances 2, 1, 0.
  EXPECT_NEAR(out[0], sig(0.25 - 0.5) * 1 + sig(0.25) * 10, 1e-5);
  EXPECT_NEAR(out[1], sig(0.25 - 1.0) * 1 + sig(0.25 - 0.5) * 10 + sig(0.25) * 100, 1e-4);

  // Window (1, 0) without causal: row 0 sees j in [0, 1], row 1 sees j in [1, 2].
  a.problem.causal = 0;
  a.problem.window_left = 1;
  a.problem.window_right = 0;
  a.problem.alibi_slopes = nullptr;
  ASSERT_EQ(cpu::forward(a, 1), Status::kSuccess) << last_error();
  EXPECT_NEAR(out[0], sig(0.25) * 11, 1e-5);
  EXPECT_NEAR(out[1], sig(0.25) * 110, 1e-4);

  // Window (0, 1): row 0 sees j in [1, 2]; row 1 sees j = 2 only (the window stops at Sk).
  a.problem.window_left = 0;
  a.problem.window_right = 1;
  ASSERT_EQ(cpu::forward(a, 1), Status::kSuccess) << last_error();
  EXPECT_NEAR(out[0], sig(0.25) * 110, 1e-4);
  EXPECT_NEAR(out[1], sig(0.25) * 100, 1e-4);
}

// Sq > Sk with causal: rows i < Sq - Sk see no key and are exactly 0; Sk = 0 gives 0 everywhere.
TEST(CpuForward, RowsWithoutKeysAreZero) {
  for (int64_t sk : {0, 3}) {
    Spec s = make(7, sk, 8);
    s.causal = true;
    s.dtype = FLASH_SIGMOID_FLOAT16;
    s.layout = Layout::kPadded;
    Inputs in(s);
    HostTensor out = in.new_out();
    ASSERT_EQ(cpu::forward(in.forward_args(out), 2), Status::kSuccess) << last_error();
    for (int64_t i = 0; i < 7 - sk; ++i) {
      for (int64_t d = 0; d < 8; ++d) EXPECT_EQ(out.get(0, i, 0, d), 0.0) << "row " << i << " sk " << sk;
    }
    for (int64_t i = 7 - sk; i < 7; ++i) EXPECT_NE(out.get(0, i, 0, 0), 0.0) << "row " << i;
  }
}

// A NaN in q poisons exactly its own output row; a NaN in k poisons the rows that see that key
// and no other (masked keys get P = 0 after the sigmoid, so their NaN never reaches O).
TEST(CpuForward, NanPropagatesOnlyWhereVisible) {
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT32, FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
    Spec s = make(20, 20, 16);
    s.dtype = dtype;
    s.heads_q = 2;
    s.heads_kv = 1;
    s.window_left = 3;
    s.window_right = 2;
    Inputs in(s);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    in.q.set(0, 4, 1, 7, nan);   // query row 4 of head 1
    in.k.set(0, 12, 0, 3, nan);  // key 12: visible from rows 10..15 of both heads
    HostTensor out = in.new_out();
    const FlashSigmoidForwardArgs args = in.forward_args(out);
    ASSERT_EQ(cpu::forward(args, 2), Status::kSuccess) << last_error();
    const std::vector<double> ref = oracle::forward(args);
    EXPECT_TRUE(oracle::matches(out, ref, 2.0, "out")) << oracle::dtype_label(dtype);
    for (int64_t i = 0; i < 20; ++i) {
      for (int64_t h = 0; h < 2; ++h) {
        const bool expect_nan = (i == 4 && h == 1) || (i >= 10 && i <= 15);
        EXPECT_EQ(std::isnan(out.get(0, i, h, 0)), expect_nan) << "row " << i << " head " << h;
      }
    }
  }
}

// O is not normalised: it grows like Sk * sigmoid(bias) * mean(v). In fp16 a result beyond the
// half range is +-inf (IEEE round to nearest), never a clamped or wrapped value; the same inputs
// in bf16 and fp32 stay finite and match the oracle.
TEST(CpuForward, Fp16OverflowGivesInf) {
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16, FLASH_SIGMOID_FLOAT32}) {
    Spec s = make(3, 256, 8);
    s.dtype = dtype;
    s.heads_q = 2;
    s.heads_kv = 2;
    Inputs in(s);
    in.problem.sigmoid_bias = 8.0f;  // P ~ 1: |O| ~ 256 * 750 = 1.9e5 > 65504
    std::mt19937_64 rng(7);
    in.v.fill(rng, std::uniform_real_distribution<double>(500.0, 1000.0));
    // Head 1 gets negative values, so its outputs overflow to -inf.
    for (int64_t j = 0; j < 256; ++j)
      for (int64_t d = 0; d < 8; ++d) in.v.set(0, j, 1, d, -in.v.get(0, j, 1, d));
    HostTensor out = in.new_out();
    const FlashSigmoidForwardArgs args = in.forward_args(out);
    ASSERT_EQ(cpu::forward(args, 2), Status::kSuccess) << last_error();
    const std::vector<double> ref = oracle::forward(args);
    if (dtype != FLASH_SIGMOID_FLOAT16) {
      EXPECT_TRUE(oracle::matches(out, ref, 2.0, "out"));
      continue;
    }
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t d = 0; d < 8; ++d) {
        ASSERT_GT(ref[static_cast<size_t>((i * 2 + 0) * 8 + d)], 65520.0);
        EXPECT_EQ(out.get(0, i, 0, d), HUGE_VAL) << "row " << i;
        EXPECT_EQ(out.get(0, i, 1, d), -HUGE_VAL) << "row " << i;
      }
    }
  }
}

// Just below the fp16 limit the result is finite and rounds like the oracle.
TEST(CpuForward, Fp16NearTheRangeLimitIsFinite) {
  Spec s = make(2, 64, 8);
  s.dtype = FLASH_SIGMOID_FLOAT16;
  Inputs in(s);
  in.problem.sigmoid_bias = 12.0f;
  std::mt19937_64 rng(11);
  in.v.fill(rng, std::uniform_real_distribution<double>(900.0, 1000.0));  // |O| ~ 64 * 950 = 6.1e4 < 65504
  HostTensor out = in.new_out();
  const FlashSigmoidForwardArgs args = in.forward_args(out);
  ASSERT_EQ(cpu::forward(args, 1), Status::kSuccess) << last_error();
  EXPECT_TRUE(oracle::matches(out, oracle::forward(args), 2.0, "out"));
}

// Bitwise identical for any thread count and across runs (each row is summed in a fixed order).
TEST(CpuForward, DeterministicAcrossThreadCounts) {
  Spec s = make(150, 130, 40);
  s.batch = 2;
  s.heads_q = 4;
  s.heads_kv = 2;
  s.causal = true;
  s.alibi = Alibi::kPerHead;
  s.dtype = FLASH_SIGMOID_FLOAT32;
  Inputs in(s);
  for (const char* build : kKernelBuilds) {
    const KernelBuild kernels(build);
    HostTensor first = in.new_out();
    ASSERT_EQ(cpu::forward(in.forward_args(first), 1), Status::kSuccess) << last_error();
    const std::vector<double> expected = first.dense();
    for (int threads : {1, 2, 3, 7, 0}) {
      HostTensor out = in.new_out();
      ASSERT_EQ(cpu::forward(in.forward_args(out), threads), Status::kSuccess) << last_error();
      const std::vector<double> got = out.dense();
      ASSERT_EQ(got.size(), expected.size());
      EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(double)), 0)
          << build << ", " << threads << " threads";
    }
  }
}

// ---- the CPU implementation's dtype conversions -------------------------------------------------
// The attention grid tolerates 2-3x the output rounding error, so it cannot tell round-to-nearest-
// even from truncation or ties-away; these tests pin the conversions down bit for bit.

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Converts x with the implementation and compares with the oracle's round_to (IEEE, to nearest
// even, overflow to inf); NaN must stay NaN with its sign.
::testing::AssertionResult converts_like_oracle(FlashSigmoidDType dtype, float x) {
  const uint16_t bits = dtype == FLASH_SIGMOID_FLOAT16 ? cpu_impl::float_to_half(x) : cpu_impl::float_to_bf16(x);
  const double got = oracle::decode(dtype, bits);
  if (std::isnan(x)) {
    if (std::isnan(got) && std::signbit(got) == std::signbit(x)) return ::testing::AssertionSuccess();
  } else {
    const double want = oracle::round_to(dtype, x);
    if (got == want && std::signbit(got) == std::signbit(want)) return ::testing::AssertionSuccess();
  }
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return ::testing::AssertionFailure() << oracle::dtype_label(dtype) << " of " << x << " (bits 0x" << std::hex << u
                                       << std::dec << ") gave " << got << ", expected " << oracle::round_to(dtype, x);
}

TEST(CpuConvert, EveryHalfAndBf16ValueWidensExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want16 = oracle::decode(FLASH_SIGMOID_FLOAT16, h);
    const float got16 = cpu_impl::half_to_float(static_cast<uint16_t>(h));
    ASSERT_TRUE(std::isnan(want16) ? std::isnan(got16) : static_cast<double>(got16) == want16) << std::hex << h;
    const double want_bf = oracle::decode(FLASH_SIGMOID_BFLOAT16, h);
    const float got_bf = cpu_impl::bf16_to_float(static_cast<uint16_t>(h));
    ASSERT_TRUE(std::isnan(want_bf) ? std::isnan(got_bf) : static_cast<double>(got_bf) == want_bf) << std::hex << h;
  }
}

// Around every finite half value v (both signs): v, the midpoint to the next larger magnitude (a
// tie; above 65504 that is 65520, the overflow edge), and one float step either side of each. This
// covers zero, subnormals and every binade. Then specials and random bit patterns.
TEST(CpuConvert, FloatToHalfRoundsToNearestEven) {
  for (uint32_t h = 0; h <= 0x7bffu; ++h) {
    const double v = oracle::decode(FLASH_SIGMOID_FLOAT16, h);
    const double next = h == 0x7bffu ? 65536.0 : oracle::decode(FLASH_SIGMOID_FLOAT16, h + 1);
    for (double base : {v, (v + next) / 2, -v, -(v + next) / 2}) {
      const auto f = static_cast<float>(base);  // exact: 12 significant bits at most
      for (float x : {f, std::nextafter(f, HUGE_VALF), std::nextafter(f, -HUGE_VALF)}) {
        ASSERT_TRUE(converts_like_oracle(FLASH_SIGMOID_FLOAT16, x));
      }
    }
  }
  std::mt19937 rng(5);
  for (int n = 0; n < 1 << 20; ++n)
    ASSERT_TRUE(converts_like_oracle(FLASH_SIGMOID_FLOAT16, bits_to_float(static_cast<uint32_t>(rng()))));
  for (uint32_t u : {0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x00000001u, 0x80000001u,
                     0x477fefffu, 0x477ff000u, 0x477ff001u, 0x33000000u, 0x33000001u, 0x32ffffffu}) {
    ASSERT_TRUE(converts_like_oracle(FLASH_SIGMOID_FLOAT16, bits_to_float(u)));
  }
}

// A bf16 value is the top half of a float: every float whose low 16 bits are 0, 1, the tie
// 0x8000 and its neighbours, or 0xffff, for every top half; then random bit patterns.
TEST(CpuConvert, FloatToBf16RoundsToNearestEven) {
  for (uint32_t top = 0; top < 65536; ++top) {
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      ASSERT_TRUE(converts_like_oracle(FLASH_SIGMOID_BFLOAT16, bits_to_float(top << 16 | low)));
    }
  }
  std::mt19937 rng(6);
  for (int n = 0; n < 1 << 20; ++n)
    ASSERT_TRUE(converts_like_oracle(FLASH_SIGMOID_BFLOAT16, bits_to_float(static_cast<uint32_t>(rng()))));
}

}  // namespace
}  // namespace flash_sigmoid

// Tests of the CPU kernels (src/cpu/cpu_kernels.hpp) one by one, for every build this CPU runs
// (portable always; avx2 and avx512 where the CPU has them): the GEMM against an fp64 product at odd sizes and
// both operand layouts, the widening of every fp16 and bf16 value against the scalar conversions,
// the sigmoid and its derivative against fp64 over the whole float range (tails, +-inf, NaN), and
// the tile band (mask and ALiBi distance) against the definition, in both tile orientations.
// The kernel sources are compiled into this test (tests/cpp/CMakeLists.txt): the library hides them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/cpu_convert.hpp"
#include "cpu/cpu_kernels.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

std::vector<const CpuKernels*> builds() {
  std::vector<const CpuKernels*> out{&portable_kernels()};
  if (const CpuKernels* avx2 = avx2_kernels()) out.push_back(avx2);
  if (const CpuKernels* avx512 = avx512_kernels()) out.push_back(avx512);
  return out;
}

TEST(CpuKernels, SelectionFollowsTheEnvironment) {
  ::setenv("FLASH_SIGMOID_CPU_KERNELS", "portable", 1);
  EXPECT_STREQ(select_kernels().name, "portable");
  ::setenv("FLASH_SIGMOID_CPU_KERNELS", "avx2", 1);
  EXPECT_STREQ(select_kernels().name, avx2_kernels() ? "avx2" : "portable");
  ::unsetenv("FLASH_SIGMOID_CPU_KERNELS");
  EXPECT_STREQ(select_kernels().name, avx512_kernels() ? "avx512" : avx2_kernels() ? "avx2" : "portable");
}

TEST(CpuKernels, GemmMatchesFp64) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (const CpuKernels* kernels : builds()) {
    for (int64_t m : {1, 5, 6, 7, 11, 12, 13, 25, 64}) {
      for (int64_t k : {1, 17, 64}) {
        for (int64_t n_panels : {1, 2, 3}) {  // with kNr of one vector, 1 and 3 end in a one-vector panel
          for (bool a_transposed : {false, true}) {
            for (bool accumulate : {false, true}) {
              const int64_t n = n_panels * kernels->nr, ldb = n + 3, ldc = n + 5;
              const int64_t a_rs = a_transposed ? 1 : k + 2, a_cs = a_transposed ? m + 1 : 1;
              std::vector<float> a(static_cast<size_t>((m + 1) * (k + 2))), b(static_cast<size_t>(k * ldb)),
                  c(static_cast<size_t>(m * ldc));
              for (float& x : a) x = u(rng);
              for (float& x : b) x = u(rng);
              for (float& x : c) x = u(rng);
              const std::vector<float> c0 = c;
              kernels->gemm(m, n, k, a.data(), a_rs, a_cs, b.data(), ldb, c.data(), ldc, accumulate);
              for (int64_t r = 0; r < m; ++r) {
                for (int64_t col = 0; col < ldc; ++col) {
                  const float got = c[r * ldc + col];
                  if (col >= n) {  // outside the n columns: untouched
                    ASSERT_EQ(got, c0[r * ldc + col]);
                    continue;
                  }
                  double want = accumulate ? c0[r * ldc + col] : 0.0;
                  for (int64_t t = 0; t < k; ++t) want += double(a[r * a_rs + t * a_cs]) * b[t * ldb + col];
                  ASSERT_NEAR(got, want, 1e-5 * (k + 1))
                      << kernels->name << " m " << m << " k " << k << " r " << r << " c " << col;
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(CpuKernels, WidenIsExactForEveryHalfAndBf16Value) {
  std::vector<uint16_t> all(65536 + 5);  // + 5: a tail that is not a whole vector
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> out(all.size());
  for (const CpuKernels* kernels : builds()) {
    for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
      kernels->widen(dtype, all.data(), static_cast<int64_t>(all.size()), out.data());
      for (size_t i = 0; i < all.size(); ++i) {
        const float want = dtype == FLASH_SIGMOID_FLOAT16 ? half_to_float(all[i]) : bf16_to_float(all[i]);
        uint32_t got_bits, want_bits;
        std::memcpy(&got_bits, &out[i], 4);
        std::memcpy(&want_bits, &want, 4);
        ASSERT_EQ(got_bits, want_bits) << kernels->name << " dtype " << dtype << " value 0x" << std::hex << all[i];
      }
    }
    const std::vector<float> f = {1.5f, -2.0f, 3.25f};
    std::vector<float> g(3);
    kernels->widen(FLASH_SIGMOID_FLOAT32, f.data(), 3, g.data());
    EXPECT_EQ(f, g);
  }
}

// A band that checks nothing and no ALiBi: z = s, everything visible.
TileBand plain_band(int64_t rows, int64_t cols) {
  TileBand band{};
  band.row_step = 1;
  band.col_step = -1;
  band.left = band.right = kBandLimit;
  band.rows = rows;
  band.cols = cols;
  band.check_band = false;
  band.scale = 1.0f;
  return band;
}

double sigmoid64(double z) { return 1.0 / (1.0 + std::exp(-z)); }

TEST(CpuKernels, SigmoidAndDerivativeMatchFp64EverywhereWithoutBranchesOnTheValue) {
  // Every 97th float from -inf to +inf in bit order, plus the specials.
  std::vector<float> zs = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  for (uint64_t u = 0; u < 0x7f800000u; u += 97 * 1021) {
    float f;
    const uint32_t bits = static_cast<uint32_t>(u);
    std::memcpy(&f, &bits, 4);
    zs.push_back(f);
    zs.push_back(-f);
  }
  for (float z = -100.0f; z <= 100.0f; z += 0.01f) zs.push_back(z);
  for (const CpuKernels* kernels : builds()) {
    const int64_t cols = kernels->nr;
    const int64_t rows = static_cast<int64_t>((zs.size() + cols - 1) / cols);
    std::vector<float> z(static_cast<size_t>(rows * cols), 0.0f), dp(z.size(), 1.0f);
    std::copy(zs.begin(), zs.end(), z.begin());
    std::vector<float> p = z;
    kernels->sigmoid_tile(plain_band(rows, cols), p.data(), cols, rows, cols);
    kernels->sigmoid_grad_tile(plain_band(rows, cols), z.data(), dp.data(), cols, rows, cols);
    for (size_t e = 0; e < zs.size(); ++e) {
      const double x = zs[e];
      ASSERT_EQ(std::memcmp(&p[e], &z[e], 4), 0) << "forward and backward P differ at z = " << x;
      if (std::isnan(x)) {
        EXPECT_TRUE(std::isnan(p[e]) && std::isnan(dp[e])) << kernels->name;
        continue;
      }
      const double want = sigmoid64(x), want_d = want * (1.0 - want);
      // Relative 1e-6 (a few ulp) while the result is a normal float; below, within 2^-126 absolute.
      const double tiny = std::ldexp(1.0, -126);
      EXPECT_NEAR(p[e], want, std::max(1e-6 * want, tiny)) << kernels->name << " sigmoid(" << x << ")";
      const double want_d64 = x > 0 ? std::exp(-x) / ((1 + std::exp(-x)) * (1 + std::exp(-x))) : want_d;
      EXPECT_NEAR(dp[e], want_d64, std::max(2e-6 * want_d64, tiny)) << kernels->name << " sigmoid'(" << x << ")";
    }
  }
}

// The mask and the ALiBi distance (from its own base: the mask's plus alibi_offset), element by
// element, in both orientations, with padding.
TEST(CpuKernels, TileBandMatchesTheDefinition) {
  std::mt19937 rng(11);
  for (const CpuKernels* kernels : builds()) {
    for (int trial = 0; trial < 200; ++trial) {
      const int64_t rows_alloc = 1 + rng() % 20, cols_alloc = kernels->nr * (1 + rng() % 3);
      TileBand band{};
      band.base = static_cast<int64_t>(rng() % 60) - 30;
      band.alibi_base = band.base + (rng() % 2 ? static_cast<int64_t>(rng() % 41) - 20 : 0);
      band.row_step = rng() % 2 ? 1 : -1;
      band.col_step = -band.row_step;
      band.left = rng() % 4 ? static_cast<int64_t>(rng() % 12) : kBandLimit;
      band.right = rng() % 4 ? static_cast<int64_t>(rng() % 12) : kBandLimit;
      band.rows = 1 + static_cast<int64_t>(rng() % rows_alloc);
      band.cols = 1 + static_cast<int64_t>(rng() % cols_alloc);
      band.check_band = rng() % 4 != 0;
      band.scale = 0.5f;
      band.bias = -1.0f;
      band.slope = rng() % 2 ? 0.25f : 0.0f;
      std::vector<float> s(static_cast<size_t>(rows_alloc * cols_alloc)), ds(s.size());
      for (float& x : s) x = static_cast<float>(rng() % 100) / 25.0f - 2.0f;
      for (float& x : ds) x = 1.5f;
      std::vector<float> z = s;
      kernels->sigmoid_grad_tile(band, z.data(), ds.data(), cols_alloc, rows_alloc, cols_alloc);
      for (int64_t r = 0; r < rows_alloc; ++r) {
        for (int64_t c = 0; c < cols_alloc; ++c) {
          const int64_t d = band.base + band.row_step * r + band.col_step * c;
          const int64_t a = band.alibi_base + band.row_step * r + band.col_step * c;
          const bool visible =
              r < band.rows && c < band.cols && (!band.check_band || (-band.right <= d && d <= band.left));
          const size_t e = static_cast<size_t>(r * cols_alloc + c);
          if (!visible) {
            ASSERT_TRUE(z[e] == 0.0f && ds[e] == 0.0f) << kernels->name << " trial " << trial << " r " << r << " c " << c;
            continue;
          }
          const double want = sigmoid64(0.5 * s[e] - 1.0 - band.slope * std::abs(static_cast<double>(a)));
          ASSERT_NEAR(z[e], want, 1e-6) << kernels->name << " trial " << trial << " r " << r << " c " << c;
          ASSERT_NEAR(ds[e], 1.5 * want * (1 - want), 1e-6) << kernels->name << " trial " << trial;
        }
      }
    }
  }
}

}  // namespace
}  // namespace flash_sigmoid::cpu_impl

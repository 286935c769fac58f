// Layer: CPU implementation. The AVX2 build of the CPU kernels (cpu_kernels_impl.hpp): 8 fp32
// lanes and fused multiply-add, compiled for AVX2+FMA by a target pragma that covers only the
// kernel templates below it, so the rest of the library (and every standard-library function,
// included before the pragma) stays baseline x86-64. Nothing compiled under the pragma may run
// before avx2_kernels() (cpu_kernels.cpp) has checked the CPU; avx2_kernels_unchecked() itself is
// compiled for the baseline and only takes addresses.
#include "cpu_kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FLASH_SIGMOID_CPU_AVX2 1
#include <immintrin.h>

#include <cstdint>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#include "cpu_kernels_impl.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

struct Avx2Isa {
  static constexpr int kLanes = 8;
  static constexpr int kMr = 6;
  static constexpr int kNr = 2 * kLanes;
  using F = float __attribute__((vector_size(32)));
  using I = int32_t __attribute__((vector_size(32)));
  using U16 = uint16_t __attribute__((vector_size(16)));
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F splat(float x) { return _mm256_set1_ps(x); }
};

}  // namespace
}  // namespace flash_sigmoid::cpu_impl

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

namespace flash_sigmoid::cpu_impl {

// The table of the AVX2 kernels, or nullptr where this build has none; the caller checks the CPU.
const CpuKernels* avx2_kernels_unchecked() {
#if defined(FLASH_SIGMOID_CPU_AVX2)
  static const CpuKernels k{"avx2",
                            Avx2Isa::kNr,
                            &kernels::gemm<Avx2Isa>,
                            &kernels::sigmoid_tile<Avx2Isa>,
                            &kernels::sigmoid_grad_tile<Avx2Isa>,
                            &kernels::widen<Avx2Isa>};
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace flash_sigmoid::cpu_impl

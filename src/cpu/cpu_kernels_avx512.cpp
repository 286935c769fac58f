// Layer: CPU implementation. The AVX-512 build of the CPU kernels (cpu_kernels_impl.hpp): 16 fp32
// lanes and fused multiply-add in 32 vector registers, so the GEMM holds a 12 x 32 block of C
// (24 registers). Its column granularity (kNr) is one vector, 16 floats, so that the tile sizes of
// cpu_tiles.hpp (48, 72, 96) and head dims padded to 16 need no wider padding; a last panel of
// one vector covers n % 32. Compiled for AVX-512F by a target pragma that covers only the kernel
// templates (as in cpu_kernels_avx2.cpp, whose comment says why); avx512_kernels_unchecked() is
// compiled for the baseline and only takes addresses, and runs nothing before avx512_kernels()
// (cpu_kernels.cpp) has checked the CPU.
#include "cpu_kernels.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FLASH_SIGMOID_CPU_AVX512 1
#include <immintrin.h>

#include <cstdint>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
#endif

#include "cpu_kernels_impl.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

struct Avx512Isa {
  static constexpr int kLanes = 16;
  static constexpr int kMr = 12;
  static constexpr int kNr = kLanes;
  using F = float __attribute__((vector_size(64)));
  using I = int32_t __attribute__((vector_size(64)));
  using U16 = uint16_t __attribute__((vector_size(32)));
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F splat(float x) { return _mm512_set1_ps(x); }
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

// The table of the AVX-512 kernels, or nullptr where this build has none; the caller checks the CPU.
const CpuKernels* avx512_kernels_unchecked() {
#if defined(FLASH_SIGMOID_CPU_AVX512)
  static const CpuKernels k{"avx512",
                            Avx512Isa::kNr,
                            &kernels::gemm<Avx512Isa>,
                            &kernels::sigmoid_tile<Avx512Isa>,
                            &kernels::sigmoid_grad_tile<Avx512Isa>,
                            &kernels::widen<Avx512Isa>};
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace flash_sigmoid::cpu_impl

// Layer: CPU implementation. Chooses the CPU kernels (cpu_kernels.hpp) for a call: the AVX-512
// build where the CPU has AVX-512F, else the AVX2 build where it has AVX2 and FMA, else the
// portable one; FLASH_SIGMOID_CPU_KERNELS overrides.
#include "cpu_kernels.hpp"

#include <cstdlib>
#include <cstring>

namespace flash_sigmoid::cpu_impl {

const CpuKernels* avx2_kernels_unchecked();    // cpu_kernels_avx2.cpp
const CpuKernels* avx512_kernels_unchecked();  // cpu_kernels_avx512.cpp

const CpuKernels* avx2_kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported ? avx2_kernels_unchecked() : nullptr;
#else
  return nullptr;
#endif
}

const CpuKernels* avx512_kernels() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                                __builtin_cpu_supports("fma");
  return supported ? avx512_kernels_unchecked() : nullptr;
#else
  return nullptr;
#endif
}

const CpuKernels& select_kernels() {
  const char* choice = std::getenv("FLASH_SIGMOID_CPU_KERNELS");
  if (choice && std::strcmp(choice, "portable") == 0) return portable_kernels();
  const CpuKernels* avx2 = avx2_kernels();
  if (choice && std::strcmp(choice, "avx2") == 0) return avx2 ? *avx2 : portable_kernels();
  if (const CpuKernels* avx512 = avx512_kernels()) return *avx512;
  return avx2 ? *avx2 : portable_kernels();
}

}  // namespace flash_sigmoid::cpu_impl

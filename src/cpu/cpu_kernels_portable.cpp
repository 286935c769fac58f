// Layer: CPU implementation. The portable build of the CPU kernels (cpu_kernels_impl.hpp): 4 fp32
// lanes of GCC/Clang vector extensions, i.e. SSE2 on any x86-64 CPU and NEON on AArch64, with a
// separate multiply and add (the x86-64 baseline has no FMA). Runs wherever the library runs.
#include <cstdint>

#include "cpu_kernels.hpp"
#include "cpu_kernels_impl.hpp"

namespace flash_sigmoid::cpu_impl {
namespace {

struct PortableIsa {
  static constexpr int kLanes = 4;
  static constexpr int kMr = 6;
  static constexpr int kNr = 2 * kLanes;
  using F = float __attribute__((vector_size(16)));
  using I = int32_t __attribute__((vector_size(16)));
  using U16 = uint16_t __attribute__((vector_size(8)));
  static F fma(F a, F b, F c) { return a * b + c; }
  static F splat(float x) { return F{x, x, x, x}; }
};

}  // namespace

const CpuKernels& portable_kernels() {
  static const CpuKernels k = kernels::make_kernels<PortableIsa>("portable");
  return k;
}

}  // namespace flash_sigmoid::cpu_impl

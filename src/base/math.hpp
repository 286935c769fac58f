// Layer: base (below policies and kernels). Math wrappers, each named by the PTX instruction it issues on the
// device. On the host (policy tests, CPU-side checks) each falls back to the exact function the
// instruction approximates.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/host_device.hpp"

namespace flash_sigmoid {

// 2^x, flushing subnormal results to zero; 2^(+inf) = +inf, 2^(-inf) = 0.
FLASH_SIGMOID_HOST_DEVICE float ex2_approx_ftz_f32(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::exp2(x);
#endif
}

// 1/x (about 1 ulp); rcp(+inf) = 0.
FLASH_SIGMOID_HOST_DEVICE float rcp_approx_ftz_f32(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return 1.0f / x;
#endif
}

// tanh(x) with about 2^-11 relative error (sm_75+).
FLASH_SIGMOID_HOST_DEVICE float tanh_approx_f32(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return std::tanh(x);
#endif
}

FLASH_SIGMOID_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

FLASH_SIGMOID_HOST_DEVICE float float_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// How far rcp_fma_f32 refines the bit-trick estimate r = 0x7EF311C3 - bits(d), whose relative error
// e = 1 - d r is at most 5.1e-2 (measured exhaustively over the mantissas, tools/rcp_error.py):
//   kCubic:   one third-order step r (1 + e + e^2), error e^3 <= 1.29e-4, three FFMAs. Enough where
//             the result is rounded to fp16/bf16 (half an ulp is at least 2.4e-4 relative).
//   kQuartic: two Newton steps r (1 + e), error e^4 <= 6.5e-6, four FFMAs. For 1 - 1/d near
//             d = 1, where an error of 1e-4 would swamp the difference.
enum class RcpRefinement { kCubic, kQuartic };

// 1/d[j] for N normal positive d on the FMA pipes, no special-function op.
// Written stage by stage over the N values: each stage's N instructions are independent and issue
// back to back, where N chains of 4-5 dependent instructions evaluated one after another would
// make every instruction wait for its predecessor's latency (the kernels have only two warps per
// scheduler to hide it).
template <RcpRefinement kRefinement, int N>
FLASH_SIGMOID_HOST_DEVICE void rcp_fma_f32(const float (&d)[N], float (&r)[N]) {
  float e[N];
  FLASH_SIGMOID_UNROLL
  for (int j = 0; j < N; ++j) r[j] = float_from_bits(0x7EF311C3u - float_bits(d[j]));
  if constexpr (kRefinement == RcpRefinement::kCubic) {
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) e[j] = std::fma(-d[j], r[j], 1.0f);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) e[j] = std::fma(e[j], e[j], e[j]);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) r[j] = std::fma(r[j], e[j], r[j]);
  } else {
    FLASH_SIGMOID_UNROLL
    for (int step = 0; step < 2; ++step) {
      FLASH_SIGMOID_UNROLL
      for (int j = 0; j < N; ++j) e[j] = std::fma(-d[j], r[j], 1.0f);
      FLASH_SIGMOID_UNROLL
      for (int j = 0; j < N; ++j) r[j] = std::fma(r[j], e[j], r[j]);
    }
  }
}

template <RcpRefinement kRefinement>
FLASH_SIGMOID_HOST_DEVICE float rcp_fma_f32(float d) {
  float dv[1] = {d};
  float r[1];
  rcp_fma_f32<kRefinement>(dv, r);
  return r[0];
}

}  // namespace flash_sigmoid

// Layer: common kernel parts. Math wrappers, each named by the PTX instruction it issues on the
// device. On the host (policy tests, CPU-side checks) each falls back to the exact function the
// instruction approximates.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "policies/host_device.hpp"

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

// 1/d for normal positive d on the FMA pipes, no special-function op: the bit-trick estimate
// 0x7EF311C3 - bits(d) (relative error <= 5.1e-2) refined by two Newton steps, each squaring the
// error: max relative error 6.6e-6 over d in [1, 2^125] (measured exhaustively, tools/ has it).
FLASH_SIGMOID_HOST_DEVICE float rcp_newton_fma_f32(float d) {
  float r = float_from_bits(0x7EF311C3u - float_bits(d));
  float e = std::fma(-d, r, 1.0f);
  r = std::fma(r, e, r);
  e = std::fma(-d, r, 1.0f);
  r = std::fma(r, e, r);
  return r;
}

}  // namespace flash_sigmoid

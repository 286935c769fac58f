// Layer: policies. The score function: sigmoid and its derivative, in one struct per algorithm.
//
// Kernels evaluate p = value_prescaled(x) with x = z * kInputScale, so they fold kInputScale into
// scale, bias and ALiBi once instead of multiplying every element. The derivative is expressed
// through p (dz = dp * p * (1 - p)) so the backward never re-evaluates a special function for it.
// Masking is applied to p after the activation, so no +-inf ever reaches an approximate instruction.
// DESIGN §5 and docs/numerics.md measure both formulations.
#pragma once

#include "common/math.hpp"
#include "policies/host_device.hpp"

namespace flash_sigmoid {

// sigma(z) = 1 / (1 + 2^(-z log2 e)) with one special-function op: ex2.approx, then the reciprocal
// by Newton steps on the FMA pipes (rcp_newton_fma_f32). Relative error < 7e-6 everywhere,
// including z << 0 where bias = -log(seqlen) puts most scores. x is clamped at -125 so that
// 1 + 2^-x stays a normal float; below that sigma is 2^-125 instead of smaller (absolute error
// < 3e-38). The default.
struct SigmoidViaExp2 {
  static constexpr const char* kName = "sigmoid_via_exp2";
  static constexpr float kInputScale = 1.4426950408889634f;  // log2(e)

  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) {
    x = x < -125.0f ? -125.0f : x;  // written so that NaN passes through (fmaxf would drop it)
    return rcp_newton_fma_f32(1.0f + ex2_approx_ftz_f32(-x));
  }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  // d sigma / dz, from sigma itself.
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return p * (1.0f - p); }
};

// The same with rcp.approx for the reciprocal: two special-function ops. Kept to measure the FMA
// reciprocal against (tests/cpp/test_policies.cpp, docs/numerics.md); no kernel is built with it.
struct SigmoidViaExp2Rcp {
  static constexpr const char* kName = "sigmoid_via_exp2_rcp";
  static constexpr float kInputScale = 1.4426950408889634f;

  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) {
    return rcp_approx_ftz_f32(1.0f + ex2_approx_ftz_f32(-x));
  }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return p * (1.0f - p); }
};

// sigma(z) = 0.5 + 0.5 tanh(z / 2): one special-function op but an absolute error of ~1e-3/2^11,
// so its relative error reaches 100% below z = -12 (Apple's FlashSigmoid). Kept as a named
// option so the difference stays measurable.
struct SigmoidViaTanh {
  static constexpr const char* kName = "sigmoid_via_tanh";
  static constexpr float kInputScale = 0.5f;

  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) { return 0.5f + 0.5f * tanh_approx_f32(x); }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return p * (1.0f - p); }
};

}  // namespace flash_sigmoid

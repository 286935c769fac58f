// Layer: policies. The score function: sigmoid and its derivative, in one struct per algorithm.
//
// Kernels evaluate p = sigma(z) through values_prescaled<N>(x) (the backward through
// values_prescaled_for_derivative<N>) with x = z * kInputScale, so they fold kInputScale into
// scale, bias and ALiBi once instead of multiplying every element. The derivative is expressed
// through p (dz = dp * p * (1 - p)) so the backward never re-evaluates a special function for it.
// Masking is applied to p after the activation, so no +-inf ever reaches an approximate instruction.
// DESIGN §5 and docs/numerics.md measure both formulations.
#pragma once

#include <cmath>

#include "base/math.hpp"
#include "base/host_device.hpp"

namespace flash_sigmoid {

// d sigma / dz = p (1 - p) from p = sigma(z), as p - p^2 in one fused multiply-add: one
// instruction instead of two (the backward evaluates it per score element), and rounded once, so
// at least as accurate as p * (1 - p).
FLASH_SIGMOID_HOST_DEVICE float derivative_of_sigmoid(float p) { return std::fma(-p, p, p); }

// One value through a score function's N-value form (each defines values_prescaled<N> once). Also
// the host's reference of what the forward kernels compute.
template <class ScoreFunction>
FLASH_SIGMOID_HOST_DEVICE float value_prescaled_one(float x) {
  float v[1] = {x};
  ScoreFunction::template values_prescaled<1>(v);
  return v[0];
}

// sigma(z) = 1 / (1 + 2^(-z log2 e)) with one special-function op: ex2.approx, then the reciprocal
// on the FMA pipes (rcp_fma_f32). The forward's value takes the cubic refinement: relative error
// < 1.4e-4 (the reciprocal's 1.29e-4 plus rounding), including z << 0 where bias = -log(seqlen)
// puts most scores, below half an ulp of the fp16/bf16 P it is rounded to (docs/numerics.md
// measures the attention error at the floor). The backward's takes the quartic one (< 1e-5), so
// that 1 - p stays accurate near p = 1. x is clamped at -125: for d = 1 + 2^-x >= 2^126 the
// bit-trick estimate of 1/d would be subnormal and flushed to zero; below the clamp sigma is
// 2^-125 instead of smaller (absolute error < 3e-38). The default.
struct SigmoidViaExp2 {
  static constexpr const char* kName = "sigmoid_via_exp2";
  static constexpr float kInputScale = 1.4426950408889634f;  // log2(e)
  static constexpr float kOutputScale = 1.0f;  // values are sigma itself
  static constexpr bool kReluPack = false;

  // x[j] <- sigma(x[j] / kInputScale) for N independent values, stage by stage (see rcp_fma_f32):
  // kernels evaluate a fragment's scores through this, a few at a time.
  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled(float (&x)[N]) {
    evaluate<RcpRefinement::kCubic>(x);
  }
  // The same, accurate enough that derivative_from_value(p) = p (1 - p) is (the backward).
  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled_for_derivative(float (&x)[N]) {
    evaluate<RcpRefinement::kQuartic>(x);
  }
  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) { return value_prescaled_one<SigmoidViaExp2>(x); }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  // d sigma / dz, from sigma itself.
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return derivative_of_sigmoid(p); }

 private:
  template <RcpRefinement kRefinement, int N>
  FLASH_SIGMOID_HOST_DEVICE static void evaluate(float (&x)[N]) {
    float d[N];
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = x[j] < -125.0f ? -125.0f : x[j];  // NaN passes (fmaxf would drop it)
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = ex2_approx_ftz_f32(-d[j]);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = 1.0f + d[j];
    rcp_fma_f32<kRefinement>(d, x);
  }
};

// The forward's form of SigmoidViaExp2 without the clamp (one instruction fewer per score): the
// kernel keeps P / kOutputScale and multiplies O by kOutputScale once, at the end. With
// c = kOutputScale = 2^-15 the reciprocal is taken of d = c (1 + 2^-x) = fma(c, 2^-x, c) (rounded as
// 1 + 2^-x, c being a power of two), which stays below 2^113 for every finite ex2 result, so the
// bit-trick estimate of 1/d is always a normal number and 1/d = sigma / c carries SigmoidViaExp2's
// relative error (< 1.4e-4) over the whole range, where SigmoidViaExp2 needs its clamp at x = -125.
// c = 2^-15 also keeps P / c <= 2^15 inside fp16's range and lifts tiny P (and its products with
// V in the tensor cores, which flush subnormals) 15 binades above the bottom of the float range.
// When ex2 overflows (x < -128, sigma < 2^-128) the estimate of 1/inf refines to -inf, and the
// forward's packing into fp16/bf16 (cvt.rn.relu, ReluPack below) turns it into 0; NaN stays NaN.
// kInputScale is -log2(e), so the kernels' one FFMA per score (scale, bias and ALiBi folded) already
// yields -x and ex2 needs no negation. Only the forward uses it (values_prescaled_for_derivative is
// the backward's and is not defined): its values are sigma / c, not sigma, and may be -inf.
struct SigmoidViaExp2Relu {
  static constexpr const char* kName = "sigmoid_via_exp2_relu";
  static constexpr float kInputScale = -1.4426950408889634f;  // -log2(e)
  static constexpr float kOutputScale = 3.0517578125e-05f;   // c = 2^-15
  static constexpr bool kReluPack = true;

  // x[j] <- sigma(x[j] / kInputScale) / kOutputScale, or -inf below sigma = 2^-128 (see above).
  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled(float (&x)[N]) {
    float d[N];
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = ex2_approx_ftz_f32(x[j]);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = std::fma(kOutputScale, d[j], kOutputScale);
    rcp_fma_f32<RcpRefinement::kCubic>(d, x);
  }
  // sigma(z) as the forward's P carries it (times kOutputScale, negative values packed as 0): the
  // host's reference of what the kernels compute.
  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) {
    const float scaled = value_prescaled_one<SigmoidViaExp2Relu>(x);
    return (scaled > 0.0f ? scaled : (scaled != scaled ? scaled : 0.0f)) * kOutputScale;
  }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
};

// SigmoidViaExp2Relu with every kRcpEvery-th value's reciprocal taken by rcp.approx (a second
// special-function op) instead of the FMA-pipe estimate: 2 instructions instead of 5 for those
// values, which balances the special-function unit against the issue slots where the forward is
// issue-bound (D = 64; HOPPER.md §4). Same values to rounding, each at least as accurate:
// rcp.approx of d = fma(c, 2^x, c) < 2^113 is a normal number with about 1 ulp of error, and
// rcp(+inf) = 0 is packed as 0. Which values take which path depends only on the position j within
// the N-value call (j % kRcpEvery == 0: rcp.approx), so N must be 1 or a multiple of kRcpEvery.
template <int kRcpEvery>
struct SigmoidViaExp2ReluMix {
  static_assert(kRcpEvery >= 1, "every value, or one in kRcpEvery");
  static constexpr const char* kName = "sigmoid_via_exp2_relu_mix";
  static constexpr float kInputScale = SigmoidViaExp2Relu::kInputScale;
  static constexpr float kOutputScale = SigmoidViaExp2Relu::kOutputScale;
  static constexpr bool kReluPack = true;

  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled(float (&x)[N]) {
    static_assert(N == 1 || N % kRcpEvery == 0, "whole groups of kRcpEvery values");
    float d[N];
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = ex2_approx_ftz_f32(x[j]);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) d[j] = std::fma(kOutputScale, d[j], kOutputScale);
    constexpr int kViaFma = N == 1 ? 0 : N - N / kRcpEvery;
    if constexpr (kViaFma > 0) {
      float df[kViaFma], rf[kViaFma];
      FLASH_SIGMOID_UNROLL
      for (int j = 0, f = 0; j < N; ++j) {
        if (j % kRcpEvery != 0) df[f++] = d[j];
      }
      rcp_fma_f32<RcpRefinement::kCubic>(df, rf);
      FLASH_SIGMOID_UNROLL
      for (int j = 0, f = 0; j < N; ++j) x[j] = j % kRcpEvery == 0 ? rcp_approx_ftz_f32(d[j]) : rf[f++];
    } else {
      FLASH_SIGMOID_UNROLL
      for (int j = 0; j < N; ++j) x[j] = rcp_approx_ftz_f32(d[j]);
    }
  }
  // sigma(z) as the forward's P carries it (the rcp.approx path: position 0).
  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) {
    const float scaled = value_prescaled_one<SigmoidViaExp2ReluMix>(x);
    return (scaled > 0.0f ? scaled : (scaled != scaled ? scaled : 0.0f)) * kOutputScale;
  }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
};

// The same with rcp.approx for the reciprocal: two special-function ops. Kept to measure the FMA
// reciprocal against (tests/cpp/test_policies.cpp, docs/numerics.md); no kernel is built with it.
struct SigmoidViaExp2Rcp {
  static constexpr const char* kName = "sigmoid_via_exp2_rcp";
  static constexpr float kInputScale = 1.4426950408889634f;
  static constexpr float kOutputScale = 1.0f;  // values are sigma itself
  static constexpr bool kReluPack = false;

  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled(float (&x)[N]) {
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) x[j] = rcp_approx_ftz_f32(1.0f + ex2_approx_ftz_f32(-x[j]));
  }
  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled_for_derivative(float (&x)[N]) {
    values_prescaled(x);
  }
  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) { return value_prescaled_one<SigmoidViaExp2Rcp>(x); }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return derivative_of_sigmoid(p); }
};

// sigma(z) = 0.5 + 0.5 tanh(z / 2): one special-function op but an absolute error of ~1e-3/2^11,
// so its relative error reaches 100% below z = -12 (Apple's FlashSigmoid). Kept as a named
// option so the difference stays measurable.
struct SigmoidViaTanh {
  static constexpr const char* kName = "sigmoid_via_tanh";
  static constexpr float kInputScale = 0.5f;
  static constexpr float kOutputScale = 1.0f;  // values are sigma itself
  static constexpr bool kReluPack = false;

  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled(float (&x)[N]) {
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) x[j] = tanh_approx_f32(x[j]);
    FLASH_SIGMOID_UNROLL
    for (int j = 0; j < N; ++j) x[j] = 0.5f + 0.5f * x[j];
  }
  template <int N>
  FLASH_SIGMOID_HOST_DEVICE static void values_prescaled_for_derivative(float (&x)[N]) {
    values_prescaled(x);
  }
  FLASH_SIGMOID_HOST_DEVICE static float value_prescaled(float x) { return value_prescaled_one<SigmoidViaTanh>(x); }
  FLASH_SIGMOID_HOST_DEVICE static float value(float z) { return value_prescaled(z * kInputScale); }
  FLASH_SIGMOID_HOST_DEVICE static float derivative_from_value(float p) { return derivative_of_sigmoid(p); }
};

}  // namespace flash_sigmoid

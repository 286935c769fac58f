// Layer: CPU implementation. fp16/bf16 <-> fp32 conversions and the row loads/stores that move a
// [head_dim] row of a strided tensor to and from an fp32 buffer.
//
// Owns: bit-exact IEEE conversions (round to nearest even; fp16 overflow gives +-inf; NaN stays
// NaN with its sign). Deliberately does not use the GPU code's types or intrinsics, nor compiler
// extensions such as _Float16: the CPU implementation is written from DESIGN §1 alone.
#pragma once

#include <cstdint>
#include <cstring>

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

inline uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

// binary16 -> binary32 is exact: every half value (subnormals included) is a float.
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24, exact in float.
  const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
  return sign ? -magnitude : magnitude;
}

// binary32 -> binary16, round to nearest even. |x| >= 65520 (half-way between the largest half,
// 65504, and 2^16) rounds to inf, as IEEE prescribes.
inline uint16_t float_to_half(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) {  // NaN: keep the top payload bits and make sure it stays a (quiet) NaN
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow and inf
  if (abs >= 0x38800000u) {                                              // normal half (>= 2^-14)
    uint32_t h = ((abs >> 23) - 112u) << 10 | ((abs >> 13) & 0x3ffu);
    const uint32_t rest = abs & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry rounds up the exponent
    return static_cast<uint16_t>(sign | h);
  }
  // Subnormal half or zero: the result is round(|x| / 2^-24) in units of 2^-24.
  const uint32_t exponent = abs >> 23;
  if (exponent < 102u) return sign;  // |x| < 2^-25: rounds to zero (float subnormals included)
  const uint32_t significand = (abs & 0x7fffffu) | 0x800000u;  // |x| = significand * 2^(exponent-150)
  const uint32_t shift = 126u - exponent;                      // 14..24
  uint32_t h = significand >> shift;
  const uint32_t rest = significand & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;  // 0x400 is the smallest normal
  return static_cast<uint16_t>(sign | h);
}

inline float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// binary32 -> bfloat16, round to nearest even; overflow carries into the exponent and gives inf.
inline uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Element offset of [b, s, h, 0]; stride_dim is 1 (an API precondition).
inline int64_t row_offset(const FlashSigmoidTensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.stride_batch + s * t.stride_seq + h * t.stride_head;
}

// dst[0, n) = row [b, s, h, 0:n) of t, in fp32.
inline void load_row(const FlashSigmoidTensor& t, FlashSigmoidDType dtype, int64_t b, int64_t s, int64_t h, int64_t n,
                     float* dst) {
  const int64_t offset = row_offset(t, b, s, h);
  switch (dtype) {
    case FLASH_SIGMOID_FLOAT32: {
      const float* src = static_cast<const float*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = src[d];
      break;
    }
    case FLASH_SIGMOID_FLOAT16: {
      const uint16_t* src = static_cast<const uint16_t*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = half_to_float(src[d]);
      break;
    }
    case FLASH_SIGMOID_BFLOAT16: {
      const uint16_t* src = static_cast<const uint16_t*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = bf16_to_float(src[d]);
      break;
    }
  }
}

// Row [b, s, h, 0:n) of t = src[0, n), rounded to the tensor's dtype.
inline void store_row(const FlashSigmoidTensor& t, FlashSigmoidDType dtype, int64_t b, int64_t s, int64_t h, int64_t n,
                      const float* src) {
  const int64_t offset = row_offset(t, b, s, h);
  switch (dtype) {
    case FLASH_SIGMOID_FLOAT32: {
      float* dst = static_cast<float*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = src[d];
      break;
    }
    case FLASH_SIGMOID_FLOAT16: {
      uint16_t* dst = static_cast<uint16_t*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = float_to_half(src[d]);
      break;
    }
    case FLASH_SIGMOID_BFLOAT16: {
      uint16_t* dst = static_cast<uint16_t*>(t.data) + offset;
      for (int64_t d = 0; d < n; ++d) dst[d] = float_to_bf16(src[d]);
      break;
    }
  }
}

}  // namespace flash_sigmoid::cpu_impl

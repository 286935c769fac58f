// Layer: CPU implementation. The bodies of the CpuKernels entries (cpu_kernels.hpp), written once as
// templates over an instruction-set description `Isa`:
//
//   struct Isa {
//     static constexpr int kLanes;                 // fp32 lanes per vector
//     static constexpr int kMr;                    // rows of C per GEMM register block
//     static constexpr int kNr;                    // the GEMM's column granularity (kLanes or 2 kLanes)
//     using F, I, U16;                             // float, int32, uint16 vectors of kLanes lanes
//     static F fma(F a, F b, F c);                 // a * b + c (fused where the ISA has it)
//     static F splat(float x);                     // x in every lane (one broadcast instruction)
//   };
//
// Each translation unit that includes this file instantiates it for its own Isa, so the AVX2 copy
// can be compiled for AVX2 (cpu_kernels_avx2.cpp) without the portable copy being touched. Every
// function here is a template on Isa: nothing has external linkage that another build could also
// define. Include only after every standard header the including file needs.
//
// The GEMM is the classic register-blocked outer product: a kMr x (2 * kLanes) block of C lives in
// 2 * kMr vector registers (AVX2: 12 for kMr = 6, leaving 3 of 16 for the two B vectors and one
// broadcast of A; AVX-512: 24 of 32 for kMr = 12) while the reduction index runs; each step is two
// loads of B, kMr broadcasts of A and 2 * kMr FMAs, so on a two-FMA-pipe core it is FMA-bound, not
// load-bound. Where kNr is one vector, a last panel of one vector column covers n % (2 kLanes).
#pragma once

#include "cpu_kernels.hpp"

namespace flash_sigmoid::cpu_impl::kernels {

template <class Isa>
inline typename Isa::F load(const float* p) {
  typename Isa::F v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <class Isa>
inline void store(float* p, typename Isa::F v) {
  __builtin_memcpy(p, &v, sizeof v);
}

template <class Isa>
inline typename Isa::F splat(float x) {
  return Isa::splat(x);
}

template <class Isa>
inline typename Isa::I splat_i(int32_t x) {
  return typename Isa::I{} + x;
}

// Bit casts between the float and int32 vectors of one Isa.
template <class Isa>
inline typename Isa::I as_int(typename Isa::F v) {
  return (typename Isa::I)v;
}
template <class Isa>
inline typename Isa::F as_float(typename Isa::I v) {
  return (typename Isa::F)v;
}

// mask ? a : b, lane by lane; mask lanes are all ones or all zeros (a comparison's result).
template <class Isa>
inline typename Isa::F select(typename Isa::I mask, typename Isa::F a, typename Isa::F b) {
  return as_float<Isa>((mask & as_int<Isa>(a)) | (~mask & as_int<Isa>(b)));
}

template <class Isa>
inline typename Isa::I select_i(typename Isa::I mask, typename Isa::I a, typename Isa::I b) {
  return (mask & a) | (~mask & b);
}

template <class Isa>
inline typename Isa::I lane_index() {
  typename Isa::I v;
  for (int l = 0; l < Isa::kLanes; ++l) v[l] = l;
  return v;
}

// ---- GEMM -----------------------------------------------------------------------------------------

// A kRows x (kVecs * kLanes) block of C in registers while the reduction index runs.
template <class Isa, int kRows, int kVecs>
inline void gemm_block(int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate) {
  using F = typename Isa::F;
  constexpr int kL = Isa::kLanes;
  F acc[kRows][kVecs];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) acc[r][v] = accumulate ? load<Isa>(c + r * ldc + v * kL) : F{};
  }
  for (int64_t t = 0; t < k; ++t) {
    F b_t[kVecs];
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) b_t[v] = load<Isa>(b + t * ldb + v * kL);
    const float* a_t = a + t * a_cs;
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const F a_rt = splat<Isa>(a_t[r * a_rs]);
#pragma GCC unroll 2
      for (int v = 0; v < kVecs; ++v) acc[r][v] = Isa::fma(a_rt, b_t[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < kVecs; ++v) store<Isa>(c + r * ldc + v * kL, acc[r][v]);
  }
}

// The last `rows` (< Isa::kMr) rows of a column panel: the block of exactly that height.
template <class Isa, int kVecs, int kRows>
inline void gemm_row_tail(int64_t rows, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
                          int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if constexpr (kRows > 0) {
    if (rows == kRows) return gemm_block<Isa, kRows, kVecs>(k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
    gemm_row_tail<Isa, kVecs, kRows - 1>(rows, k, a, a_rs, a_cs, b, ldb, c, ldc, accumulate);
  }
}

// One column panel of B (k x kVecs kLanes, small enough for L1) against every row block of A.
template <class Isa, int kVecs>
inline void gemm_panel(int64_t m, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb,
                       float* c, int64_t ldc, bool accumulate) {
  constexpr int kMr = Isa::kMr;
  int64_t r = 0;
  for (; r + kMr <= m; r += kMr) {
    gemm_block<Isa, kMr, kVecs>(k, a + r * a_rs, a_rs, a_cs, b, ldb, c + r * ldc, ldc, accumulate);
  }
  gemm_row_tail<Isa, kVecs, kMr - 1>(m - r, k, a + r * a_rs, a_rs, a_cs, b, ldb, c + r * ldc, ldc, accumulate);
}

// Column panels of two vectors outside, row blocks of A inside; n is a multiple of Isa::kNr
// (two vectors, or one where the Isa says so: then a last panel of one vector).
template <class Isa>
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kL = Isa::kLanes;
  int64_t c0 = 0;
  for (; c0 + 2 * kL <= n; c0 += 2 * kL) gemm_panel<Isa, 2>(m, k, a, a_rs, a_cs, b + c0, ldb, c + c0, ldc, accumulate);
  if (c0 < n) gemm_panel<Isa, 1>(m, k, a, a_rs, a_cs, b + c0, ldb, c + c0, ldc, accumulate);
}

// ---- sigmoid ----------------------------------------------------------------------------------------

// e^x for x <= 0, lane by lane, within 2 ulp down to x = -87.33 (e^x = 2^-126, the smallest normal
// float); below that the result stays 2^-126 (NaN stays NaN). Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2 / 2, Cephes' degree-5 polynomial for e^r, and 2^n (n >= -126) built in the exponent
// bits. Holding the tail at 2^-126 rather than going subnormal keeps one scaling multiply; it moves
// a sigmoid below 1.2e-38 by less than 1.2e-38, far under any output's rounding (masked elements
// are exact zeros by a select, not by this function).
template <class Isa>
inline typename Isa::F exp_nonpositive(typename Isa::F x) {
  using F = typename Isa::F;
  using I = typename Isa::I;
  const F lowest = splat<Isa>(-87.3365478515625f);  // >= -126 ln2: n below stays >= -126
  x = select<Isa>(x < lowest, lowest, x);
  const F round_magic = splat<Isa>(12582912.0f);  // 1.5 * 2^23: rounds to nearest
  const F n = (x * splat<Isa>(1.44269504088896341f) + round_magic) - round_magic;
  F r = Isa::fma(n, splat<Isa>(-0.693359375f), x);  // ln2 in two parts; n * 0.693359375 is exact
  r = Isa::fma(n, splat<Isa>(2.12194440e-4f), r);
  F p = splat<Isa>(1.9875691500e-4f);
  p = Isa::fma(p, r, splat<Isa>(1.3981999507e-3f));
  p = Isa::fma(p, r, splat<Isa>(8.3334519073e-3f));
  p = Isa::fma(p, r, splat<Isa>(4.1665795894e-2f));
  p = Isa::fma(p, r, splat<Isa>(1.6666665459e-1f));
  p = Isa::fma(p, r, splat<Isa>(5.0000001201e-1f));
  const F e_r = Isa::fma(p, r * r, r) + splat<Isa>(1.0f);
  const I n_i = __builtin_convertvector(n, I);  // in [-126, 0]: 2^n is a normal float
  return e_r * as_float<Isa>((n_i + 127) << 23);
}

// sigmoid(z) = 1 / (1 + e^-z), the GPU default's formula, evaluated from e = e^-|z| in (0, 1] so
// that neither tail loses accuracy and nothing overflows: p = 1/(1+e) for z >= 0, e/(1+e) below;
// the derivative p (1 - p) = e / (1+e)^2 without the cancellation of 1 - p. One exact division.
template <class Isa>
inline void sigmoid_and_derivative(typename Isa::F z, typename Isa::F* p, typename Isa::F* dp_dz) {
  using F = typename Isa::F;
  const F minus_abs = as_float<Isa>(as_int<Isa>(z) | splat_i<Isa>(static_cast<int32_t>(0x80000000u)));
  const F e = exp_nonpositive<Isa>(minus_abs);
  const F rcp = splat<Isa>(1.0f) / (splat<Isa>(1.0f) + e);
  const F e_rcp = e * rcp;
  *p = select<Isa>(z >= F{}, rcp, e_rcp);
  *dp_dz = e_rcp * rcp;
}

template <class Isa, bool kGrad, bool kCheckBand, bool kAlibi>
void sigmoid_rows(const TileBand& band, float* z, float* dp, int64_t ld, int64_t rows_alloc, int64_t cols_alloc) {
  using F = typename Isa::F;
  using I = typename Isa::I;
  constexpr int kL = Isa::kLanes;
  // Everything the loop needs in locals: the stores through z and dp cannot then alias the band.
  const I lane_d = lane_index<Isa>() * band.col_step;  // d's change along a vector's lanes
  const I lanes = lane_index<Isa>();
  const I left = splat_i<Isa>(static_cast<int32_t>(band.left));
  const I minus_right = splat_i<Isa>(static_cast<int32_t>(-band.right));
  const F scale = splat<Isa>(band.scale), bias = splat<Isa>(band.bias), slope = splat<Isa>(band.slope);
  const int64_t rows = band.rows, cols = band.cols, base = band.base, alibi_base = band.alibi_base;
  const int row_step = band.row_step, col_step = band.col_step;
  for (int64_t r = 0; r < rows_alloc; ++r) {
    float* z_r = z + r * ld;
    float* dp_r = kGrad ? dp + r * ld : nullptr;
    if (r >= rows) {
      for (int64_t c = 0; c < cols_alloc; ++c) z_r[c] = 0.0f;
      if (kGrad) {
        for (int64_t c = 0; c < cols_alloc; ++c) dp_r[c] = 0.0f;
      }
      continue;
    }
    const int32_t d_row = static_cast<int32_t>(base + row_step * r);
    const int32_t a_row = static_cast<int32_t>(alibi_base + row_step * r);
    for (int64_t c0 = 0; c0 < cols_alloc; c0 += kL) {
      const I d = splat_i<Isa>(d_row + col_step * static_cast<int32_t>(c0)) + lane_d;
      F x = Isa::fma(load<Isa>(z_r + c0), scale, bias);
      if (kAlibi) {
        const I a = splat_i<Isa>(a_row + col_step * static_cast<int32_t>(c0)) + lane_d;
        x = x - slope * __builtin_convertvector(select_i<Isa>(a < I{}, -a, a), F);
      }
      F p, dsig;
      sigmoid_and_derivative<Isa>(x, &p, &dsig);
      I visible = lanes < splat_i<Isa>(static_cast<int32_t>(cols - c0));
      if (kCheckBand) visible &= (d >= minus_right) & (d <= left);
      store<Isa>(z_r + c0, select<Isa>(visible, p, F{}));
      if (kGrad) store<Isa>(dp_r + c0, select<Isa>(visible, load<Isa>(dp_r + c0) * dsig, F{}));
    }
  }
}

template <class Isa, bool kGrad>
void sigmoid_tile_any(const TileBand& band, float* z, float* dp, int64_t ld, int64_t rows_alloc, int64_t cols_alloc) {
  const bool alibi = band.slope != 0.0f;
  if (band.check_band) {
    if (alibi) return sigmoid_rows<Isa, kGrad, true, true>(band, z, dp, ld, rows_alloc, cols_alloc);
    return sigmoid_rows<Isa, kGrad, true, false>(band, z, dp, ld, rows_alloc, cols_alloc);
  }
  if (alibi) return sigmoid_rows<Isa, kGrad, false, true>(band, z, dp, ld, rows_alloc, cols_alloc);
  return sigmoid_rows<Isa, kGrad, false, false>(band, z, dp, ld, rows_alloc, cols_alloc);
}

template <class Isa>
void sigmoid_tile(const TileBand& band, float* z, int64_t ld, int64_t rows_alloc, int64_t cols_alloc) {
  sigmoid_tile_any<Isa, false>(band, z, nullptr, ld, rows_alloc, cols_alloc);
}

template <class Isa>
void sigmoid_grad_tile(const TileBand& band, float* z, float* dp, int64_t ld, int64_t rows_alloc, int64_t cols_alloc) {
  sigmoid_tile_any<Isa, true>(band, z, dp, ld, rows_alloc, cols_alloc);
}

// ---- conversions ------------------------------------------------------------------------------------

// kLanes binary16 values -> fp32, exact (branch-free form of the scalar half_to_float): the
// exponent is rebiased; inf/NaN get the rest of the exponent; zero and subnormals are renormalised
// by subtracting 2^-14, which is exact.
template <class Isa>
inline typename Isa::F half_lanes_to_float(typename Isa::I h) {
  using I = typename Isa::I;
  const I shifted_exp = splat_i<Isa>(0x7c00 << 13);
  I o = (h & 0x7fff) << 13;
  const I exp = o & shifted_exp;
  o += (127 - 15) << 23;
  const I inf_nan = o + ((128 - 16) << 23);
  const typename Isa::F sub = as_float<Isa>(o + (1 << 23)) - as_float<Isa>(splat_i<Isa>(113 << 23));
  I bits = select_i<Isa>(exp == shifted_exp, inf_nan, o);
  bits = select_i<Isa>(exp == I{}, as_int<Isa>(sub), bits);
  return as_float<Isa>(bits | ((h & 0x8000) << 16));
}

template <class Isa>
inline typename Isa::I load_u16_lanes(const uint16_t* p) {
  typename Isa::U16 v;
  __builtin_memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, typename Isa::I);
}

template <class Isa>
void widen(FlashSigmoidDType dtype, const void* src, int64_t n, float* dst) {
  constexpr int kL = Isa::kLanes;
  if (dtype == FLASH_SIGMOID_FLOAT32) {
    __builtin_memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  const bool half = dtype == FLASH_SIGMOID_FLOAT16;
  int64_t d = 0;
  for (; d + kL <= n; d += kL) {
    const typename Isa::I h = load_u16_lanes<Isa>(s + d);
    store<Isa>(dst + d, half ? half_lanes_to_float<Isa>(h) : as_float<Isa>(h << 16));
  }
  if (d < n) {  // the tail through one zero-padded vector
    uint16_t tail[kL] = {};
    for (int64_t t = d; t < n; ++t) tail[t - d] = s[t];
    const typename Isa::I h = load_u16_lanes<Isa>(tail);
    float out[kL];
    store<Isa>(out, half ? half_lanes_to_float<Isa>(h) : as_float<Isa>(h << 16));
    for (int64_t t = d; t < n; ++t) dst[t] = out[t - d];
  }
}

template <class Isa>
CpuKernels make_kernels(const char* name) {
  return CpuKernels{name, Isa::kNr, &gemm<Isa>, &sigmoid_tile<Isa>, &sigmoid_grad_tile<Isa>, &widen<Isa>};
}

}  // namespace flash_sigmoid::cpu_impl::kernels

// Layer: CPU implementation. The vectorized building blocks every CPU task is made of, behind one
// table of function pointers chosen once per call (select_kernels):
//
//   gemm           C (m x n) = or += A (m x k) * B (k x n)    (S = Q K^T, P V, dP, dV, dK, dQ)
//   sigmoid_tile   scores -> P = sigmoid(z) where visible, exactly 0 elsewhere    (the forward)
//   sigmoid_grad_tile  scores, dP -> P, dZ = dP * P * (1 - P)                    (the backward)
//   widen          one fp32/fp16/bf16 row -> fp32
//
// Three builds of the same templates (cpu_kernels_impl.hpp): "avx512" (16 lanes, FMA; x86-64 CPUs
// with AVX-512F), "avx2" (8 lanes, FMA; x86-64 CPUs with AVX2 and FMA), both detected at run time,
// and "portable" (4 lanes of GCC/Clang vector extensions: SSE2 on any x86-64, NEON on AArch64; no
// FMA). Each is deterministic on its own; they differ in rounding (FMA, tile padding) and are all
// tested against the fp64 oracle.
//
// Owns the arithmetic inside a tile. Does not own tiling, threads or the mask's geometry beyond
// the TileBand description the caller fills in.
#pragma once

#include <cstdint>

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Which elements of a score tile are visible, and their ALiBi distance. Element (r, c) of the tile
// is the pair (i, j) with  d = i + offset - j = base + row_step * r + col_step * c;  it is visible
// iff r < rows, c < cols and, when check_band, -right <= d <= left. Elements with r >= rows or
// c >= cols are padding (0 on output).
struct TileBand {
  int64_t base;
  int row_step, col_step;  // +1 or -1
  int64_t left, right;     // clamped to +-kBandLimit by the caller
  int64_t rows, cols;
  bool check_band;  // false: every element inside (rows, cols) is visible
  float scale, bias, slope;  // z = scale * s + bias - slope * |a|
  // a: the ALiBi distance, d plus the problem's alibi_offset, from its own base (clamped to
  // +-kBandLimit like `base`, so a tile's distances stay in int32) and the same steps as d.
  int64_t alibi_base;
};

// |d| and the band bounds are evaluated in int32 lanes; callers clamp to this.
constexpr int64_t kBandLimit = int64_t{1} << 30;

struct CpuKernels {
  const char* name;
  int64_t nr;  // the GEMM's column block: B rows and C rows hold multiples of nr floats

  // C[r * ldc + c] (+)= sum_{t < k} A(r, t) * B[t * ldb + c]  for r < m, c < n (n a multiple of nr),
  // A(r, t) = a[r * a_rs + t * a_cs]. Each C element sums t in ascending order, in fp32.
  void (*gemm)(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate);

  // z (rows_alloc x cols_alloc, row stride ld; cols_alloc a multiple of nr) holds scores s; it
  // becomes P: sigmoid(scale * s + bias - slope * |d|) where visible, else exactly 0.
  void (*sigmoid_tile)(const TileBand& band, float* z, int64_t ld, int64_t rows_alloc, int64_t cols_alloc);

  // As sigmoid_tile for z; dp (same shape and stride) holds dP and becomes dZ = dP * sigmoid'(z)
  // where visible, else exactly 0.
  void (*sigmoid_grad_tile)(const TileBand& band, float* z, float* dp, int64_t ld, int64_t rows_alloc,
                            int64_t cols_alloc);

  // dst[0, n) = src[0, n) widened to fp32 (exact).
  void (*widen)(FlashSigmoidDType dtype, const void* src, int64_t n, float* dst);
};

const CpuKernels& portable_kernels();
// nullptr where this build has no AVX2 kernels (not x86-64) or this CPU lacks AVX2 or FMA.
const CpuKernels* avx2_kernels();
// nullptr where this build has no AVX-512 kernels (not x86-64) or this CPU lacks AVX-512F.
const CpuKernels* avx512_kernels();

// The kernels a forward/backward call uses: the environment variable FLASH_SIGMOID_CPU_KERNELS
// ("portable", "avx2", or unset/"auto"/"avx512" for the best this CPU runs), read at every call so
// tests can run every build in one process. "avx2" on a CPU without it falls back to portable.
const CpuKernels& select_kernels();

}  // namespace flash_sigmoid::cpu_impl

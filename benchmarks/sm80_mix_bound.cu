// The ceiling of the sm80 forward's instruction mix on this GPU: mma.sync tensor-core work with the
// ldmatrix, convert and score-function instructions that the forward issues per key tile, and
// nothing else (no barriers, no global memory, no masks). No kernel built on mma.sync with the same
// per-score work can run faster than this loop, so it bounds what tuning the sm80 forward can reach
// for each score function (docs/sm80_forward.md, "The ceiling of this path").
//
// Per loop trip, each warp issues 16 m16n8k16 MMAs (8 accumulators, 2 k-steps), kLdsm ldmatrix.x4
// whose results feed the next trip's operands, the score function on kScores values per lane
// taken from the accumulators (stage by stage, as the kernels evaluate it), and one packed bf16
// convert per two values. The forward's ratios: at head dim 64 every MMA carries 16 scores' share
// of Q·Kᵀ and P·V (2·64 FMA per score), i.e. 8 scores per lane per 16 MMAs, and about 5 ldmatrix;
// at head dim 128, 4 scores and about 3 ldmatrix.
//
// Build and run (sm_90 shown; the numbers in the docs are from an H100):
//   nvcc -O3 -std=c++17 -Isrc -Iinclude -gencode=arch=compute_90,code=sm_90 \
//        -o sm80_mix_bound benchmarks/sm80_mix_bound.cu && ./sm80_mix_bound
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <cuda_runtime.h>

#include "policies/sigmoid.hpp"

namespace {

namespace fs = flash_sigmoid;

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// No score function: the bound of the GEMMs, ldmatrix and converts alone.
struct NoScoreFunction {
  template <int N>
  __device__ static void values_prescaled(float (&)[N]) {}
};

// ex2.approx alone (one MUFU per score and nothing else): what the special-function unit costs
// next to the MMAs when it adds almost no issue slots.
struct Ex2Only {
  template <int N>
  __device__ static void values_prescaled(float (&x)[N]) {
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = fs::ex2_approx_ftz_f32(-x[j]);
  }
};

// kRcp of every 8 values through rcp.approx, the others through the FMA-pipe reciprocal: how the
// cost moves between the two forms.
template <int kRcp>
struct SigmoidMixedReciprocal {
  template <int N>
  __device__ static void values_prescaled(float (&x)[N]) {
    float d[N];
#pragma unroll
    for (int j = 0; j < N; ++j) d[j] = (j % 8) < kRcp ? x[j] : (x[j] < -125.f ? -125.f : x[j]);
#pragma unroll
    for (int j = 0; j < N; ++j) d[j] = 1.0f + fs::ex2_approx_ftz_f32(-d[j]);
    float r[N];
    fs::rcp_fma_f32<fs::RcpRefinement::kCubic>(d, r);
#pragma unroll
    for (int j = 0; j < N; ++j) x[j] = (j % 8) < kRcp ? fs::rcp_approx_ftz_f32(d[j]) : r[j];
  }
};

template <class ScoreFunction, int kScores, int kLdsm>
__global__ void mix_loop(float* sink_out, int iters, float scale) {
  __shared__ __align__(16) uint16_t smem[32 * 72];
  for (int i = threadIdx.x; i < 32 * 72; i += blockDim.x) smem[i] = uint16_t(0x3f80 + (i & 7));
  __syncthreads();
  uint32_t a[4], b[2][2];
  for (int i = 0; i < 4; ++i) a[i] = 0x3f803f80u + threadIdx.x + i;
  for (int i = 0; i < 2; ++i) b[i][0] = b[i][1] = 0x3f803f80u + threadIdx.x * 3 + i;
  float c[8][4] = {};
  uint32_t sink = 0;
  const uint32_t row = static_cast<uint32_t>(__cvta_generic_to_shared(smem)) + (threadIdx.x % 32) * 144;
  for (int it = 0; it < iters; ++it) {
    float x[kScores];
#pragma unroll
    for (int j = 0; j < kScores; ++j) x[j] = c[j % 8][j / 8] * scale - 3.0f;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
#pragma unroll
      for (int j = 0; j < 8; ++j) mma_bf16(c[j], a, b[k]);
    }
    uint32_t r[kLdsm][4];
#pragma unroll
    for (int l = 0; l < kLdsm; ++l) {
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                   : "=r"(r[l][0]), "=r"(r[l][1]), "=r"(r[l][2]), "=r"(r[l][3])
                   : "r"(row + l * 16));
    }
    ScoreFunction::template values_prescaled<kScores>(x);
#pragma unroll
    for (int j = 0; j < kScores; j += 2) {
      uint32_t p;
      asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(p) : "f"(x[j + 1]), "f"(x[j]));
      sink ^= p;
    }
#pragma unroll
    for (int l = 0; l < kLdsm; ++l) {
      a[l % 4] ^= r[l][0];
      b[l % 2][0] ^= r[l][1];
      b[l % 2][1] ^= r[l][2] ^ r[l][3];
    }
  }
  float acc = 0.f;
  for (int j = 0; j < 8; ++j) acc += c[j][0] + c[j][1] + c[j][2] + c[j][3];
  if (acc == 12345.f || sink == 77u) sink_out[0] = acc + float(sink);  // keeps the work alive
}

// TFLOP/s of the MMAs (best of 5), 2 blocks of 4 warps per SM: the forward's occupancy.
template <class ScoreFunction, int kScores, int kLdsm>
void run(const char* head_dim, const char* name, int sms) {
  float* sink = nullptr;
  cudaMalloc(&sink, sizeof(float));
  const int iters = 4096, warps = 4, blocks = 2 * sms;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  mix_loop<ScoreFunction, kScores, kLdsm><<<blocks, warps * 32>>>(sink, 16, 1e-3f);
  float best = 1e30f;
  for (int rep = 0; rep < 5; ++rep) {
    cudaEventRecord(start);
    mix_loop<ScoreFunction, kScores, kLdsm><<<blocks, warps * 32>>>(sink, iters, 1e-3f);
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    best = ms < best ? ms : best;
  }
  if (const cudaError_t err = cudaGetLastError(); err != cudaSuccess) {  // no number from a failed launch
    std::printf("%s %s: %s\n", head_dim, name, cudaGetErrorString(err));
    std::exit(1);
  }
  const double flops = 2.0 * 16 * 8 * 16 * 16 * double(iters) * warps * blocks;
  std::printf("%-5s %-40s %6.1f TFLOP/s\n", head_dim, name, flops / best / 1e9);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(sink);
}

// Every score function at one head dim's ratios (kScores values per lane and kLdsm ldmatrix per
// 16 MMAs).
template <int kScores, int kLdsm>
void run_head_dim(const char* head_dim, int sms) {
  run<NoScoreFunction, kScores, kLdsm>(head_dim, "no score function", sms);
  run<Ex2Only, kScores, kLdsm>(head_dim, "ex2.approx alone (1 MUFU)", sms);
  run<fs::SigmoidViaTanh, kScores, kLdsm>(head_dim, "tanh.approx (1 MUFU + 2)", sms);
  run<fs::SigmoidViaExp2, kScores, kLdsm>(head_dim, "ex2 + FMA reciprocal (1 MUFU + 7)", sms);
  run<SigmoidMixedReciprocal<4>, kScores, kLdsm>(head_dim, "half rcp.approx, half FMA reciprocal", sms);
  run<fs::SigmoidViaExp2Rcp, kScores, kLdsm>(head_dim, "ex2 + rcp.approx (2 MUFU + 2)", sms);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::printf("no CUDA device\n");
    return 1;
  }
  std::printf("%s, %d SMs; bf16 mma.sync m16n8k16, 2 blocks x 4 warps per SM\n", prop.name, prop.multiProcessorCount);
  const int sms = prop.multiProcessorCount;
  run_head_dim<8, 5>("D=64", sms);
  run_head_dim<4, 3>("D=128", sms);
  return 0;
}

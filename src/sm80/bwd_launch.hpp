// Layer: sm80. Host-side launch of the Ampere backward for one compiled key (Element, head-dim
// bucket, mask kind): picks the kernels for the run-time choices (score function, ALiBi on/off,
// deterministic or not) and enqueues them on the caller's stream, with no allocation and no host
// synchronisation.
//
//   default        cudaMemsetAsync(workspace) -> dK/dV kernel adding dQ with atomics -> convert
//   deterministic  the same dK/dV kernel skipping the dQ product -> dQ kernel (no workspace, no
//                  atomics)
//
// The deterministic dQ kernel is a family of its own; the dK/dV kernel switches on the mode at
// run time. A translation unit holds 2 score functions x 2 ALiBi x (dK/dV + dQ) = 8 attention
// kernels plus one convert kernel.
// Owns: grids, block sizes, shared-memory attributes and the stream order. Does not own:
// validation or the workspace size the caller allocated (src/api/validate.cpp, which must agree
// with DqAccumLayout), or which keys exist (dispatch/kernel_table.py).
#pragma once

#include <cuda_runtime_api.h>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"
#include "sm80/bwd_epilogue.hpp"
#include "sm80/bwd_kernel.hpp"
#include "sm80/bwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// Above 48 KiB of dynamic shared memory a kernel must opt in, per device, so this is set on every
// launch (it is cheap, and the current device may differ from the last call's).
template <int kSmemBytes, class Kernel>
cudaError_t allow_smem(Kernel kernel) {
  if constexpr (kSmemBytes > 48 * 1024) {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  }
  return cudaSuccess;
}

template <class Traits, class Variant>
cudaError_t launch_bwd_dkdv(const BackwardParams& params, cudaStream_t stream) {
  const ProblemParams& p = params.problem;
  auto kernel = &sm80_bwd_dkdv_kernel<Traits, Variant>;
  if (cudaError_t err = allow_smem<Traits::kSmemBytes>(kernel); err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div_int(p.seqlen_k, Traits::kBlockN)), static_cast<unsigned>(p.heads_kv),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

template <class DqTraits, class Variant>
cudaError_t launch_bwd_dq(const BackwardParams& params, cudaStream_t stream) {
  const ProblemParams& p = params.problem;
  auto kernel = &sm80_bwd_dq_kernel<DqTraits, Variant>;
  if (cudaError_t err = allow_smem<DqTraits::kSmemBytes>(kernel); err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div_int(p.seqlen_q, DqTraits::kBlockM)), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, DqTraits::kNThreads, DqTraits::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

template <class Element>
cudaError_t launch_bwd_convert_dq(const BackwardParams& params, cudaStream_t stream) {
  constexpr int kRows = 64;
  constexpr int kThreads = 256;
  const ProblemParams& p = params.problem;
  const dim3 grid(static_cast<unsigned>(ceil_div_int(p.seqlen_q, kRows)), static_cast<unsigned>(p.heads_q),
                  static_cast<unsigned>(p.batch));
  sm80_bwd_convert_dq_kernel<Element, kRows, kThreads><<<grid, kThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

template <class Traits, class DqTraits, class Variant>
cudaError_t launch_bwd_variant(const BackwardParams& params, cudaStream_t stream) {
  const ProblemParams& p = params.problem;
  // A grid with a zero extent is an invalid launch: launch nothing for an empty side.
  if (p.batch == 0 || p.heads_q == 0) return cudaSuccess;
  const bool has_queries = p.seqlen_q > 0;
  const bool has_keys = p.seqlen_k > 0;

  if (params.deterministic) {
    // dK/dV as below without the dQ product; dQ by its own kernel, which recomputes S and dP per
    // (query tile, key tile) and sums over key tiles in a fixed order: bitwise reproducible.
    if (has_keys) {
      if (cudaError_t err = launch_bwd_dkdv<Traits, Variant>(params, stream); err != cudaSuccess) return err;
    }
    if (has_queries) return launch_bwd_dq<DqTraits, Variant>(params, stream);
    return cudaSuccess;
  }

  if (!has_queries) {
    // dK = dV = 0 (every key tile's query range is empty); there is no dQ and no workspace.
    return launch_bwd_dkdv<Traits, Variant>(params, stream);
  }
  // The atomics add into zeros; a problem without keys converts those zeros into dQ = 0.
  if (cudaError_t err = cudaMemsetAsync(params.dq_accum, 0, DqAccumLayout::bytes(p), stream); err != cudaSuccess) {
    return err;
  }
  if (has_keys) {
    if (cudaError_t err = launch_bwd_dkdv<Traits, Variant>(params, stream); err != cudaSuccess) return err;
  }
  return launch_bwd_convert_dq<typename Traits::Element>(params, stream);
}

// The entry point of every generated sm80 backward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
cudaError_t launch_bwd(const BackwardParams& params, cudaStream_t stream) {
  using Traits = Sm80BwdTraits<Element, kHeadDim>;
  using DqTraits = Sm80BwdDqTraits<Element, kHeadDim>;
  return launch_score_variant<kMask>(params.problem, [&](auto variant) {
    return launch_bwd_variant<Traits, DqTraits, decltype(variant)>(params, stream);
  });
}

}  // namespace flash_sigmoid::sm80

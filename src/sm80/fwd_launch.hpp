// Layer: sm80. Host-side launch of the Ampere forward kernel for one compiled key
// (Element, head-dim bucket, mask kind): picks the kernel for the run-time choices (ALiBi on/off,
// score function), raises the dynamic shared-memory limit, and launches the grid.
//
// Owns: grid and block shape and the shared-memory attribute. Does not own: the switch from
// run-time flags to kernel template arguments (common/variant_dispatch.hpp: four kernels per key),
// validation (the API layer hands over validated ForwardParams) or which keys exist
// (dispatch/kernel_table.py).
#pragma once

#include <cuda_runtime_api.h>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"
#include "sm80/fwd_kernel.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

template <class Traits, class Variant>
cudaError_t launch_fwd_kernel(const ForwardParams& params, cudaStream_t stream) {
  const ProblemParams& problem = params.problem;
  // Nothing to write: a grid with a zero extent is an invalid launch, so launch none.
  if (problem.seqlen_q == 0 || problem.heads_q == 0 || problem.batch == 0) return cudaSuccess;

  auto kernel = &sm80_fwd_kernel<Traits, Variant>;
  constexpr int kSmemBytes = Traits::kSmemBytes;
  // Above 48 KiB of dynamic shared memory a kernel must opt in, per device, so this is set on every
  // launch (it is cheap, and the current device may differ from the last call's).
  if constexpr (kSmemBytes > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(ceil_div_int(problem.seqlen_q, Traits::kBlockM)),
                  static_cast<unsigned>(problem.heads_q), static_cast<unsigned>(problem.batch));
  kernel<<<grid, Traits::kNThreads, kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

// The entry point of every generated sm80 forward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
cudaError_t launch_fwd(const ForwardParams& params, cudaStream_t stream) {
  using Traits = Sm80FwdTraits<Element, kHeadDim>;
  return launch_score_variant<kMask>(params.problem, [&](auto variant) {
    return launch_fwd_kernel<Traits, decltype(variant)>(params, stream);
  });
}

}  // namespace flash_sigmoid::sm80

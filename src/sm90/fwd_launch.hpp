// Layer: sm90. Host-side launch of the Hopper forward for one compiled key (Element, head-dim
// bucket, mask kind): picks the kernel for the run-time choices (ALiBi on/off, score function),
// raises the dynamic shared-memory limit, and launches the grid on the caller's stream.
#pragma once

#include <cuda_runtime_api.h>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"
#include "sm90/fwd_kernel.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
cudaError_t launch_fwd_kernel(const ForwardParams& params, cudaStream_t stream) {
  const ProblemParams& problem = params.problem;
  // Nothing to write: a grid with a zero extent is an invalid launch, so launch none.
  if (problem.seqlen_q == 0 || problem.heads_q == 0 || problem.batch == 0) return cudaSuccess;
  auto kernel = &sm90_fwd_kernel<Traits, Variant>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div_int(problem.seqlen_q, Traits::kBlockM)),
                  static_cast<unsigned>(problem.heads_q), static_cast<unsigned>(problem.batch));
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

// The entry point of every generated sm90 forward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
cudaError_t launch_fwd(const ForwardParams& params, cudaStream_t stream) {
  using Traits = Sm90FwdTraits<Element, kHeadDim>;
  return launch_score_variant<kMask>(params.problem, [&](auto variant) {
    return launch_fwd_kernel<Traits, decltype(variant)>(params, stream);
  });
}

}  // namespace flash_sigmoid::sm90

// Layer: sm80. The host side of the Ampere forward for one compiled key (Element, head-dim bucket,
// mask kind): Sm80Fwd builds the kernel's params from the validated problem, picks the kernel for
// the run-time choices (ALiBi on/off, score function) and launches it on the caller's stream.
//
// Owns: which kernel runs and its launch shape (grid from the scheduler, block and shared memory
// from the traits). Does not own: the switch from run-time flags to kernel template arguments
// (common/variant_dispatch.hpp: four kernels per key), the launch itself (common/launch.hpp),
// validation (the API layer hands over validated ForwardParams) or which keys exist
// (dispatch/kernel_table.py).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "sm80/fwd_kernel.hpp"
#include "sm80/fwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// The entry point of every generated sm80 forward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
struct Sm80Fwd {
  using Traits = Sm80FwdTraits<Element, kHeadDim>;

  // The forward needs no workspace.
  static size_t workspace_bytes(const ForwardParams& /*params*/) { return 0; }

  static cudaError_t run(const ForwardParams& params, cudaStream_t stream) {
    const Sm80FwdParams kernel_params = Sm80FwdParams::make(params);
    const LaunchShape shape{Sm80FwdScheduler<Traits>::grid(params.problem), Traits::kNThreads, Traits::kSmemBytes};
    return launch_score_variant<kMask, SigmoidViaExp2, true>(params.problem, [&](auto variant) {
      return launch_kernel(&sm80_fwd_kernel<Traits, decltype(variant)>, shape, stream, kernel_params);
    });
  }
};

}  // namespace flash_sigmoid::sm80

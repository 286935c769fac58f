// Layer: sm90. The host side of the Hopper forward for one compiled key (Element, head-dim bucket,
// mask kind): Sm90Fwd builds the kernel's params from the validated problem, picks the kernel for
// the run-time choices (ALiBi on/off, score function) and launches it on the caller's stream.
//
// Owns: which kernel runs and its launch shape. Does not own: the variant switch
// (common/variant_dispatch.hpp), the launch itself (common/launch.hpp), validation or which keys
// exist (dispatch/kernel_table.py).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "sm90/fwd_kernel.hpp"
#include "sm90/fwd_traits.hpp"

namespace flash_sigmoid::sm90 {

// The entry point of every generated sm90 forward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
struct Sm90Fwd {
  using Traits = Sm90FwdTraits<Element, kHeadDim>;

  // The forward needs no workspace.
  static size_t workspace_bytes(const ForwardParams& /*params*/) { return 0; }

  static cudaError_t run(const ForwardParams& params, cudaStream_t stream) {
    const Sm90FwdParams kernel_params = Sm90FwdParams::make(params);
    const LaunchShape shape{Sm90FwdScheduler<Traits>::grid(params.problem), Traits::kNThreads, Traits::kSmemBytes};
    return launch_score_variant<kMask>(params.problem, [&](auto variant) {
      return launch_kernel(&sm90_fwd_kernel<Traits, decltype(variant)>, shape, stream, kernel_params);
    });
  }
};

}  // namespace flash_sigmoid::sm90

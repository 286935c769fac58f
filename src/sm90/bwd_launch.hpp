// Layer: sm90. The host side of the Hopper backward for one compiled key (Element, head-dim bucket,
// mask kind), on the caller's stream, with no allocation and no host synchronisation:
//
//   clear the dQ workspace -> sm90 dK/dV kernel adding dQ with atomics -> convert
//
// (the workspace, its memset and its convert kernel are common to both families:
// common/dq_accum.hpp). Only the default (non-deterministic) mode: the registry never picks this
// family for params.deterministic (dispatch/kernel_table.py), and a direct call with it is refused
// here. Owns: the kernels' order and launch shapes, and the workspace size the API reports for this
// key. Does not own: validation, the launch itself (common/launch.hpp) or which keys exist.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/dq_accum.hpp"
#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "sm90/bwd_kernel.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

// The entry point of every generated sm90 backward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
struct Sm90Bwd {
  using Traits = Sm90BwdTraits<Element, kHeadDim>;

  static size_t workspace_bytes(const BackwardParams& params) { return DqAccumWorkspace::bytes(params); }

  static cudaError_t run(const BackwardParams& params, cudaStream_t stream) {
    if (params.deterministic) return cudaErrorNotSupported;
    return launch_score_variant<kMask, SigmoidViaExp2, true>(params.problem, [&](auto variant) {
      return run_variant<decltype(variant)>(Sm90BwdParams::make(params), stream);
    });
  }

 private:
  template <class Variant>
  static cudaError_t run_variant(const Sm90BwdParams& params, cudaStream_t stream) {
    const ProblemParams& p = params.problem;
    const LaunchShape dkdv{Sm90BwdDkDvScheduler<Traits>::grid(p), Traits::kNThreads, Traits::kSmemBytes};
    auto launch_dkdv = [&] { return launch_kernel(&sm90_bwd_dkdv_kernel<Traits, Variant>, dkdv, stream, params); };
    if (p.total_q == 0) return launch_dkdv();  // dK = dV = 0, no dQ
    if (cudaError_t err = DqAccumWorkspace::clear(params, stream); err != cudaSuccess) return err;
    if (cudaError_t err = launch_dkdv(); err != cudaSuccess) return err;  // no keys: an empty grid
    return DqAccumWorkspace::convert<typename Traits::Element>(params, stream);
  }
};

}  // namespace flash_sigmoid::sm90

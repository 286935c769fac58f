// Layer: sm90. The host side of the Hopper backward for one compiled key (Element, head-dim bucket,
// mask kind), on the caller's stream, with no allocation and no host synchronisation:
//
//   clear the dQ workspace -> sm90 dK/dV kernel adding dQ with atomics -> convert
//
// (the workspace, its memset and its convert kernel are common to both families:
// common/dq_accum.hpp). The default kernel serves the default mode only: the registry never picks
// it for params.deterministic (dispatch/kernel_table.py), and a direct call with it is refused
// here; the "det" variant orders its dQ additions and serves both. Owns: the kernels' order and launch shapes, and the workspace size the API reports for this
// key. Does not own: validation, the launch itself (common/launch.hpp) or which keys exist.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/dq_accum.hpp"
#include "common/dq_semaphore.hpp"
#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "sm90/bwd_kernel.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

// The entry points of the generated sm90 backward translation units: Sm90Bwd (the default mode
// only) and Sm90BwdDeterministic (kernel variant "det": the same kernel with its dQ additions in a
// fixed order, for either mode; its workspace adds the order's counters after the accumulator).
template <class Element, int kHeadDim, MaskKind kMask, bool kDeterministic>
struct Sm90BwdLaunch {
  using Traits = Sm90BwdTraits<Element, kHeadDim>;
  using Semaphores = DqTileSemaphores<Traits::kBlockM>;

  static size_t workspace_bytes(const BackwardParams& params) {
    if constexpr (kDeterministic) {
      const ProblemParams& p = params.problem;
      if (p.batch == 0 || p.heads_q == 0 || p.total_q == 0) return 0;
      return Semaphores::workspace_bytes(p);
    } else {
      return DqAccumWorkspace::bytes(params);
    }
  }

  static cudaError_t run(const BackwardParams& params, cudaStream_t stream) {
    if (!kDeterministic && params.deterministic) return cudaErrorNotSupported;
    return launch_score_variant<kMask, SigmoidViaExp2, true>(params.problem, [&](auto variant) {
      return run_variant<decltype(variant)>(Sm90BwdParams::make(params), stream);
    });
  }

 private:
  template <class Variant>
  static cudaError_t run_variant(const Sm90BwdParams& params, cudaStream_t stream) {
    const ProblemParams& p = params.problem;
    const LaunchShape dkdv{Sm90BwdDkDvScheduler<Traits>::grid(p), Traits::kNThreads, Traits::kSmemBytes};
    auto launch_dkdv = [&] {
      return launch_kernel(&sm90_bwd_dkdv_kernel<Traits, Variant, kDeterministic>, dkdv, stream, params);
    };
    if (p.total_q == 0) return launch_dkdv();  // dK = dV = 0, no dQ
    // The accumulator (and the counters) start at zero.
    if (cudaError_t err = cudaMemsetAsync(params.dq_accum, 0, workspace_bytes(params), stream); err != cudaSuccess) {
      return err;
    }
    if (cudaError_t err = launch_dkdv(); err != cudaSuccess) return err;  // no keys: an empty grid
    return DqAccumWorkspace::convert<typename Traits::Element>(params, stream);
  }
};

template <class Element, int kHeadDim, MaskKind kMask>
using Sm90Bwd = Sm90BwdLaunch<Element, kHeadDim, kMask, false>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90BwdDeterministic = Sm90BwdLaunch<Element, kHeadDim, kMask, true>;

}  // namespace flash_sigmoid::sm90

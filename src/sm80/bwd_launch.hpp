// Layer: sm80. The host side of the Ampere backward for one compiled key (Element, head-dim bucket,
// mask kind): Sm80Bwd sizes its workspace, builds the kernels' params from the validated problem,
// picks the kernels for the run-time choices (score function, ALiBi on/off, deterministic or not)
// and enqueues them on the caller's stream, with no allocation and no host synchronisation.
//
//   default        clear the dQ workspace -> dK/dV kernel adding dQ with atomics -> convert
//   deterministic  the same dK/dV kernel skipping the dQ product -> dQ kernel (no workspace, no
//                  atomics)
//
// The deterministic dQ kernel is a family of its own; the dK/dV kernel switches on the mode at
// run time. A translation unit holds 2 score functions x 2 ALiBi x (dK/dV + dQ) = 8 attention
// kernels plus one convert kernel.
// Owns: the kernels' order on the stream and their launch shapes, and the workspace size the API
// reports for this key (workspace_bytes: what run() clears and the kernels address). Does not own:
// validation, the workspace layout (common/dq_accum_layout.hpp), the launch itself
// (common/launch.hpp) or which keys exist (dispatch/kernel_table.py).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/dq_accum.hpp"
#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "sm80/bwd_kernel.hpp"
#include "sm80/bwd_traits.hpp"

namespace flash_sigmoid::sm80 {

// The entry point of every generated sm80 backward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
struct Sm80Bwd {
  using Traits = Sm80BwdTraits<Element, kHeadDim>;
  using DqTraits = Sm80BwdDqTraits<Element, kHeadDim>;

  // The default mode's fp32 dQ accumulator; none in deterministic mode.
  static size_t workspace_bytes(const BackwardParams& params) { return DqAccumWorkspace::bytes(params); }

  static cudaError_t run(const BackwardParams& params, cudaStream_t stream) {
    return launch_score_variant<kMask, SigmoidViaExp2, true>(params.problem, [&](auto variant) {
      return run_variant<decltype(variant)>(Sm80BwdParams::make(params), stream);
    });
  }

 private:
  template <class Variant>
  static cudaError_t run_variant(const Sm80BwdParams& params, cudaStream_t stream) {
    const ProblemParams& p = params.problem;
    const LaunchShape dkdv{Sm80BwdDkDvScheduler<Traits>::grid(p), Traits::kNThreads, Traits::kSmemBytes};
    auto launch_dkdv = [&] { return launch_kernel(&sm80_bwd_dkdv_kernel<Traits, Variant>, dkdv, stream, params); };
    // A grid with a zero extent launches nothing (common/launch.hpp): a side without rows has no
    // kernel of its own.
    if (params.deterministic) {
      // dK/dV as below without the dQ product; dQ by its own kernel, which recomputes S and dP per
      // (query tile, key tile) and sums over key tiles in a fixed order: bitwise reproducible.
      if (cudaError_t err = launch_dkdv(); err != cudaSuccess) return err;
      const LaunchShape dq{Sm80BwdDqScheduler<DqTraits>::grid(p), DqTraits::kNThreads, DqTraits::kSmemBytes};
      return launch_kernel(&sm80_bwd_dq_kernel<DqTraits, Variant>, dq, stream, params);
    }
    // Without queries dK = dV = 0 (every key tile's query range is empty); no dQ, no workspace.
    if (p.total_q == 0) return launch_dkdv();
    if (cudaError_t err = DqAccumWorkspace::clear(params, stream); err != cudaSuccess) return err;
    if (cudaError_t err = launch_dkdv(); err != cudaSuccess) return err;
    return DqAccumWorkspace::convert<Element>(params, stream);
  }
};

}  // namespace flash_sigmoid::sm80

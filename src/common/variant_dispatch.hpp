// Layer: common kernel parts. A problem's run-time choices (score function, ALiBi on or off) turned
// into the compile-time ScoreVariant that a kernel is instantiated for: a launcher passes a generic
// callable, and launch_score_variant calls it with the one variant the problem needs.
//
// Owns: the set of variants that every translation unit instantiates (2 score functions x 2 ALiBi,
// for the unit's mask kind). Does not own: what a launcher does with a variant (grids, kernels).
#pragma once

#include <cuda_runtime_api.h>

#include "common/score_variant.hpp"
#include "common/params.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"

namespace flash_sigmoid {

// Returns launch(ScoreVariant<ScoreFunction, kHasAlibi, Mask>{}) for the problem's score function
// and ALiBi slopes; cudaErrorInvalidValue for an unknown score function. Exp2Form: the struct a
// kernel evaluates the default (exp2) score function with — SigmoidViaExp2, or a forward's
// SigmoidViaExp2Relu (policies/sigmoid.hpp), which needs the kernel's relu pack and O scale.
template <MaskKind kMask, class Exp2Form = SigmoidViaExp2, class Launch>
cudaError_t launch_score_variant(const ProblemParams& problem, Launch&& launch) {
  using Mask = typename MaskForKind<kMask>::type;
  auto with_alibi_choice = [&](auto score_function) {
    using ScoreFunction = decltype(score_function);
    if (problem.alibi_slopes != nullptr) return launch(ScoreVariant<ScoreFunction, true, Mask>{});
    return launch(ScoreVariant<ScoreFunction, false, Mask>{});
  };
  switch (problem.score_function) {
    case ScoreFunctionKind::kSigmoidViaTanh:
      return with_alibi_choice(SigmoidViaTanh{});
    case ScoreFunctionKind::kSigmoidViaExp2:
      return with_alibi_choice(Exp2Form{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace flash_sigmoid

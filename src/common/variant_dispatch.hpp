// Layer: common kernel parts. A problem's run-time choices (score function, ALiBi on or off) turned
// into the compile-time ScoreVariant that a kernel is instantiated for: a launcher passes a generic
// callable, and launch_score_variant calls it with the one variant the problem needs.
//
// Owns: the set of variants that every translation unit instantiates (2 score functions x 2 ALiBi,
// for the unit's mask kind). Does not own: what a launcher does with a variant (grids, kernels).
#pragma once

#include <type_traits>

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
//
// kWithDropout (a family that applies dropout, kernel_table.py's `dropout`): a call with dropout
// gets the variants with kDropout, for the exp2 score function only (the tanh form with dropout is
// not built: validation answers Unsupported for it, so the switch below never sees it).
template <MaskKind kMask, class Exp2Form = SigmoidViaExp2, bool kWithDropout = false, class Launch>
cudaError_t launch_score_variant(const ProblemParams& problem, Launch&& launch) {
  using Mask = typename MaskForKind<kMask>::type;
  auto with_alibi_choice = [&](auto score_function, auto dropout) {
    using ScoreFunction = decltype(score_function);
    constexpr bool kDropout = decltype(dropout)::value;
    if (problem.alibi_slopes != nullptr) return launch(ScoreVariant<ScoreFunction, true, Mask, kDropout>{});
    return launch(ScoreVariant<ScoreFunction, false, Mask, kDropout>{});
  };
  const bool dropout = problem.dropout_threshold != 0;
  if constexpr (kWithDropout) {
    if (dropout) {
      if (problem.score_function != ScoreFunctionKind::kSigmoidViaExp2) return cudaErrorNotSupported;
      return with_alibi_choice(Exp2Form{}, std::true_type{});
    }
  } else {
    if (dropout) return cudaErrorNotSupported;  // the registry never picks such a family for it
  }
  switch (problem.score_function) {
    case ScoreFunctionKind::kSigmoidViaTanh:
      return with_alibi_choice(SigmoidViaTanh{}, std::false_type{});
    case ScoreFunctionKind::kSigmoidViaExp2:
      return with_alibi_choice(Exp2Form{}, std::false_type{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace flash_sigmoid

// Layer: common kernel parts. The problem as kernels see it: validated, with the mask resolved to
// its compiled bound presence, sizes in int (the API guarantees they fit), per-tensor strides in
// elements (stride_dim is 1). Built by the API layer from the public structs; kernels never see
// the public structs and the API never sees CuTe.
#pragma once

#include <cstdint>

#include "policies/host_device.hpp"
#include "policies/mask_band.hpp"

namespace flash_sigmoid {

enum class ScoreFunctionKind : int { kSigmoidViaExp2 = 0, kSigmoidViaTanh = 1 };

struct StridedPtr {
  void* ptr = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_seq = 0;
  int64_t stride_head = 0;
};

struct ProblemParams {
  int batch = 0;
  int seqlen_q = 0;
  int seqlen_k = 0;
  int heads_q = 0;
  int heads_kv = 0;
  int head_dim = 0;      // the real head dim; the kernel's bucket is >= this
  int group_size = 1;    // heads_q / heads_kv
  float scale = 1.f;
  float bias = 0.f;
  ResolvedMask mask;
  const float* alibi_slopes = nullptr;  // null: no ALiBi
  int64_t alibi_stride_batch = 0;
  ScoreFunctionKind score_function = ScoreFunctionKind::kSigmoidViaExp2;
};

// The compiled mask kind (MaskBand<kHasLeft, kHasRight>) filled in from the problem: what every
// kernel's block ranges and fragment masks start from.
template <class Mask>
FLASH_SIGMOID_HOST_DEVICE Mask mask_from_problem(const ProblemParams& problem) {
  Mask mask;
  mask.seqlen_q = problem.seqlen_q;
  mask.seqlen_k = problem.seqlen_k;
  mask.left = problem.mask.left;
  mask.right = problem.mask.right;
  return mask;
}

struct ForwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, out;
};

struct BackwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, dout, dq, dk, dv;
  float* dq_accum = nullptr;  // workspace: fp32 [batch, heads_q, seqlen_q rounded, head_dim bucket]
  bool deterministic = false;
};

}  // namespace flash_sigmoid

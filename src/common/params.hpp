// Layer: common kernel parts. The problem as kernels see it: validated, with the mask resolved to
// its compiled bound presence, sizes in int (the API guarantees they fit), per-tensor strides in
// elements (stride_dim is 1). Built by the API layer from the public structs; kernels never see
// the public structs and the API never sees CuTe.
#pragma once

#include <cstdint>

#include "base/host_device.hpp"
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

struct ForwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, out;
};

struct BackwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, dout, dq, dk, dv;
  float* dq_accum = nullptr;  // workspace of the default mode: the fp32 dQ accumulator (common/dq_accum_layout.hpp)
  bool deterministic = false;
};

// A kernel's own parameters: the validated problem (Base: ForwardParams or BackwardParams) and
// whatever the kernel's family builds from it on the host. `Family` tells the families' types apart;
// a family that needs fields of its own (TMA descriptors, say) defines its own struct deriving from
// Base instead, with the same make().
template <class Base, class Family>
struct KernelParams : Base {
  static KernelParams make(const Base& params) { return KernelParams{params}; }
};

}  // namespace flash_sigmoid

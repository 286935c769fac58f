// Layer: sm90. Host-side launch of the Hopper backward for one compiled key (Element, head-dim
// bucket, mask kind), on the caller's stream, with no allocation and no host synchronisation:
//
//   cudaMemsetAsync(workspace) -> sm90 dK/dV kernel adding dQ with atomics -> convert (sm80's)
//
// Only the default (non-deterministic) mode: the registry never picks this family for
// params.deterministic (dispatch/kernel_table.py), and a direct call with it is refused here.
// Owns: the grid, block size, shared-memory attribute and stream order. Does not own: validation
// or the workspace size (src/api/validate.cpp, which must agree with DqAccumLayout).
#pragma once

#include <cuda_runtime_api.h>

#include "common/block_range.hpp"
#include "common/fragment_coords.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"
#include "sm80/bwd_launch.hpp"
#include "sm90/bwd_kernel.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits, class Variant>
cudaError_t launch_bwd_dkdv(const BackwardParams& params, cudaStream_t stream) {
  const ProblemParams& p = params.problem;
  auto kernel = &sm90_bwd_dkdv_kernel<Traits, Variant>;
  if (cudaError_t err = sm80::allow_smem<Traits::kSmemBytes>(kernel); err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(ceil_div_int(p.seqlen_k, Traits::kBlockN)), static_cast<unsigned>(p.heads_kv),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Traits::kNThreads, Traits::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

template <class Traits, class Variant>
cudaError_t launch_bwd_variant(const BackwardParams& params, cudaStream_t stream) {
  const ProblemParams& p = params.problem;
  if (params.deterministic) return cudaErrorNotSupported;
  if (p.batch == 0 || p.heads_q == 0) return cudaSuccess;
  if (p.seqlen_q == 0) return launch_bwd_dkdv<Traits, Variant>(params, stream);  // dK = dV = 0, no dQ
  if (cudaError_t err = cudaMemsetAsync(params.dq_accum, 0, sm80::DqAccumLayout::bytes(p), stream); err != cudaSuccess) {
    return err;
  }
  if (p.seqlen_k > 0) {
    if (cudaError_t err = launch_bwd_dkdv<Traits, Variant>(params, stream); err != cudaSuccess) return err;
  }
  return sm80::launch_bwd_convert_dq<typename Traits::Element>(params, stream);
}

// The entry point of every generated sm90 backward translation unit.
template <class Element, int kHeadDim, MaskKind kMask>
cudaError_t launch_bwd(const BackwardParams& params, cudaStream_t stream) {
  using Traits = Sm90BwdTraits<Element, kHeadDim>;
  return launch_score_variant<kMask>(params.problem, [&](auto variant) {
    return launch_bwd_variant<Traits, decltype(variant)>(params, stream);
  });
}

}  // namespace flash_sigmoid::sm90

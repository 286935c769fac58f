// Layer: sm80. The host side of the split-KV decode kernel for one compiled key (Element, head-dim
// bucket): picks the kernel for the score function, launches it on the caller's stream with the
// plan the API made (common/decode_plan.hpp), then, with more than one split, the kernel that sums
// the splits into the output. Both launches are fixed for fixed shapes (CUDA-graph safe). Also the
// append kernel's entry for the key's dtype.
// Does not own: the plan, validation, or which keys exist (dispatch/kernel_table.py).
#pragma once

#include <cuda_runtime_api.h>

#include "common/decode_plan.hpp"
#include "common/kvcache_append.hpp"
#include "common/launch.hpp"
#include "common/params.hpp"
#include "policies/sigmoid.hpp"
#include "sm80/decode_kernel.hpp"

namespace flash_sigmoid::sm80 {

// The entry point of every generated decode translation unit.
template <class Element, int kHeadDim>
struct Sm80Decode {
  static constexpr int kCombineThreads = 256;

  static cudaError_t run(const DecodeParams& params, cudaStream_t stream) {
    const ProblemParams& p = params.forward.problem;
    const LaunchShape shape{dim3(static_cast<unsigned>(p.heads_kv * params.num_splits * params.row_chunks),
                                 static_cast<unsigned>(p.batch)),
                            kDecodeThreads, decode_smem_bytes(kHeadDim)};
    const cudaError_t err =
        p.score_function == ScoreFunctionKind::kSigmoidViaTanh
            ? launch_kernel(&sm80_decode_kernel<Element, kHeadDim, SigmoidViaTanh>, shape, stream, params)
            : launch_kernel(&sm80_decode_kernel<Element, kHeadDim, SigmoidViaExp2>, shape, stream, params);
    if (err != cudaSuccess || params.num_splits == 1) return err;
    const int64_t quads = static_cast<int64_t>(p.batch) * p.seqlen_q * p.heads_q * (p.head_dim / 4);
    const int64_t blocks = (quads + kCombineThreads - 1) / kCombineThreads;
    const LaunchShape combine{dim3(static_cast<unsigned>(blocks < 65535 ? blocks : 65535)), kCombineThreads, 0};
    return launch_kernel(&sm80_decode_combine_kernel<Element>, combine, stream, params);
  }

  // The append step before a decode (common/kvcache_append.hpp): per dtype, any head dim; built
  // with each decode key so that a build which decodes a dtype also appends it.
  static cudaError_t append(const AppendParams& params, cudaStream_t stream) {
    return launch_kvcache_append<Element>(params, stream);
  }
};

}  // namespace flash_sigmoid::sm80

// FlashSigmoid public C++ API.
//
// Layer: public API. The same argument structs as the C header (flash_sigmoid.h), with C++ names,
// a scoped Status, and overloads. Host-only: no CuTe, torch or CUDA headers are needed to include
// it. No exceptions, no allocation, no host synchronisation; see flash_sigmoid.h for semantics.
#pragma once

#include <cstddef>
#include <cstdint>

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid {

enum class Status : int {
  kSuccess = FLASH_SIGMOID_SUCCESS,
  kInvalidArgument = FLASH_SIGMOID_INVALID_ARGUMENT,
  kUnsupported = FLASH_SIGMOID_UNSUPPORTED,
  kWorkspaceTooSmall = FLASH_SIGMOID_WORKSPACE_TOO_SMALL,
  kCudaError = FLASH_SIGMOID_CUDA_ERROR,
  kInternalError = FLASH_SIGMOID_INTERNAL_ERROR,
};

enum class DType : int {
  kFloat16 = FLASH_SIGMOID_FLOAT16,
  kBFloat16 = FLASH_SIGMOID_BFLOAT16,
  kFloat32 = FLASH_SIGMOID_FLOAT32,
};

using Stream = FlashSigmoidStream;
using Tensor = FlashSigmoidTensor;
using Problem = FlashSigmoidProblem;
using ForwardArgs = FlashSigmoidForwardArgs;
using BackwardArgs = FlashSigmoidBackwardArgs;
using KvAppendArgs = FlashSigmoidKvAppendArgs;

struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

// Defaults for a problem of this head dim (see flash_sigmoid_problem_init).
FLASH_SIGMOID_EXPORT Problem problem_init(int64_t head_dim);
FLASH_SIGMOID_EXPORT Tensor contiguous_tensor(void* data, int64_t seqlen, int64_t heads, int64_t head_dim);

// GPU path.
FLASH_SIGMOID_EXPORT Status can_implement(const ForwardArgs& args);
FLASH_SIGMOID_EXPORT Status can_implement(const BackwardArgs& args);
FLASH_SIGMOID_EXPORT Status workspace_size(const ForwardArgs& args, size_t* bytes);
FLASH_SIGMOID_EXPORT Status workspace_size(const BackwardArgs& args, size_t* bytes);
FLASH_SIGMOID_EXPORT Status forward(const ForwardArgs& args, Workspace workspace, Stream stream);
FLASH_SIGMOID_EXPORT Status backward(const BackwardArgs& args, Workspace workspace, Stream stream);
// The KV-cache append step on the GPU: not implemented yet (Unsupported, docs/kvcache.md).
FLASH_SIGMOID_EXPORT Status kvcache_append(const KvAppendArgs& args, Stream stream);

// CPU implementation (blocking; num_threads 0 means one per hardware thread).
namespace cpu {
FLASH_SIGMOID_EXPORT Status forward(const ForwardArgs& args, int num_threads = 0);
FLASH_SIGMOID_EXPORT Status backward(const BackwardArgs& args, int num_threads = 0);
FLASH_SIGMOID_EXPORT Status kvcache_append(const KvAppendArgs& args, int num_threads = 0);
// The dropout keep mask (see flash_sigmoid_cpu_dropout_mask).
FLASH_SIGMOID_EXPORT Status dropout_mask(float dropout_p, const uint64_t* dropout_seed, int64_t batch_index,
                                         int64_t batch, int64_t heads_q, int64_t seqlen_q, int64_t seqlen_k,
                                         uint8_t* keep);
}  // namespace cpu

FLASH_SIGMOID_EXPORT const char* last_error();
FLASH_SIGMOID_EXPORT const char* build_info();
FLASH_SIGMOID_EXPORT const char* status_name(Status status);

}  // namespace flash_sigmoid

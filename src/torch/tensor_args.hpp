// Layer: PyTorch binding. Turns torch tensors (through the stable ABI) into the public API's
// argument structs: checks what only torch can see (ranks, dtypes, devices), copies a tensor whose
// strides or alignment the chosen backend cannot read, and allocates outputs and workspace from
// torch's allocator. Knows the public API (include/flash_sigmoid) and nothing of kernel internals.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/csrc/stable/tensor.h>

#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::torch_binding {

using StableTensor = torch::stable::Tensor;

enum class Backend { kCpu, kCuda };

// Where the op runs, decided by q's device; every other tensor must be on the same device.
Backend backend_of(const StableTensor& q);

// The op parameters shared by fwd and bwd, as they arrive from the schema.
struct OpParams {
  double scale;
  double sigmoid_bias;
  bool causal;
  int64_t window_left;
  int64_t window_right;
  std::optional<StableTensor> alibi_slopes;
  int64_t score_function;
  int64_t kernel_arch;
  const std::string* kernel_variant;  // "": the default mainloop; outlives the op's use of the problem
  // Attention dropout (docs/dropout.md): p, and {seed, offset} as an int64 [2] tensor on q's device
  // (its bits are the two uint64); required when p rounds to dropout, unread otherwise.
  double dropout_p = 0.0;
  std::optional<StableTensor> dropout_seed;
  // A shift of the ALiBi distances (FlashSigmoidProblem::alibi_offset; the dense ops only).
  int64_t alibi_offset = 0;
};

// Inputs made readable by the backend. q, k, v (and dout) are the caller's tensors or, where
// the backend cannot read them in place, copies; alibi likewise. Keep this object alive until
// the launch has been enqueued: it owns the copies.
struct Inputs {
  Backend backend;
  StableTensor q, k, v;
  std::optional<StableTensor> dout;
  std::optional<StableTensor> alibi;
  Problem problem;
  std::optional<StableTensor> dropout_seed;  // what problem.dropout_seed points into
};

// Checks q, k, v (and dout when given) and the parameters, and fills `problem`. `op` names the op
// in messages ("flash_sigmoid::fwd"). Throws std::runtime_error naming the argument.
Inputs prepare_inputs(const char* op, const StableTensor& q, const StableTensor& k, const StableTensor& v,
                      const std::optional<StableTensor>& dout, const OpParams& params);

// The packed-sequence arguments of the varlen ops, as they arrive from the schema.
struct VarlenParams {
  StableTensor cu_seqlens_q, cu_seqlens_k;  // int32 [batch + 1], on q's device
  int64_t max_seqlen_q, max_seqlen_k;
  std::optional<StableTensor> sigmoid_bias_per_batch;  // fp32 [batch]
  bool sigmoid_bias_auto;
};

// Inputs of a varlen op: q [total_q, Hq, D], k, v [total_k, Hkv, D] (and dout like q) as one packed
// problem; `offsets` and `bias` own what problem.cu_seqlens_* and sigmoid_bias_per_batch point
// into. Checks ranks, dtypes, devices and shapes (never the offsets' values: on the CPU the public
// API reads and checks them; on CUDA they are device memory, never read on the host). Throws
// std::runtime_error naming the argument.
struct VarlenInputs {
  Inputs in;
  StableTensor cu_q, cu_k;
  std::optional<StableTensor> bias;
};
VarlenInputs prepare_varlen_inputs(const char* op, const StableTensor& q, const StableTensor& k, const StableTensor& v,
                                   const std::optional<StableTensor>& dout, const VarlenParams& varlen,
                                   const OpParams& params);

// The kvcache_fwd op (docs/kvcache.md): the append step's and the forward's arguments over the
// caller's tensors, `q_rotated`, `out` and the key counts they point into. On CUDA tensors the
// append is the GPU kernel's (kvcache_append) and writes the key counts into device memory
// (seqused_k_device); without new tokens or rotary, cache_seqlens is the forward's key counts.
// Checks ranks, dtypes, devices and the shapes that tie the tensors together; the public API
// checks the rest (strides, page size, and on the CPU the index values). Fill in place (the
// structs point into the object); throws std::runtime_error naming the argument.
struct KvCacheInputs {
  Backend backend;
  KvAppendArgs append;
  bool appends = false;  // new tokens or rotary: the append runs before the forward
  ForwardArgs forward;
  std::vector<int32_t> seqused_k;  // CPU: cache_seqlens + seqlen_new
  std::optional<StableTensor> seqused_k_device;  // CUDA with an append: the same, written by the kernel
  StableTensor q_rotated, out;  // q_rotated: the forward's q (q itself, a rotated copy, or a readable copy)
  std::optional<StableTensor> alibi;
};
struct KvCacheParams {
  std::optional<StableTensor> k, v, rotary_cos, rotary_sin;
  StableTensor cache_seqlens;
  std::optional<StableTensor> cache_batch_idx, block_table;
  bool rotary_interleaved;
  bool rotary_q_steps;  // q's token i rotated at cache_seqlens + i (else all at cache_seqlens)
  int64_t num_splits;   // 0: choose (the GPU decode kernel's splits; the CPU does not split)
};
void prepare_kvcache_inputs(const char* op, const StableTensor& q, const StableTensor& k_cache,
                            const StableTensor& v_cache, const KvCacheParams& kv, const OpParams& params,
                            KvCacheInputs* in);

// Checks params.dropout_p and params.dropout_seed (int64 [2] on q's device, required when p rounds
// to a dropout) and sets problem->dropout_p/dropout_seed; returns the tensor dropout_seed points
// into (keep it alive with the problem). Throws std::runtime_error naming the argument.
std::optional<StableTensor> prepare_dropout(const char* op, const OpParams& params, const StableTensor& q,
                                            Problem* problem);

// Whether `backend` can read or write `t` in place: head dim contiguous, no negative strides and,
// for the GPU kernels, 16-byte vectors (aligned pointer, strides in multiples of 16 bytes).
bool readable_in_place(const StableTensor& t, Backend backend);

// A packed [total, heads, head_dim] tensor as the public API's [1, total, heads, head_dim] view
// (stride_batch 0: packed problems never use it), size-1 dims and empty tensors as api_tensor.
Tensor api_packed_tensor(const StableTensor& t);

// A [batch, seqlen, heads, head_dim] view of `t` for the public API. Size-1 dims get stride 0
// (any stride is valid there, and 0 satisfies every backend's stride rules); an empty tensor
// gets strides (0, 0, 0, 1).
Tensor api_tensor(const StableTensor& t);

// A contiguous tensor of `sizes` with t's dtype and device, from torch's allocator.
StableTensor empty_like_sizes(const StableTensor& t, const StableTensor& sizes_of);

// `bytes` of scratch on t's device (uint8), from torch's allocator.
StableTensor scratch_bytes(const StableTensor& t, size_t bytes);

// Throws std::runtime_error "op: <last_error> [status]" unless `status` is success.
void check_status(const char* op, Status status);

}  // namespace flash_sigmoid::torch_binding

// Layer: public API. The C++ entry points: validate, pick the compiled kernel for the device,
// launch on the caller's stream. No allocation, no host synchronisation, no exceptions escape.
#include <cmath>
#include <sstream>
#include <string>

#include <cuda_runtime_api.h>

#include "api/checker.hpp"
#include "api/error.hpp"
#include "api/validate.hpp"
#include "cpu/attention_cpu.hpp"
#include "cpu/cpu_dropout.hpp"
#include "cpu/kvcache_cpu.hpp"
#include "dispatch/registry.hpp"

namespace flash_sigmoid {
namespace {

using dispatch::Direction;
using dispatch::KernelEntry;

// Compute capability * 10 of the current device, or a failed status with the CUDA error named.
Status current_device_arch(const char* where, int* arch) {
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  int major = 0, minor = 0;
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err != cudaSuccess) {
    cudaGetLastError();  // do not leave a sticky-looking error for the caller's next check
    return api::fail(Status::kCudaError,
                     std::string(where) + ": no usable CUDA device: " + cudaGetErrorString(err));
  }
  *arch = major * 10 + minor;
  return Status::kSuccess;
}

// The registry's question for a validated problem; device_arch is filled in where a device is asked.
dispatch::KernelQuery kernel_query(Direction direction, const Problem& p, MaskKind mask, bool deterministic) {
  dispatch::KernelQuery query{direction, static_cast<DType>(p.dtype), static_cast<int>(p.head_dim), mask,
                              p.kernel_arch,  /*device_arch=*/0, deterministic};
  query.variant = p.kernel_variant;
  query.dropout = make_dropout(p.dropout_p, 0, 0).enabled();
  return query;
}

// Finds the kernel for a validated problem: first whether any arch has it built (no device
// needed), then the best one that runs on the current device.
Status select_kernel(Direction direction, const Problem& p, MaskKind mask, bool deterministic, const char* where,
                     const KernelEntry** kernel, const ForwardParams* forward = nullptr) {
  std::string why;
  dispatch::KernelQuery query = kernel_query(direction, p, mask, deterministic);
  query.forward = forward;  // a kernel that cannot serve these tensors (e.g. TMA's alignment) is passed over
  // Known without a device: whether the key (of the requested family and variant, if named) is
  // built, so a machine without a GPU answers Unsupported rather than a CUDA error.
  if (!dispatch::any_kernel_for(query, &why)) {
    return api::fail(Status::kUnsupported, std::string(where) + ": " + why);
  }
  if (Status s = current_device_arch(where, &query.device_arch); s != Status::kSuccess) return s;
  *kernel = dispatch::find_kernel(query, &why);
  if (*kernel == nullptr) return api::fail(Status::kUnsupported, std::string(where) + ": " + why);
  return Status::kSuccess;
}

Status launched(cudaError_t err, const KernelEntry& kernel, const char* where) {
  if (err != cudaSuccess) {
    return api::fail(Status::kCudaError,
                     std::string(where) + ": kernel " + kernel.name + " failed to launch: " + cudaGetErrorString(err));
  }
  return api::succeed();
}

// The backward's workspace, as the kernels that could serve the problem report it (each kernel
// owns its size: dispatch::backward_workspace_bytes). Needs no device.
size_t backward_workspace_bytes(const BackwardArgs& args) {
  if (api::nothing_to_do(args)) return 0;
  const BackwardParams params = api::make_params(args, nullptr);
  return dispatch::backward_workspace_bytes(
      kernel_query(Direction::kBwd, args.problem, params.problem.mask.kind, params.deterministic), params);
}

// A caller's workspace against what the call needs: at least `need` bytes (named by `what`), on a
// non-null 16-byte aligned device pointer.
Status check_workspace_bytes(size_t need, Workspace workspace, const char* where, const char* what) {
  if (need == 0) return Status::kSuccess;
  if (workspace.bytes < need) {
    return api::fail(Status::kWorkspaceTooSmall,
                     std::string(where) + ": workspace.bytes: expected at least " + std::to_string(need) + " (" +
                         what + ", see workspace_size), got " + std::to_string(workspace.bytes));
  }
  if (workspace.data == nullptr || reinterpret_cast<uintptr_t>(workspace.data) % 16 != 0) {
    std::ostringstream got;
    if (workspace.data == nullptr) got << "NULL";
    else got << workspace.data;
    return api::fail(Status::kInvalidArgument, std::string(where) +
                                                   ": workspace.data: expected a non-null 16-byte aligned device "
                                                   "pointer, got " + got.str());
  }
  return Status::kSuccess;
}

Status check_workspace(const BackwardArgs& args, Workspace workspace, const char* where) {
  return check_workspace_bytes(backward_workspace_bytes(args), workspace, where, "the dQ accumulator");
}

// The decode key (its decode and append kernels) for a problem's dtype and head dim on the current
// device: first whether one is built (no device needed, so a machine without a GPU answers
// Unsupported), then the one that runs here.
Status select_decode_key(const Problem& p, const char* where, const dispatch::DecodeKernelEntry** kernel) {
  std::string why;
  const DType dtype = static_cast<DType>(p.dtype);
  if (dispatch::find_decode_kernel(dtype, static_cast<int>(p.head_dim), 0, &why) == nullptr) {
    return api::fail(Status::kUnsupported, std::string(where) + ": " + why);
  }
  int arch = 0;
  if (Status s = current_device_arch(where, &arch); s != Status::kSuccess) return s;
  *kernel = dispatch::find_decode_kernel(dtype, static_cast<int>(p.head_dim), arch, &why);
  if (*kernel == nullptr) return api::fail(Status::kUnsupported, std::string(where) + ": " + why);
  return Status::kSuccess;
}

// The decode kernel for a validated KV-cache forward on the current device, and its plan (which
// reads the device's SM count and shared memory, never device memory).
Status select_decode(const ForwardArgs& args, const char* where, const dispatch::DecodeKernelEntry** kernel,
                     DecodePlan* plan) {
  const Problem& p = args.problem;
  if (Status s = select_decode_key(p, where, kernel); s != Status::kSuccess) return s;
  int device = 0, sms = 0, smem = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return api::fail(Status::kCudaError, std::string(where) + ": reading the device's attributes: " +
                                             cudaGetErrorString(err));
  }
  *plan = decode_plan(p.batch, p.seqlen_q, p.heads_q, p.heads_kv, p.head_dim, p.seqlen_k, p.num_splits, sms,
                      decode_blocks_per_sm((*kernel)->head_dim, smem));
  return Status::kSuccess;
}

// A KV-cache forward: the decode kernel with the plan's splits.
Status decode_forward(const ForwardArgs& args, Workspace workspace, Stream stream) {
  const dispatch::DecodeKernelEntry* kernel = nullptr;
  DecodePlan plan;
  if (Status s = select_decode(args, "forward", &kernel, &plan); s != Status::kSuccess) return s;
  if (Status s = check_workspace_bytes(plan.workspace_bytes, workspace, "forward", "the KV-cache splits' partial sums"); s != Status::kSuccess) return s;
  const DecodeParams params = api::make_decode_params(args, plan, workspace.data);
  const cudaError_t err = kernel->launch(params, reinterpret_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) {
    return api::fail(Status::kCudaError, std::string("forward: kernel ") + kernel->name +
                                             " failed to launch: " + cudaGetErrorString(err));
  }
  return api::succeed();
}

}  // namespace

Problem problem_init(int64_t head_dim) {
  Problem p{};
  p.dtype = FLASH_SIGMOID_FLOAT16;
  p.head_dim = head_dim;
  p.scale = head_dim > 0 ? 1.0f / std::sqrt(static_cast<float>(head_dim)) : 1.0f;
  p.sigmoid_bias = 0.0f;
  p.causal = 0;
  p.window_left = -1;
  p.window_right = -1;
  p.alibi_slopes = nullptr;
  p.alibi_stride_batch = 0;
  p.score_function = FLASH_SIGMOID_SIGMOID_VIA_EXP2;
  p.kernel_arch = 0;
  p.kernel_variant = nullptr;
  p.cu_seqlens_q = nullptr;
  p.cu_seqlens_k = nullptr;
  p.max_seqlen_q = 0;
  p.max_seqlen_k = 0;
  p.sigmoid_bias_per_batch = nullptr;
  p.sigmoid_bias_auto = 0;
  p.seqused_k = nullptr;
  p.kv_batch_idx = nullptr;
  p.block_table = nullptr;
  p.block_table_stride_batch = 0;
  p.page_size = 0;
  p.kv_batch = 0;
  p.num_splits = 0;
  p.dropout_p = 0.0f;
  p.dropout_seed = nullptr;
  p.alibi_offset = 0;
  return p;
}

Tensor contiguous_tensor(void* data, int64_t seqlen, int64_t heads, int64_t head_dim) {
  return Tensor{data, seqlen * heads * head_dim, heads * head_dim, head_dim, 1};
}

Status can_implement(const ForwardArgs& args) {
  if (Status s = api::validate(&args, api::Backend::kCuda, "can_implement"); s != Status::kSuccess) return s;
  if (api::is_kvcache(args.problem)) {
    const dispatch::DecodeKernelEntry* kernel = nullptr;
    DecodePlan plan;
    if (Status s = select_decode(args, "can_implement", &kernel, &plan); s != Status::kSuccess) return s;
    return api::succeed();
  }
  const KernelEntry* kernel = nullptr;
  const ForwardParams params = api::make_params(args);
  if (Status s = select_kernel(Direction::kFwd, args.problem, params.problem.mask.kind, false, "can_implement", &kernel, &params);
      s != Status::kSuccess) {
    return s;
  }
  return api::succeed();
}

Status can_implement(const BackwardArgs& args) {
  if (Status s = api::validate(&args, api::Backend::kCuda, "can_implement"); s != Status::kSuccess) return s;
  const KernelEntry* kernel = nullptr;
  const BackwardParams params = api::make_params(args, nullptr);
  if (Status s = select_kernel(Direction::kBwd, args.problem, params.problem.mask.kind, params.deterministic, "can_implement", &kernel);
      s != Status::kSuccess) {
    return s;
  }
  return api::succeed();
}

Status workspace_size(const ForwardArgs& args, size_t* bytes) {
  if (bytes == nullptr) return api::fail(Status::kInvalidArgument, "workspace_size: bytes: expected a non-null pointer, got NULL");
  *bytes = 0;
  if (Status s = api::validate(&args, api::Backend::kCuda, "workspace_size"); s != Status::kSuccess) return s;
  if (!api::is_kvcache(args.problem) || api::nothing_to_do(args)) return Status::kSuccess;
  // The decode kernel's splits need fp32 partial sums; their number depends on the device.
  const dispatch::DecodeKernelEntry* kernel = nullptr;
  DecodePlan plan;
  if (Status s = select_decode(args, "workspace_size", &kernel, &plan); s != Status::kSuccess) return s;
  *bytes = plan.workspace_bytes;
  return api::succeed();
}

Status workspace_size(const BackwardArgs& args, size_t* bytes) {
  if (bytes == nullptr) return api::fail(Status::kInvalidArgument, "workspace_size: bytes: expected a non-null pointer, got NULL");
  *bytes = 0;
  if (Status s = api::validate(&args, api::Backend::kCuda, "workspace_size"); s != Status::kSuccess) return s;
  *bytes = backward_workspace_bytes(args);
  return Status::kSuccess;
}

Status forward(const ForwardArgs& args, Workspace workspace, Stream stream) {
  if (Status s = api::validate(&args, api::Backend::kCuda, "forward"); s != Status::kSuccess) return s;
  if (api::nothing_to_do(args)) return api::succeed();
  if (api::is_kvcache(args.problem)) return decode_forward(args, workspace, stream);
  const ForwardParams params = api::make_params(args);
  const KernelEntry* kernel = nullptr;
  if (Status s = select_kernel(Direction::kFwd, args.problem, params.problem.mask.kind, false, "forward", &kernel, &params);
      s != Status::kSuccess) {
    return s;
  }
  return launched(kernel->forward(params, reinterpret_cast<cudaStream_t>(stream)), *kernel, "forward");
}

Status backward(const BackwardArgs& args, Workspace workspace, Stream stream) {
  if (Status s = api::validate(&args, api::Backend::kCuda, "backward"); s != Status::kSuccess) return s;
  if (Status s = check_workspace(args, workspace, "backward"); s != Status::kSuccess) return s;
  if (api::nothing_to_do(args)) return api::succeed();
  const BackwardParams params = api::make_params(args, workspace.data);
  const KernelEntry* kernel = nullptr;
  if (Status s = select_kernel(Direction::kBwd, args.problem, params.problem.mask.kind, params.deterministic, "backward", &kernel);
      s != Status::kSuccess) {
    return s;
  }
  return launched(kernel->backward(params, reinterpret_cast<cudaStream_t>(stream)), *kernel, "backward");
}

Status kvcache_append(const KvAppendArgs& args, Stream stream) {
  constexpr const char* where = "kvcache_append";
  if (Status s = api::validate(&args, api::Backend::kCuda, where); s != Status::kSuccess) return s;
  const AppendParams params = api::make_params(args);
  if (params.batch == 0 || (params.seqlen_new == 0 && params.seqlen_q == 0 && params.seqused_k_out == nullptr)) {
    return api::succeed();
  }
  // The append kernel is built with each decode key (per dtype, any head dim).
  const dispatch::DecodeKernelEntry* kernel = nullptr;
  if (Status s = select_decode_key(args.problem, where, &kernel); s != Status::kSuccess) return s;
  const cudaError_t err = kernel->append(params, reinterpret_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) {
    return api::fail(Status::kCudaError, std::string(where) + ": the append kernel of " + kernel->name +
                                             " failed to launch: " + cudaGetErrorString(err));
  }
  return api::succeed();
}

namespace cpu {

Status forward(const ForwardArgs& args, int num_threads) {
  if (Status s = api::validate(&args, api::Backend::kCpu, "cpu::forward"); s != Status::kSuccess) return s;
  if (Status s = api::check_host_sequences(args.problem, "cpu::forward"); s != Status::kSuccess) return s;
  if (num_threads < 0) {
    return api::fail(Status::kInvalidArgument, "cpu::forward: num_threads: expected >= 0 (0: one per hardware thread), got " +
                                                   std::to_string(num_threads));
  }
  if (api::nothing_to_do(args)) return api::succeed();
  if (!cpu_impl::forward(args, num_threads)) {
    return api::fail(Status::kInternalError, "cpu::forward: a worker failed (host scratch memory could not be allocated)");
  }
  return api::succeed();
}

Status backward(const BackwardArgs& args, int num_threads) {
  if (Status s = api::validate(&args, api::Backend::kCpu, "cpu::backward"); s != Status::kSuccess) return s;
  if (Status s = api::check_host_sequences(args.problem, "cpu::backward"); s != Status::kSuccess) return s;
  if (num_threads < 0) {
    return api::fail(Status::kInvalidArgument, "cpu::backward: num_threads: expected >= 0 (0: one per hardware thread), got " +
                                                   std::to_string(num_threads));
  }
  if (api::nothing_to_do(args)) return api::succeed();
  if (!cpu_impl::backward(args, num_threads)) {
    return api::fail(Status::kInternalError, "cpu::backward: a worker failed (host scratch memory could not be allocated)");
  }
  return api::succeed();
}

Status kvcache_append(const KvAppendArgs& args, int num_threads) {
  if (Status s = api::validate(&args, api::Backend::kCpu, "cpu::kvcache_append"); s != Status::kSuccess) return s;
  if (Status s = api::check_host_append(args, "cpu::kvcache_append"); s != Status::kSuccess) return s;
  if (num_threads < 0) {
    return api::fail(Status::kInvalidArgument,
                     "cpu::kvcache_append: num_threads: expected >= 0 (0: one per hardware thread), got " +
                         std::to_string(num_threads));
  }
  if (!cpu_impl::kvcache_append(args)) {
    return api::fail(Status::kInternalError, "cpu::kvcache_append: host scratch memory could not be allocated");
  }
  return api::succeed();
}

Status dropout_mask(float dropout_p, const uint64_t* dropout_seed, int64_t batch_index, int64_t batch, int64_t heads_q,
                    int64_t seqlen_q, int64_t seqlen_k, uint8_t* keep) {
  constexpr const char* where = "cpu::dropout_mask";
  api::Checker c(where, api::Backend::kCpu);
  c.require(std::isfinite(dropout_p) && dropout_p >= 0.0f && dropout_p < 1.0f, "dropout_p", "a probability in [0, 1)",
            dropout_p);
  const DropoutParams off = make_dropout(dropout_p, 0, 0);
  if (off.enabled()) {
    c.require(dropout_seed != nullptr, "dropout_seed", "a pointer to {seed, offset} (two uint64) when dropout_p > 0",
              "NULL");
    c.require(reinterpret_cast<uintptr_t>(dropout_seed) % alignof(uint64_t) == 0, "dropout_seed",
              "an 8-byte aligned pointer to two uint64", static_cast<const void*>(dropout_seed));
  }
  c.require(batch_index >= 0, "batch_index", ">= 0", batch_index);
  c.require(batch >= 0, "batch", ">= 0", batch);
  c.require(heads_q >= 1, "heads_q", ">= 1", heads_q);
  c.require(seqlen_q >= 0 && seqlen_q <= api::kMaxSeqlen, "seqlen_q", "0..2^30", seqlen_q);
  c.require(seqlen_k >= 0 && seqlen_k <= api::kMaxSeqlen, "seqlen_k", "0..2^30", seqlen_k);
  if (!c.ok()) return c.status();
  // The mask's head index (batch_index + b) * heads_q + h is 32-bit (the Philox counter's word).
  int64_t heads_total = 0, entries = 0;
  const bool bh_overflow = __builtin_add_overflow(batch_index, batch, &heads_total) ||
                           __builtin_mul_overflow(heads_total, heads_q, &heads_total) ||
                           heads_total > (int64_t{1} << 32);
  c.require(!bh_overflow, "batch_index", "(batch_index + batch) * heads_q <= 2^32 (the mask's 32-bit head index)",
            batch_index);
  const bool size_overflow = __builtin_mul_overflow(batch, heads_q, &entries) ||
                             __builtin_mul_overflow(entries, seqlen_q, &entries) ||
                             __builtin_mul_overflow(entries, seqlen_k, &entries);
  c.require(!size_overflow, "batch", "batch * heads_q * seqlen_q * seqlen_k < 2^63", batch);
  if (!c.ok()) return c.status();
  c.require(entries == 0 || keep != nullptr, "keep", "a host pointer to batch * heads_q * seqlen_q * seqlen_k bytes",
            "NULL");
  if (!c.ok()) return c.status();
  if (entries == 0) return api::succeed();
  const DropoutParams d = off.enabled() ? make_dropout(dropout_p, dropout_seed[0], dropout_seed[1]) : off;
  cpu_impl::dropout_mask(d, batch_index, batch, heads_q, seqlen_q, seqlen_k, keep);
  return api::succeed();
}

}  // namespace cpu

const char* last_error() { return api::last_error_message(); }

const char* build_info() {
  static const std::string info = [] {
    std::string s = "flash_sigmoid " FLASH_SIGMOID_VERSION "\n";
    s += "cuda_runtime " + std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) + "\n";
    s += "archs " FLASH_SIGMOID_BUILT_ARCHS "\n";
    s += "kernels:\n" + dispatch::compiled_keys();
    return s;
  }();
  return info.c_str();
}

const char* status_name(Status status) {
  switch (status) {
    case Status::kSuccess: return "success";
    case Status::kInvalidArgument: return "invalid argument";
    case Status::kUnsupported: return "unsupported";
    case Status::kWorkspaceTooSmall: return "workspace too small";
    case Status::kCudaError: return "CUDA error";
    case Status::kInternalError: return "internal error";
  }
  return "unknown status";
}

}  // namespace flash_sigmoid

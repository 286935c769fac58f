// Layer: PyTorch binding. Registers the flash_sigmoid ops with the dispatcher through torch's
// stable ABI (one build serves torch >= 2.10), for CPU and CUDA tensors:
//
//   fwd(q, k, v, scale, sigmoid_bias, causal, window_left, window_right, alibi_slopes,
//       score_function, kernel_arch, kernel_variant, deterministic, dropout_p=0, dropout_seed=None,
//       alibi_offset=0) -> out
//   fwd_out(..., Tensor(a!) out, dropout_p=0, dropout_seed=None, alibi_offset=0) -> ()   into a caller's tensor
//   bwd(dout, q, k, v, ...same..., deterministic, dropout_p=0, dropout_seed=None, alibi_offset=0) -> (dq, dk, dv)
//               alibi_offset: a shift of the ALiBi distances (a piece of a longer sequence:
//               flash_sigmoid.parallel; FlashSigmoidProblem::alibi_offset)
//   varlen_fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, sigmoid_bias,
//              sigmoid_bias_per_batch, sigmoid_bias_auto, causal, ..., deterministic) -> out
//   varlen_bwd(dout, q, k, v, ...same...) -> (dq, dk, dv)       packed sequences (docs/varlen.md)
//   dropout_mask(dropout_seed, dropout_p, batch_index, batch, heads_q, seqlen_q, seqlen_k) -> bool mask
//               the keep mask the ops apply (docs/dropout.md), computed on the CPU
// Every fwd/bwd takes dropout_p and dropout_seed (int64 [2], {seed, offset}'s bits, on q's device;
// docs/dropout.md): forward and backward given the same tensor drop the same entries.
//   kvcache_fwd(q, k_cache(a!), v_cache(b!), k, v, rotary_cos, rotary_sin, cache_seqlens,
//               cache_batch_idx, block_table, ..., num_splits) -> out
//               CPU: append, then attend; CUDA: attend only (the decode kernel; docs/kvcache.md)
//   build_info() -> str
//
// Each op builds the public API's structs from the tensors' strides, takes outputs and workspace
// from torch's allocator, runs the CPU implementation or launches the GPU kernel on torch's
// current CUDA stream (no host synchronisation), and turns a failed Status into an error carrying
// flash_sigmoid::last_error(). Fake (meta) functions and autograd are registered from Python
// (python/flash_sigmoid/_library.py). `deterministic` of fwd is not used by the forward: it is
// there so the autograd formula can hand it to bwd.
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include "tensor_args.hpp"

namespace flash_sigmoid::torch_binding {
namespace {

int cpu_threads() { return static_cast<int>(torch::stable::get_num_threads()); }

#ifdef FLASH_SIGMOID_TORCH_CUDA
// torch's current stream on the tensor's device (what torch.cuda.current_stream() returns), so the
// kernel is ordered with the surrounding torch work and is captured by CUDA graphs.
Stream current_stream(const StableTensor& t) {
  void* stream = nullptr;
  TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream));
  return static_cast<Stream>(stream);
}
#endif

#ifndef FLASH_SIGMOID_TORCH_CUDA
[[noreturn]] void no_cuda(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": this flash_sigmoid_torch library was built against a torch without CUDA; "
                           "only CPU tensors are supported");
}
#endif

// Runs a filled-in forward on the inputs' backend: the CPU implementation, or the kernels on torch's
// current stream of the inputs' device.
void launch_forward(const char* op, const Inputs& in, const ForwardArgs& args) {
  if (in.backend == Backend::kCpu) {
    check_status(op, cpu::forward(args, cpu_threads()));
    return;
  }
#ifdef FLASH_SIGMOID_TORCH_CUDA
  torch::stable::accelerator::DeviceGuard guard(in.q.get_device_index());
  check_status(op, forward(args, Workspace{}, current_stream(in.q)));
#else
  no_cuda(op);
#endif
}

// As launch_forward, for the backward: on CUDA with the workspace it asks for, from torch's allocator.
void launch_backward(const char* op, const Inputs& in, const BackwardArgs& args) {
  if (in.backend == Backend::kCpu) {
    check_status(op, cpu::backward(args, cpu_threads()));
    return;
  }
#ifdef FLASH_SIGMOID_TORCH_CUDA
  torch::stable::accelerator::DeviceGuard guard(in.q.get_device_index());
  size_t bytes = 0;
  check_status(op, workspace_size(args, &bytes));
  StableTensor workspace = scratch_bytes(in.q, bytes);
  check_status(op, backward(args, Workspace{bytes ? workspace.data_ptr() : nullptr, bytes}, current_stream(in.q)));
#else
  no_cuda(op);
#endif
}

// The problem and tensor views of a call: `view` is api_tensor (dense [B, S, H, D]) or
// api_packed_tensor (varlen [total, H, D]).
template <class View>
ForwardArgs forward_args(const Inputs& in, const StableTensor& out, View view) {
  ForwardArgs args{};
  args.problem = in.problem;
  args.q = view(in.q);
  args.k = view(in.k);
  args.v = view(in.v);
  args.out = view(out);
  return args;
}

template <class View>
BackwardArgs backward_args(const Inputs& in, const StableTensor& dq, const StableTensor& dk, const StableTensor& dv,
                           bool deterministic, View view) {
  BackwardArgs args{};
  args.problem = in.problem;
  args.q = view(in.q);
  args.k = view(in.k);
  args.v = view(in.v);
  args.dout = view(*in.dout);
  args.dq = view(dq);
  args.dk = view(dk);
  args.dv = view(dv);
  args.deterministic = deterministic ? 1 : 0;
  return args;
}

// Runs the forward into `out` (contiguous, from prepare). The inputs object owns any copies.
void run_forward(const char* op, const Inputs& in, const StableTensor& out) {
  launch_forward(op, in, forward_args(in, out, [](const StableTensor& t) { return api_tensor(t); }));
}

// kernel_variant is the op's own argument, alive for the whole call: the problem points into it.
OpParams params_of(double scale, double sigmoid_bias, bool causal, int64_t window_left, int64_t window_right,
                   std::optional<StableTensor> alibi_slopes, int64_t score_function, int64_t kernel_arch,
                   const std::string& kernel_variant, double dropout_p, std::optional<StableTensor> dropout_seed,
                   int64_t alibi_offset = 0) {
  return OpParams{scale,          sigmoid_bias, causal,          window_left, window_right, std::move(alibi_slopes),
                  score_function, kernel_arch,  &kernel_variant, dropout_p,   std::move(dropout_seed), alibi_offset};
}

StableTensor fwd(StableTensor q, StableTensor k, StableTensor v, double scale, double sigmoid_bias, bool causal,
                 int64_t window_left, int64_t window_right, std::optional<StableTensor> alibi_slopes,
                 int64_t score_function, int64_t kernel_arch, std::string kernel_variant,
                 bool /*deterministic: for bwd*/, double dropout_p, std::optional<StableTensor> dropout_seed,
                 int64_t alibi_offset) {
  constexpr const char* op = "flash_sigmoid::fwd";
  const Inputs in = prepare_inputs(op, q, k, v, std::nullopt,
                                   params_of(scale, sigmoid_bias, causal, window_left, window_right,
                                             std::move(alibi_slopes), score_function, kernel_arch, kernel_variant, dropout_p,
                                             std::move(dropout_seed), alibi_offset));
  StableTensor out = empty_like_sizes(in.q, q);
  run_forward(op, in, out);
  return out;
}

void fwd_out(StableTensor q, StableTensor k, StableTensor v, double scale, double sigmoid_bias, bool causal,
             int64_t window_left, int64_t window_right, std::optional<StableTensor> alibi_slopes,
             int64_t score_function, int64_t kernel_arch, std::string kernel_variant, StableTensor out,
             double dropout_p, std::optional<StableTensor> dropout_seed, int64_t alibi_offset) {
  constexpr const char* op = "flash_sigmoid::fwd_out";
  const Inputs in = prepare_inputs(op, q, k, v, std::nullopt,
                                   params_of(scale, sigmoid_bias, causal, window_left, window_right,
                                             std::move(alibi_slopes), score_function, kernel_arch, kernel_variant, dropout_p,
                                             std::move(dropout_seed), alibi_offset));
  bool same_shape = out.dim() == 4;
  for (int64_t d = 0; same_shape && d < 4; ++d) same_shape = out.size(d) == q.size(d);
  if (!same_shape || out.scalar_type() != q.scalar_type() || out.is_cuda() != q.is_cuda() ||
      (out.is_cuda() && out.get_device_index() != q.get_device_index())) {
    throw std::runtime_error(std::string(op) + ": out: expected the shape, dtype and device of q");
  }
  // Write in place when the backend can; otherwise into a contiguous buffer copied over after.
  if (readable_in_place(out, in.backend)) {
    run_forward(op, in, out);
    return;
  }
  StableTensor buffer = empty_like_sizes(in.q, q);
  run_forward(op, in, buffer);
  torch::stable::copy_(out, buffer);
}

std::tuple<StableTensor, StableTensor, StableTensor> bwd(StableTensor dout, StableTensor q, StableTensor k,
                                                         StableTensor v, double scale, double sigmoid_bias,
                                                         bool causal, int64_t window_left, int64_t window_right,
                                                         std::optional<StableTensor> alibi_slopes,
                                                         int64_t score_function, int64_t kernel_arch,
                                                         std::string kernel_variant, bool deterministic,
                                                         double dropout_p, std::optional<StableTensor> dropout_seed,
                                                         int64_t alibi_offset) {
  constexpr const char* op = "flash_sigmoid::bwd";
  const Inputs in = prepare_inputs(op, q, k, v, dout,
                                   params_of(scale, sigmoid_bias, causal, window_left, window_right,
                                             std::move(alibi_slopes), score_function, kernel_arch, kernel_variant, dropout_p,
                                             std::move(dropout_seed), alibi_offset));
  StableTensor dq = empty_like_sizes(in.q, q);
  StableTensor dk = empty_like_sizes(in.q, k);
  StableTensor dv = empty_like_sizes(in.q, v);
  launch_backward(op, in, backward_args(in, dq, dk, dv, deterministic, [](const StableTensor& t) { return api_tensor(t); }));
  return {dq, dk, dv};
}

// Packed sequences (docs/varlen.md): q [total_q, Hq, D], k, v [total_k, Hkv, D], cu_seqlens_* int32
// [B + 1]. One op call for the whole batch (one graph node). The public API reads the offsets on
// the CPU and returns Unsupported on CUDA until the GPU kernels read them.
VarlenParams varlen_of(StableTensor cu_seqlens_q, StableTensor cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
                       std::optional<StableTensor> sigmoid_bias_per_batch, bool sigmoid_bias_auto) {
  return VarlenParams{std::move(cu_seqlens_q), std::move(cu_seqlens_k), max_seqlen_q, max_seqlen_k,
                      std::move(sigmoid_bias_per_batch), sigmoid_bias_auto};
}

StableTensor varlen_fwd(StableTensor q, StableTensor k, StableTensor v, StableTensor cu_seqlens_q,
                        StableTensor cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double scale,
                        double sigmoid_bias, std::optional<StableTensor> sigmoid_bias_per_batch, bool sigmoid_bias_auto,
                        bool causal, int64_t window_left, int64_t window_right,
                        std::optional<StableTensor> alibi_slopes, int64_t score_function, int64_t kernel_arch,
                        std::string kernel_variant, bool /*deterministic: for varlen_bwd*/, double dropout_p,
                        std::optional<StableTensor> dropout_seed) {
  constexpr const char* op = "flash_sigmoid::varlen_fwd";
  const VarlenInputs vi = prepare_varlen_inputs(
      op, q, k, v, std::nullopt,
      varlen_of(std::move(cu_seqlens_q), std::move(cu_seqlens_k), max_seqlen_q, max_seqlen_k,
                std::move(sigmoid_bias_per_batch), sigmoid_bias_auto),
      params_of(scale, sigmoid_bias, causal, window_left, window_right, std::move(alibi_slopes), score_function,
                kernel_arch, kernel_variant, dropout_p, std::move(dropout_seed)));
  const Inputs& in = vi.in;
  StableTensor out = empty_like_sizes(in.q, q);
  launch_forward(op, in, forward_args(in, out, [](const StableTensor& t) { return api_packed_tensor(t); }));
  return out;
}

std::tuple<StableTensor, StableTensor, StableTensor> varlen_bwd(
    StableTensor dout, StableTensor q, StableTensor k, StableTensor v, StableTensor cu_seqlens_q,
    StableTensor cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k, double scale, double sigmoid_bias,
    std::optional<StableTensor> sigmoid_bias_per_batch, bool sigmoid_bias_auto, bool causal, int64_t window_left,
    int64_t window_right, std::optional<StableTensor> alibi_slopes, int64_t score_function, int64_t kernel_arch,
    std::string kernel_variant, bool deterministic, double dropout_p, std::optional<StableTensor> dropout_seed) {
  constexpr const char* op = "flash_sigmoid::varlen_bwd";
  const VarlenInputs vi = prepare_varlen_inputs(
      op, q, k, v, dout,
      varlen_of(std::move(cu_seqlens_q), std::move(cu_seqlens_k), max_seqlen_q, max_seqlen_k,
                std::move(sigmoid_bias_per_batch), sigmoid_bias_auto),
      params_of(scale, sigmoid_bias, causal, window_left, window_right, std::move(alibi_slopes), score_function,
                kernel_arch, kernel_variant, dropout_p, std::move(dropout_seed)));
  const Inputs& in = vi.in;
  StableTensor dq = empty_like_sizes(in.q, q);
  StableTensor dk = empty_like_sizes(in.q, k);
  StableTensor dv = empty_like_sizes(in.q, v);
  launch_backward(op, in,
                  backward_args(in, dq, dk, dv, deterministic, [](const StableTensor& t) { return api_packed_tensor(t); }));
  return {dq, dk, dv};
}

// flash_attn_with_kvcache (python/flash_sigmoid/kvcache.py checks the arguments first): the append
// (new k, v into the cache in place, rotary on them and into a copy of q), then the forward over
// each row's cache_seqlens + seqlen_new keys, read in place (pages included). On CUDA both are
// kernels on the current stream (append, decode, and the split sum): no host sync, no other op.
// window_left/right are the forward's (flash-attn's rules already applied); rotary_q_steps is
// kvcache.py's position rule for q (causal or a window given).
StableTensor kvcache_fwd(StableTensor q, StableTensor k_cache, StableTensor v_cache, std::optional<StableTensor> k,
                         std::optional<StableTensor> v, std::optional<StableTensor> rotary_cos,
                         std::optional<StableTensor> rotary_sin, StableTensor cache_seqlens,
                         std::optional<StableTensor> cache_batch_idx, std::optional<StableTensor> block_table,
                         double scale, double sigmoid_bias, bool causal, int64_t window_left, int64_t window_right,
                         bool rotary_interleaved, bool rotary_q_steps, std::optional<StableTensor> alibi_slopes,
                         int64_t num_splits) {
  constexpr const char* op = "flash_sigmoid::kvcache_fwd";
  const std::string variant;
  KvCacheInputs in;
  prepare_kvcache_inputs(
      op, q, k_cache, v_cache,
      KvCacheParams{std::move(k), std::move(v), std::move(rotary_cos), std::move(rotary_sin), std::move(cache_seqlens),
                    std::move(cache_batch_idx), std::move(block_table), rotary_interleaved, rotary_q_steps,
                    num_splits},
      OpParams{scale, sigmoid_bias, causal, window_left, window_right, std::move(alibi_slopes),
               FLASH_SIGMOID_SIGMOID_VIA_EXP2, 0, &variant, 0.0, std::nullopt},
      &in);
  if (in.backend == Backend::kCuda) {
#ifdef FLASH_SIGMOID_TORCH_CUDA
    // The append kernel, then the decode kernel; the splits' partial sums in workspace from torch's
    // allocator (graph-safe).
    torch::stable::accelerator::DeviceGuard guard(q.get_device_index());
    if (in.appends) check_status(op, kvcache_append(in.append, current_stream(q)));
    size_t bytes = 0;
    check_status(op, workspace_size(in.forward, &bytes));
    StableTensor workspace = scratch_bytes(q, bytes);
    check_status(op, forward(in.forward, Workspace{bytes ? workspace.data_ptr() : nullptr, bytes}, current_stream(q)));
    return in.out;
#else
    no_cuda(op);
#endif
  }
  check_status(op, cpu::kvcache_append(in.append, cpu_threads()));  // also fills in.seqused_k
  check_status(op, cpu::forward(in.forward, cpu_threads()));
  return in.out;
}

// The keep mask (docs/dropout.md) as a CPU bool tensor [batch, heads_q, seqlen_q, seqlen_k]: batch
// entries batch_index .. batch_index + batch - 1 (a packed sequence s: batch_index s, batch 1). The
// seed tensor is a CPU int64 [2] (a CUDA call's seed copied to the host gives the same mask).
StableTensor dropout_mask(StableTensor dropout_seed, double dropout_p, int64_t batch_index, int64_t batch,
                          int64_t heads_q, int64_t seqlen_q, int64_t seqlen_k) {
  constexpr const char* op = "flash_sigmoid::dropout_mask";
  if (!dropout_seed.is_cpu()) {
    throw std::runtime_error(std::string(op) + ": dropout_seed: expected a CPU tensor (copy a CUDA seed with .cpu())");
  }
  const std::string variant;
  Problem problem = problem_init(1);
  OpParams params{1.0, 0.0, false, -1, -1, std::nullopt, FLASH_SIGMOID_SIGMOID_VIA_EXP2, 0, &variant, dropout_p,
                  dropout_seed};
  const std::optional<StableTensor> seed = prepare_dropout(op, params, dropout_seed, &problem);
  for (const auto& [name, value] : {std::pair{"batch", batch}, std::pair{"heads_q", heads_q},
                                    std::pair{"seqlen_q", seqlen_q}, std::pair{"seqlen_k", seqlen_k}}) {
    if (value < 0) throw std::runtime_error(std::string(op) + ": " + name + ": expected >= 0, got " + std::to_string(value));
  }
  const std::vector<int64_t> sizes{batch, heads_q, seqlen_q, seqlen_k};
  StableTensor mask = torch::stable::new_empty(dropout_seed, sizes, torch::headeronly::ScalarType::Bool);
  check_status(op, cpu::dropout_mask(problem.dropout_p, problem.dropout_seed, batch_index, batch, heads_q, seqlen_q,
                                     seqlen_k, static_cast<uint8_t*>(mask.data_ptr())));
  return mask;
}

std::string build_info_op() { return build_info(); }

}  // namespace
}  // namespace flash_sigmoid::torch_binding

namespace fs_torch = flash_sigmoid::torch_binding;

STABLE_TORCH_LIBRARY(flash_sigmoid, m) {
  m.def(
      "fwd(Tensor q, Tensor k, Tensor v, float scale, float sigmoid_bias, bool causal, int window_left, "
      "int window_right, Tensor? alibi_slopes, int score_function, int kernel_arch, str kernel_variant, "
      "bool deterministic, float dropout_p=0.0, Tensor? dropout_seed=None, int alibi_offset=0) -> Tensor");
  m.def(
      "fwd_out(Tensor q, Tensor k, Tensor v, float scale, float sigmoid_bias, bool causal, int window_left, "
      "int window_right, Tensor? alibi_slopes, int score_function, int kernel_arch, str kernel_variant, "
      "Tensor(a!) out, float dropout_p=0.0, Tensor? dropout_seed=None, int alibi_offset=0) -> ()");
  m.def(
      "bwd(Tensor dout, Tensor q, Tensor k, Tensor v, float scale, float sigmoid_bias, bool causal, "
      "int window_left, int window_right, Tensor? alibi_slopes, int score_function, int kernel_arch, "
      "str kernel_variant, bool deterministic, float dropout_p=0.0, Tensor? dropout_seed=None, int alibi_offset=0) -> "
      "(Tensor, Tensor, Tensor)");
  m.def(
      "varlen_fwd(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, int max_seqlen_q, "
      "int max_seqlen_k, float scale, float sigmoid_bias, Tensor? sigmoid_bias_per_batch, bool sigmoid_bias_auto, "
      "bool causal, int window_left, int window_right, Tensor? alibi_slopes, int score_function, int kernel_arch, "
      "str kernel_variant, bool deterministic, float dropout_p=0.0, Tensor? dropout_seed=None) -> Tensor");
  m.def(
      "varlen_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
      "int max_seqlen_q, int max_seqlen_k, float scale, float sigmoid_bias, Tensor? sigmoid_bias_per_batch, "
      "bool sigmoid_bias_auto, bool causal, int window_left, int window_right, Tensor? alibi_slopes, "
      "int score_function, int kernel_arch, str kernel_variant, bool deterministic, float dropout_p=0.0, Tensor? dropout_seed=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "kvcache_fwd(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? k, Tensor? v, Tensor? rotary_cos, "
      "Tensor? rotary_sin, Tensor cache_seqlens, Tensor? cache_batch_idx, Tensor? block_table, float scale, "
      "float sigmoid_bias, bool causal, int window_left, int window_right, bool rotary_interleaved, "
      "bool rotary_q_steps, Tensor? alibi_slopes, int num_splits=0) -> Tensor");
  m.def(
      "dropout_mask(Tensor dropout_seed, float dropout_p, int batch_index, int batch, int heads_q, int seqlen_q, "
      "int seqlen_k) -> Tensor");
  m.def("build_info() -> str");
}

STABLE_TORCH_LIBRARY_IMPL(flash_sigmoid, CPU, m) {
  m.impl("fwd", TORCH_BOX(&fs_torch::fwd));
  m.impl("fwd_out", TORCH_BOX(&fs_torch::fwd_out));
  m.impl("bwd", TORCH_BOX(&fs_torch::bwd));
  m.impl("varlen_fwd", TORCH_BOX(&fs_torch::varlen_fwd));
  m.impl("varlen_bwd", TORCH_BOX(&fs_torch::varlen_bwd));
  m.impl("kvcache_fwd", TORCH_BOX(&fs_torch::kvcache_fwd));
  m.impl("dropout_mask", TORCH_BOX(&fs_torch::dropout_mask));
}

#ifdef FLASH_SIGMOID_TORCH_CUDA
STABLE_TORCH_LIBRARY_IMPL(flash_sigmoid, CUDA, m) {
  m.impl("fwd", TORCH_BOX(&fs_torch::fwd));
  m.impl("fwd_out", TORCH_BOX(&fs_torch::fwd_out));
  m.impl("bwd", TORCH_BOX(&fs_torch::bwd));
  m.impl("varlen_fwd", TORCH_BOX(&fs_torch::varlen_fwd));
  m.impl("varlen_bwd", TORCH_BOX(&fs_torch::varlen_bwd));
  m.impl("kvcache_fwd", TORCH_BOX(&fs_torch::kvcache_fwd));  // attends only (kvcache.py appends first)
}
#endif

STABLE_TORCH_LIBRARY_IMPL(flash_sigmoid, CompositeExplicitAutograd, m) {
  m.impl("build_info", TORCH_BOX(&fs_torch::build_info_op));
}

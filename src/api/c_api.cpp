// Layer: public API. The extern "C" shim: each C function forwards to the C++ API over the same
// structs. Null struct pointers are rejected here, with the same messages, before C++ sees them.
#include <string>

#include "api/error.hpp"
#include "flash_sigmoid/flash_sigmoid.h"
#include "flash_sigmoid/flash_sigmoid.hpp"

namespace fs = flash_sigmoid;

namespace {

FlashSigmoidStatus to_c(fs::Status s) { return static_cast<FlashSigmoidStatus>(s); }

template <class Args>
bool reject_null(const Args* args, const char* where, FlashSigmoidStatus* status) {
  if (args != nullptr) return false;
  *status = to_c(fs::api::fail(fs::Status::kInvalidArgument, std::string(where) + ": args: expected a non-null pointer, got NULL"));
  return true;
}

}  // namespace

extern "C" {

FlashSigmoidProblem flash_sigmoid_problem_init(int64_t head_dim) { return fs::problem_init(head_dim); }

FlashSigmoidTensor flash_sigmoid_contiguous_tensor(void* data, int64_t seqlen, int64_t heads, int64_t head_dim) {
  return fs::contiguous_tensor(data, seqlen, heads, head_dim);
}

FlashSigmoidStatus flash_sigmoid_can_implement_forward(const FlashSigmoidForwardArgs* args) {
  FlashSigmoidStatus s;
  if (reject_null(args, "can_implement", &s)) return s;
  return to_c(fs::can_implement(*args));
}

FlashSigmoidStatus flash_sigmoid_can_implement_backward(const FlashSigmoidBackwardArgs* args) {
  FlashSigmoidStatus s;
  if (reject_null(args, "can_implement", &s)) return s;
  return to_c(fs::can_implement(*args));
}

FlashSigmoidStatus flash_sigmoid_forward_workspace_size(const FlashSigmoidForwardArgs* args, size_t* bytes) {
  FlashSigmoidStatus s;
  if (reject_null(args, "workspace_size", &s)) return s;
  return to_c(fs::workspace_size(*args, bytes));
}

FlashSigmoidStatus flash_sigmoid_backward_workspace_size(const FlashSigmoidBackwardArgs* args, size_t* bytes) {
  FlashSigmoidStatus s;
  if (reject_null(args, "workspace_size", &s)) return s;
  return to_c(fs::workspace_size(*args, bytes));
}

FlashSigmoidStatus flash_sigmoid_forward(const FlashSigmoidForwardArgs* args, void* workspace, size_t workspace_bytes,
                                         FlashSigmoidStream stream) {
  FlashSigmoidStatus s;
  if (reject_null(args, "forward", &s)) return s;
  return to_c(fs::forward(*args, fs::Workspace{workspace, workspace_bytes}, stream));
}

FlashSigmoidStatus flash_sigmoid_backward(const FlashSigmoidBackwardArgs* args, void* workspace, size_t workspace_bytes,
                                          FlashSigmoidStream stream) {
  FlashSigmoidStatus s;
  if (reject_null(args, "backward", &s)) return s;
  return to_c(fs::backward(*args, fs::Workspace{workspace, workspace_bytes}, stream));
}

FlashSigmoidStatus flash_sigmoid_cpu_forward(const FlashSigmoidForwardArgs* args, int num_threads) {
  FlashSigmoidStatus s;
  if (reject_null(args, "cpu::forward", &s)) return s;
  return to_c(fs::cpu::forward(*args, num_threads));
}

FlashSigmoidStatus flash_sigmoid_cpu_backward(const FlashSigmoidBackwardArgs* args, int num_threads) {
  FlashSigmoidStatus s;
  if (reject_null(args, "cpu::backward", &s)) return s;
  return to_c(fs::cpu::backward(*args, num_threads));
}

FlashSigmoidStatus flash_sigmoid_cpu_dropout_mask(float dropout_p, const uint64_t* dropout_seed, int64_t batch_index,
                                                  int64_t batch, int64_t heads_q, int64_t seqlen_q, int64_t seqlen_k,
                                                  uint8_t* keep) {
  return to_c(fs::cpu::dropout_mask(dropout_p, dropout_seed, batch_index, batch, heads_q, seqlen_q, seqlen_k, keep));
}

FlashSigmoidStatus flash_sigmoid_cpu_kvcache_append(const FlashSigmoidKvAppendArgs* args, int num_threads) {
  FlashSigmoidStatus s;
  if (reject_null(args, "cpu::kvcache_append", &s)) return s;
  return to_c(fs::cpu::kvcache_append(*args, num_threads));
}

FlashSigmoidStatus flash_sigmoid_kvcache_append(const FlashSigmoidKvAppendArgs* args, FlashSigmoidStream stream) {
  FlashSigmoidStatus s;
  if (reject_null(args, "kvcache_append", &s)) return s;
  return to_c(fs::kvcache_append(*args, stream));
}

const char* flash_sigmoid_last_error(void) { return fs::last_error(); }
const char* flash_sigmoid_build_info(void) { return fs::build_info(); }
const char* flash_sigmoid_status_name(FlashSigmoidStatus status) {
  return fs::status_name(static_cast<fs::Status>(status));
}

}  // extern "C"

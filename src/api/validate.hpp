// Layer: public API (internal). Argument validation shared by the GPU and CPU entry points, and the
// translation of valid public structs into the kernels' ForwardParams/BackwardParams.
// validate() touches no memory behind any pointer: it reads only the structs.
#pragma once

#include <cstddef>

#include "common/decode_plan.hpp"
#include "common/params.hpp"
#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::api {

enum class Backend { kCuda, kCpu };

// kSuccess, or kInvalidArgument with last_error() naming the argument and what was expected.
// `where` prefixes the message (the public function's name). For kCuda, a valid problem the GPU
// kernels do not implement (dropout with the tanh score function; what the KV-cache decode kernel
// does not take) is kUnsupported, naming the field.
Status validate(const ForwardArgs* args, Backend backend, const char* where);
Status validate(const BackwardArgs* args, Backend backend, const char* where);

// The CPU path's checks of host memory, after validate(): cu_seqlens_q/k start at 0, never
// decrease and end at seqlen_q/seqlen_k (the total rows), max_seqlen_q/k are at least the longest
// sequence, sigmoid_bias_per_batch holds finite numbers, and the KV-cache values are in range
// (seqused_k[b] in 0..seqlen_k, kv_batch_idx[b] a row of k/v, every used block_table entry a page). kSuccess or kInvalidArgument naming
// the argument. Never called for the GPU path (the pointers are device memory there).
Status check_host_sequences(const Problem& p, const char* where);

// The KV-cache append step (docs/kvcache.md): the struct alone, as validate() above (the GPU path
// has no append kernel yet: its entry point answers Unsupported after this).
Status validate(const KvAppendArgs* args, Backend backend, const char* where);
// The CPU append's checks of host memory, after validate(): cache_seqlens[b] >= 0 with
// cache_seqlens[b] + seqlen_new <= seqlen_k, the cache rows or pages the row occupies exist, and
// the rotary tables cover every position rotated.
Status check_host_append(const KvAppendArgs& args, const char* where);

// Whether the problem has no output element at all (nothing to launch).
bool nothing_to_do(const ForwardArgs& args);
bool nothing_to_do(const BackwardArgs& args);

// Whether the problem reads a KV cache (seqused_k, kv_batch_idx or block_table): on the GPU the
// decode kernel's.
bool is_kvcache(const Problem& p);

// The kernels' view of a validated problem.
ForwardParams make_params(const ForwardArgs& args);
// The decode kernel's view of a validated KV-cache forward with its plan and workspace.
DecodeParams make_decode_params(const ForwardArgs& args, const DecodePlan& plan, void* workspace);
BackwardParams make_params(const BackwardArgs& args, void* workspace);
// The append kernel's view of a validated append.
AppendParams make_params(const KvAppendArgs& args);

}  // namespace flash_sigmoid::api

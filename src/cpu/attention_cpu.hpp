// Layer: CPU implementation. Sigmoid attention forward and backward on host memory, computed in
// fp32 from fp32/fp16/bf16 tensors, multi-threaded with std::thread, deterministic for any thread
// count (every output element is computed by one task in a fixed order; no atomics on results).
//
// Owns the CPU arithmetic only. Validation, error messages and the public entry points
// (flash_sigmoid::cpu::forward/backward) belong to the API layer, which calls these after
// validating. Written from DESIGN §1 alone: nothing from src/policies/ or src/common/ is used.
#pragma once

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Preconditions (checked by the API layer): sizes >= 0; non-null data where elements exist;
// stride_dim == 1; heads_q % heads_kv == 0; head_dim in 1..256; dtype fp32/fp16/bf16;
// windows >= -1; causal implies window_right in {-1, 0}; slopes valid where given; packed
// sequences (cu_seqlens_q/k, host memory) and sigmoid_bias_per_batch checked by
// api::check_host_sequences. Packed, each sequence is its own problem (cpu_sequences.hpp).
//
// forward writes every element of out ([batch, seqlen_q, heads_q, head_dim]): rows that see no
// key (fully masked, or seqlen_k == 0) are 0. fp16 results beyond the half range are +-inf.
//
// backward writes every element of dq, dk and dv; dk/dv are summed over the query heads of a
// kv head's group; with seqlen_q == 0 they are 0. It needs neither out nor any row statistic.
//
// num_threads 0 means one per hardware thread. Both return true on success and false only if
// host scratch could not be allocated or a task otherwise threw; then outputs may be partially
// written. No exception escapes.
bool forward(const FlashSigmoidForwardArgs& args, int num_threads) noexcept;
bool backward(const FlashSigmoidBackwardArgs& args, int num_threads) noexcept;

}  // namespace flash_sigmoid::cpu_impl

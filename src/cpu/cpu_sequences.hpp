// Layer: CPU implementation. Splits one call into the dense problems it is made of, so that the
// dense forward and backward loops serve packed (varlen) sequences and per-sequence biases
// unchanged:
//   - dense, one bias for all (scalar, or "auto" = -log(seqlen_k)): one part, the call itself;
//   - packed (cu_seqlens set): one part per sequence b, a batch-1 problem over rows
//     cu_seqlens_q[b] .. cu_seqlens_q[b+1] of q/out/dout/dq and cu_seqlens_k[b] .. of k/v/dk/dv
//     (the tensors' data pointers advanced by those rows), with the sequence's own lengths (so the
//     mask's bottom-right offset and the ALiBi distances are per sequence), its own ALiBi slope row
//     and its own bias;
//   - dense with sigmoid_bias_per_batch: one part per batch entry, likewise;
//   - a KV cache (seqused_k, kv_batch_idx or block_table set; docs/kvcache.md): one part per batch
//     entry b over its seqused_k[b] keys (so masks, ALiBi and "auto" bias align to them), reading
//     k/v row kv_batch_idx[b], or, paged, the whole page pool with block_table advanced to row b's
//     pages (read in place by the forward's key loads, cpu_tiles.hpp: no gather).
// Parts are disjoint in every output, so the callers may run all parts' tasks in one parallel loop.
// Each part keeps the index of its first batch entry in the call (first_batch: the sequence's or
// batch entry's index, 0 for a whole dense call), which the dropout mask needs (docs/dropout.md:
// a packed sequence is dropped as batch entry b of a dense call with its lengths).
//
// Owns the reading of the host offsets and biases. Does not check them: the API layer has
// (check_host_sequences: monotone, ending at the total rows, finite biases) before any part exists.
#pragma once

#include <cstdint>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Every part is dense: cu_seqlens NULL, sigmoid_bias_per_batch NULL, sigmoid_bias_auto 0,
// seqused_k and kv_batch_idx NULL; a paged part keeps block_table (its row's pages, batch 1).
template <class Args>
struct DensePart {
  Args args;
  int64_t first_batch;
};
std::vector<DensePart<FlashSigmoidForwardArgs>> dense_parts(const FlashSigmoidForwardArgs& args);
std::vector<DensePart<FlashSigmoidBackwardArgs>> dense_parts(const FlashSigmoidBackwardArgs& args);

}  // namespace flash_sigmoid::cpu_impl

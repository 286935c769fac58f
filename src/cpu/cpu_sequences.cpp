// Layer: CPU implementation. The dense parts of a call (see cpu_sequences.hpp).
#include "cpu_sequences.hpp"

#include <cmath>
#include <cstdint>

namespace flash_sigmoid::cpu_impl {
namespace {

// -log(seqlen_k), the "auto" bias, evaluated in double and rounded once (what a caller passing
// -math.log(n) as the scalar gets); 0 without keys, where no score exists to add it to.
float auto_bias(int64_t seqlen_k) {
  return seqlen_k > 0 ? static_cast<float>(-std::log(static_cast<double>(seqlen_k))) : 0.0f;
}

// The view of batch entry b (dense) or of the sequence starting at `row` (packed) as a batch-1
// tensor: stride_batch is never used again.
void advance(FlashSigmoidTensor& t, int64_t element_bytes, bool packed, int64_t batch_idx, int64_t row) {
  const int64_t elements = packed ? row * t.stride_seq : batch_idx * t.stride_batch;
  if (t.data != nullptr) t.data = static_cast<char*>(t.data) + elements * element_bytes;
  t.stride_batch = 0;
}

// kv_b: the row of k/v that batch entry b reads (kv_batch_idx), or -1 for a paged cache, whose
// k/v stay the whole page pool (stride_batch steps a page; the part keeps its row's block_table).
void advance_tensors(FlashSigmoidForwardArgs& a, int64_t eb, bool packed, int64_t b, int64_t kv_b, int64_t row_q,
                     int64_t row_k) {
  advance(a.q, eb, packed, b, row_q);
  advance(a.out, eb, packed, b, row_q);
  if (kv_b < 0) return;
  advance(a.k, eb, packed, kv_b, row_k);
  advance(a.v, eb, packed, kv_b, row_k);
}

// The backward has no KV-cache fields (the API layer rejects them): k/v rows are batch entries.
void advance_tensors(FlashSigmoidBackwardArgs& a, int64_t eb, bool packed, int64_t b, int64_t /*kv_b*/, int64_t row_q,
                     int64_t row_k) {
  advance(a.q, eb, packed, b, row_q);
  advance(a.dout, eb, packed, b, row_q);
  advance(a.dq, eb, packed, b, row_q);
  advance(a.k, eb, packed, b, row_k);
  advance(a.v, eb, packed, b, row_k);
  advance(a.dk, eb, packed, b, row_k);
  advance(a.dv, eb, packed, b, row_k);
}

template <class Args>
std::vector<DensePart<Args>> split(const Args& args) {
  const FlashSigmoidProblem& p = args.problem;
  const bool packed = p.cu_seqlens_q != nullptr;
  std::vector<DensePart<Args>> parts;
  const bool kv_cache = p.seqused_k != nullptr || p.kv_batch_idx != nullptr || p.block_table != nullptr;
  if (!packed && p.sigmoid_bias_per_batch == nullptr && !kv_cache) {
    Args whole = args;
    if (p.sigmoid_bias_auto) whole.problem.sigmoid_bias = auto_bias(p.seqlen_k);
    whole.problem.sigmoid_bias_auto = 0;
    parts.push_back(DensePart<Args>{whole, 0});
    return parts;
  }
  const int64_t element_bytes = p.dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2;
  parts.reserve(static_cast<size_t>(p.batch));
  for (int64_t b = 0; b < p.batch; ++b) {
    Args part = args;
    FlashSigmoidProblem& s = part.problem;
    const int64_t row_q = packed ? p.cu_seqlens_q[b] : 0;
    const int64_t row_k = packed ? p.cu_seqlens_k[b] : 0;
    s.batch = 1;
    if (packed) {
      s.seqlen_q = p.cu_seqlens_q[b + 1] - row_q;
      s.seqlen_k = p.cu_seqlens_k[b + 1] - row_k;
    } else if (p.seqused_k != nullptr) {
      s.seqlen_k = p.seqused_k[b];  // the mask, ALiBi and "auto" bias align to the used keys
    }
    const int64_t kv_b = p.block_table != nullptr ? -1 : p.kv_batch_idx != nullptr ? p.kv_batch_idx[b] : b;
    advance_tensors(part, element_bytes, packed, b, kv_b, row_q, row_k);
    if (p.block_table != nullptr) s.block_table = p.block_table + b * p.block_table_stride_batch;
    s.block_table_stride_batch = 0;
    s.seqused_k = nullptr;
    s.kv_batch_idx = nullptr;
    if (p.alibi_slopes != nullptr) s.alibi_slopes = p.alibi_slopes + b * p.alibi_stride_batch;
    s.alibi_stride_batch = 0;
    if (p.sigmoid_bias_auto) s.sigmoid_bias = auto_bias(s.seqlen_k);
    else if (p.sigmoid_bias_per_batch != nullptr) s.sigmoid_bias = p.sigmoid_bias_per_batch[b];
    s.cu_seqlens_q = nullptr;
    s.cu_seqlens_k = nullptr;
    s.sigmoid_bias_per_batch = nullptr;
    s.sigmoid_bias_auto = 0;
    parts.push_back(DensePart<Args>{part, b});
  }
  return parts;
}

}  // namespace

std::vector<DensePart<FlashSigmoidForwardArgs>> dense_parts(const FlashSigmoidForwardArgs& args) {
  return split(args);
}
std::vector<DensePart<FlashSigmoidBackwardArgs>> dense_parts(const FlashSigmoidBackwardArgs& args) {
  return split(args);
}

}  // namespace flash_sigmoid::cpu_impl

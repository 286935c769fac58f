// Layer: common kernel parts. The problem as kernels see it: validated, with the mask resolved to
// its compiled bound presence, sizes in int (the API guarantees they fit), per-tensor strides in
// elements (stride_dim is 1). Built by the API layer from the public structs; kernels never see
// the public structs and the API never sees CuTe.
#pragma once

#include <cmath>
#include <cstdint>

#include "base/host_device.hpp"
#include "policies/dropout.hpp"
#include "policies/mask_band.hpp"

namespace flash_sigmoid {

enum class ScoreFunctionKind : int { kSigmoidViaExp2 = 0, kSigmoidViaTanh = 1 };

struct StridedPtr {
  void* ptr = nullptr;
  int64_t stride_batch = 0;
  int64_t stride_seq = 0;
  int64_t stride_head = 0;
};

struct ProblemParams {
  int batch = 0;
  // Dense: every batch entry's lengths. Packed (cu_seqlens_q set): the longest sequences
  // (max_seqlen_q, max_seqlen_k), which size the grids; each block reads its own sequence's lengths
  // (SeqlenInfo, common/tile_scheduler.hpp).
  int seqlen_q = 0;
  int seqlen_k = 0;
  // Rows of the q/out and k/v tensors' seq dimension: seqlen_q and seqlen_k when dense, the packed
  // totals (cu_seqlens_*[batch]) when packed.
  int total_q = 0;
  int total_k = 0;
  // Packed (varlen) sequences, device int32 [batch + 1] (both null: dense): sequence b is rows
  // [cu_seqlens_q[b], cu_seqlens_q[b + 1]) of q and out, [cu_seqlens_k[b], cu_seqlens_k[b + 1]) of k
  // and v. The tensors' stride_batch is then 0 (the API sets it), so a tile's base is its sequence's
  // first row plus the tile's rows.
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;
  int heads_q = 0;
  int heads_kv = 0;
  int head_dim = 0;      // the real head dim; the kernel's bucket is >= this
  int group_size = 1;    // heads_q / heads_kv
  float scale = 1.f;
  float bias = 0.f;
  // Per batch entry instead of `bias` (sequence_bias below): a device fp32 [batch], or (bias_auto)
  // -log(seqlen_k) of each sequence, computed from its lengths on the device.
  const float* bias_per_batch = nullptr;
  bool bias_auto = false;
  ResolvedMask mask;
  const float* alibi_slopes = nullptr;  // null: no ALiBi
  int64_t alibi_stride_batch = 0;
  ScoreFunctionKind score_function = ScoreFunctionKind::kSigmoidViaExp2;
  // Attention dropout (policies/dropout.hpp, docs/dropout.md): threshold 0 is none; otherwise
  // dropout_seed points at {seed, offset} (device memory on the GPU, read by the kernels; host
  // memory on the CPU) and kept entries are scaled by dropout_rescale.
  uint32_t dropout_threshold = 0;
  float dropout_rescale = 1.f;
  // Added to every ALiBi distance (|alibi_offset| < 2^30; FlashSigmoidProblem::alibi_offset). Here,
  // in the padding before dropout_seed, so that the struct's layout is unchanged.
  int alibi_offset = 0;
  const uint64_t* dropout_seed = nullptr;
};

FLASH_SIGMOID_HOST_DEVICE bool is_packed(const ProblemParams& problem) { return problem.cu_seqlens_q != nullptr; }

// The score bias of batch entry batch_idx whose key sequence has seqlen_k keys. "auto" is -log in
// double rounded once to fp32, as the CPU implementation and a caller passing -math.log(n) get it;
// a sequence without keys has no score, so its 0 never matters.
FLASH_SIGMOID_HOST_DEVICE float sequence_bias(const ProblemParams& problem, int batch_idx, int seqlen_k) {
  if (problem.bias_per_batch != nullptr) return problem.bias_per_batch[batch_idx];
  if (problem.bias_auto) return seqlen_k > 0 ? static_cast<float>(-log(static_cast<double>(seqlen_k))) : 0.f;
  return problem.bias;
}

// The call's dropout, seed and offset read from dropout_seed (where the code runs: device memory in
// a kernel, host memory on the CPU). Disabled (threshold 0) without a pointer dereference.
FLASH_SIGMOID_HOST_DEVICE DropoutParams problem_dropout(const ProblemParams& problem) {
  DropoutParams d;
  if (problem.dropout_threshold == 0) return d;
  d.seed = problem.dropout_seed[0];
  d.offset = problem.dropout_seed[1];
  d.threshold = problem.dropout_threshold;
  d.rescale = problem.dropout_rescale;
  return d;
}

// The backward's output scales. Its kernels mask P and dZ with dropout but leave the kept values
// unscaled (common/dropout_fragment.hpp): dV takes the inverse keep rate, dK and dQ take it with the
// score scale, once per element where they leave the kernels.
FLASH_SIGMOID_HOST_DEVICE float backward_dv_scale(const ProblemParams& problem) {
  return problem.dropout_threshold != 0 ? problem.dropout_rescale : 1.f;
}
FLASH_SIGMOID_HOST_DEVICE float backward_dq_dk_scale(const ProblemParams& problem) {
  return problem.scale * backward_dv_scale(problem);
}

struct ForwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, out;
};

struct BackwardParams {
  ProblemParams problem;
  StridedPtr q, k, v, dout, dq, dk, dv;
  float* dq_accum = nullptr;  // workspace of the default mode: the fp32 dQ accumulator (common/dq_accum_layout.hpp)
  bool deterministic = false;
};

// The KV-cache fields of a forward (docs/kvcache.md) as the decode kernel reads them: all device
// memory, read only on the device. The mask is kept unresolved (each row has its own key count):
// bounds of -1 are unbounded, causal is folded into window_right = 0.
struct KvCacheParams {
  const int32_t* seqused_k = nullptr;     // [batch] keys of each row; null: seqlen_k (the capacity)
  const int32_t* kv_batch_idx = nullptr;  // [batch] cache row of each batch entry; null: b
  const int32_t* block_table = nullptr;   // paged: [batch, block_table_stride_batch] page numbers
  int64_t block_table_stride_batch = 0;
  int page_size = 0;  // a power of two >= 16 with block_table
  int kv_rows = 0;    // cache rows, or pages: one outside 0..kv_rows - 1 is read as the last one
  int window_left = -1;
  int window_right = -1;
  const float* bias_per_batch = nullptr;  // [batch]; null: ProblemParams::bias (or bias_auto)
  bool bias_auto = false;                 // bias = -log(keys of the row)
};

// The decode kernel's parameters: the forward's, the cache fields, and its launch plan
// (common/decode_plan.hpp). partial: fp32 [num_splits, batch, seqlen_q, heads_q, head_dim], the
// splits' sums (workspace; unused with one split, which writes out directly).
struct DecodeParams {
  ForwardParams forward;
  KvCacheParams kv;
  int num_splits = 1;
  int row_chunks = 1;
  float* partial = nullptr;
};

// The KV-cache append (common/kvcache_append.hpp): new k, v tokens into the cache, rotary on them
// and on q, and the forward's key counts. Device memory throughout; the index values are read only
// on the device, where a token with no place in the cache is skipped (nothing is written outside
// the cache).
struct AppendParams {
  int batch = 0;
  int seqlen_new = 0;
  int seqlen_q = 0;  // q's tokens to rotate (0: none)
  int heads_q = 0;
  int heads_kv = 0;
  int head_dim = 0;
  int seqlen_k = 0;  // each row's capacity
  int kv_rows = 0;   // cache rows, or pages with block_table
  const int32_t* cache_seqlens = nullptr;  // [batch]
  const int32_t* kv_batch_idx = nullptr;
  const int32_t* block_table = nullptr;
  int64_t block_table_stride_batch = 0;
  int page_size = 0;
  StridedPtr k_new, v_new, k_cache, v_cache, q, q_rotated;
  const float* rotary_cos = nullptr;  // null: no rotary
  const float* rotary_sin = nullptr;
  int64_t rotary_stride = 0;
  int rotary_seqlen = 0;
  int rotary_dim = 0;
  bool rotary_interleaved = false;
  bool q_steps = false;              // q's token i at cache_seqlens + i (else all at cache_seqlens)
  int32_t* seqused_k_out = nullptr;  // [batch] or null: cache_seqlens + seqlen_new, clamped to 0..seqlen_k
};

// A kernel's own parameters: the validated problem (Base: ForwardParams or BackwardParams) and
// whatever the kernel's family builds from it on the host. `Family` tells the families' types apart;
// a family that needs fields of its own (TMA descriptors, say) defines its own struct deriving from
// Base instead, with the same make().
template <class Base, class Family>
struct KernelParams : Base {
  static KernelParams make(const Base& params) { return KernelParams{params}; }
};

}  // namespace flash_sigmoid

// Layer: common kernel parts. The problem as kernels see it: validated, with the mask resolved to
// its compiled bound presence, sizes in int (the API guarantees they fit), per-tensor strides in
// elements (stride_dim is 1). Built by the API layer from the public structs; kernels never see
// the public structs and the API never sees CuTe.
#pragma once

#include <cstdint>

#include "base/host_device.hpp"
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
  int seqlen_q = 0;
  int seqlen_k = 0;
  int heads_q = 0;
  int heads_kv = 0;
  int head_dim = 0;      // the real head dim; the kernel's bucket is >= this
  int group_size = 1;    // heads_q / heads_kv
  float scale = 1.f;
  float bias = 0.f;
  ResolvedMask mask;
  const float* alibi_slopes = nullptr;  // null: no ALiBi
  int64_t alibi_stride_batch = 0;
  ScoreFunctionKind score_function = ScoreFunctionKind::kSigmoidViaExp2;
};

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

// A kernel's own parameters: the validated problem (Base: ForwardParams or BackwardParams) and
// whatever the kernel's family builds from it on the host. `Family` tells the families' types apart;
// a family that needs fields of its own (TMA descriptors, say) defines its own struct deriving from
// Base instead, with the same make().
template <class Base, class Family>
struct KernelParams : Base {
  static KernelParams make(const Base& params) { return KernelParams{params}; }
};

}  // namespace flash_sigmoid

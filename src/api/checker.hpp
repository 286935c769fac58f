// Layer: public API (internal). The Checker that validate.cpp and validate_kvcache.cpp share: it
// records the first failed requirement as a message naming the argument, and knows the checks of a
// problem and of one tensor. Reads only the structs, never memory behind their pointers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "api/error.hpp"
#include "api/validate.hpp"
#include "common/decode_plan.hpp"

namespace flash_sigmoid::api {

// Limits of the GPU kernels: grid dimensions y/z for heads and batch, 32-bit index arithmetic
// within one (batch, head) slice, and int positions with room for mask offsets.
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxSeqlen = int64_t{1} << 30;
constexpr int64_t kMaxHeadDim = 256;

class Checker {
 public:
  Checker(const char* where, Backend backend) : where_(where), backend_(backend) {}

  bool ok() const { return ok_; }
  Status status() const { return ok_ ? Status::kSuccess : Status::kInvalidArgument; }

  // Records the first failure only: the message names the first wrong argument.
  template <class Got>
  void require(bool condition, const char* argument, const std::string& expected, const Got& got) {
    if (!ok_ || condition) return;
    std::ostringstream os;
    os << where_ << ": " << argument << ": expected " << expected << ", got " << got;
    ok_ = false;
    fail(Status::kInvalidArgument, os.str());
  }

  void check_problem(const Problem& p) {
    const bool cuda = backend_ == Backend::kCuda;
    const bool dtype_ok = p.dtype == FLASH_SIGMOID_FLOAT16 || p.dtype == FLASH_SIGMOID_BFLOAT16 ||
                          (!cuda && p.dtype == FLASH_SIGMOID_FLOAT32);
    require(dtype_ok, "problem.dtype",
            cuda ? "FLASH_SIGMOID_FLOAT16 or FLASH_SIGMOID_BFLOAT16 (the GPU kernels take no fp32)"
                 : "FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16 or FLASH_SIGMOID_FLOAT32",
            static_cast<int>(p.dtype));
    require(p.batch >= 0, "problem.batch", ">= 0", p.batch);
    require(p.seqlen_q >= 0, "problem.seqlen_q", ">= 0", p.seqlen_q);
    require(p.seqlen_k >= 0, "problem.seqlen_k", ">= 0", p.seqlen_k);
    require(p.heads_q >= 1, "problem.heads_q", ">= 1", p.heads_q);
    require(p.heads_kv >= 1, "problem.heads_kv", ">= 1", p.heads_kv);
    require(p.head_dim >= 1 && p.head_dim <= kMaxHeadDim, "problem.head_dim", "1..256", p.head_dim);
    if (cuda) {
      require(p.head_dim % 8 == 0, "problem.head_dim",
              "a multiple of 8 for the GPU kernels (pad the head dim with zeros)", p.head_dim);
    }
    if (ok_) {
      std::ostringstream e;
      e << "a multiple of problem.heads_kv (" << p.heads_kv << ")";
      require(p.heads_q % p.heads_kv == 0, "problem.heads_q", e.str(), p.heads_q);
    }
    require(std::isfinite(p.scale), "problem.scale", "a finite number", p.scale);
    require(std::isfinite(p.sigmoid_bias), "problem.sigmoid_bias", "a finite number", p.sigmoid_bias);
    require(p.window_left >= -1, "problem.window_left", ">= -1 (-1: unbounded)", p.window_left);
    require(p.window_right >= -1, "problem.window_right", ">= -1 (-1: unbounded)", p.window_right);
    require(!p.causal || p.window_right == -1 || p.window_right == 0, "problem.window_right",
            "-1 or 0 with causal (causal is the window (-1, 0))", p.window_right);
    if (p.alibi_slopes != nullptr) {
      require(p.alibi_stride_batch == 0 || p.alibi_stride_batch >= p.heads_q, "problem.alibi_stride_batch",
              "0 (slopes of shape [heads_q]) or >= heads_q (slopes of shape [batch, heads_q])",
              p.alibi_stride_batch);
      int64_t last = 0;
      const bool alibi_overflow = p.batch > 0 && p.heads_q > 0 &&
                                  (__builtin_mul_overflow(p.batch - 1, p.alibi_stride_batch, &last) ||
                                   __builtin_add_overflow(last, p.heads_q - 1, &last));
      require(!alibi_overflow, "problem.alibi_stride_batch",
              "a stride whose largest slope offset, (batch - 1) * alibi_stride_batch + heads_q - 1, fits in 64 bits",
              p.alibi_stride_batch);
      require(reinterpret_cast<uintptr_t>(p.alibi_slopes) % alignof(float) == 0, "problem.alibi_slopes",
              "a 4-byte aligned pointer to fp32 slopes", static_cast<const void*>(p.alibi_slopes));
    }
    require(p.alibi_offset > -kMaxSeqlen && p.alibi_offset < kMaxSeqlen, "problem.alibi_offset",
            "a shift of the ALiBi distances with |alibi_offset| < 2^30", p.alibi_offset);
    if (ok_ && p.cu_seqlens_q == nullptr && p.seqlen_q >= 0 && p.seqlen_k >= 0 && p.seqlen_q < kMaxSeqlen &&
        p.seqlen_k < kMaxSeqlen) {
      // The kernels' int32 distances: the shifted offset of the diagonal stays below 2^30 too.
      const int64_t shifted = p.seqlen_k - p.seqlen_q + p.alibi_offset;
      require(shifted > -kMaxSeqlen && shifted < kMaxSeqlen, "problem.alibi_offset",
              "|seqlen_k - seqlen_q + alibi_offset| < 2^30", p.alibi_offset);
    }
    require(p.score_function == FLASH_SIGMOID_SIGMOID_VIA_EXP2 || p.score_function == FLASH_SIGMOID_SIGMOID_VIA_TANH,
            "problem.score_function", "FLASH_SIGMOID_SIGMOID_VIA_EXP2 or FLASH_SIGMOID_SIGMOID_VIA_TANH",
            static_cast<int>(p.score_function));
    require(p.kernel_arch == 0 || p.kernel_arch == 80 || p.kernel_arch == 90, "problem.kernel_arch",
            "0 (best available), 80 or 90", p.kernel_arch);
    check_sequences(p);
    check_kvcache(p);
    check_dropout(p);
    if (cuda) {
      require(p.batch <= kMaxGridYZ, "problem.batch", "<= 65535 for the GPU kernels", p.batch);
      require(p.heads_q <= kMaxGridYZ, "problem.heads_q", "<= 65535 for the GPU kernels", p.heads_q);
      require(p.seqlen_q < kMaxSeqlen, "problem.seqlen_q", "< 2^30 for the GPU kernels", p.seqlen_q);
      require(p.seqlen_k < kMaxSeqlen, "problem.seqlen_k", "< 2^30 for the GPU kernels", p.seqlen_k);
    }
  }

  // The packed-sequence fields (cu_seqlens, max lengths) and the per-sequence bias: what costs
  // nothing. The offsets themselves are host memory only on the CPU path (check_host_sequences).
  void check_sequences(const Problem& p) {
    const bool has_q = p.cu_seqlens_q != nullptr, has_k = p.cu_seqlens_k != nullptr;
    require(has_q == has_k, has_q ? "problem.cu_seqlens_k" : "problem.cu_seqlens_q",
            std::string("a non-null pointer like ") + (has_q ? "problem.cu_seqlens_q" : "problem.cu_seqlens_k") +
                " (both set: packed sequences; both NULL: dense)",
            "NULL");
    require(p.max_seqlen_q >= 0, "problem.max_seqlen_q", ">= 0", p.max_seqlen_q);
    require(p.max_seqlen_k >= 0, "problem.max_seqlen_k", ">= 0", p.max_seqlen_k);
    for (const auto& [ptr, name] : {std::pair{p.cu_seqlens_q, "problem.cu_seqlens_q"},
                                    std::pair{p.cu_seqlens_k, "problem.cu_seqlens_k"}}) {
      require(reinterpret_cast<uintptr_t>(ptr) % alignof(int32_t) == 0, name, "a 4-byte aligned pointer to int32 offsets",
              static_cast<const void*>(ptr));
    }
    require(reinterpret_cast<uintptr_t>(p.sigmoid_bias_per_batch) % alignof(float) == 0,
            "problem.sigmoid_bias_per_batch", "a 4-byte aligned pointer to fp32 biases",
            static_cast<const void*>(p.sigmoid_bias_per_batch));
    require(!p.sigmoid_bias_auto || p.sigmoid_bias_per_batch == nullptr, "problem.sigmoid_bias_per_batch",
            "NULL with problem.sigmoid_bias_auto (the bias is -log(seqlen_k) of each sequence)",
            static_cast<const void*>(p.sigmoid_bias_per_batch));
    require((!p.sigmoid_bias_auto && p.sigmoid_bias_per_batch == nullptr) || p.sigmoid_bias == 0.0f,
            "problem.sigmoid_bias",
            p.sigmoid_bias_auto ? "0 with problem.sigmoid_bias_auto (which replaces it)"
                                : "0 with problem.sigmoid_bias_per_batch (which replaces it)",
            p.sigmoid_bias);
    if (backend_ == Backend::kCuda && has_q && has_k) {
      require(p.max_seqlen_q < kMaxSeqlen, "problem.max_seqlen_q", "< 2^30 for the GPU kernels", p.max_seqlen_q);
      require(p.max_seqlen_k < kMaxSeqlen, "problem.max_seqlen_k", "< 2^30 for the GPU kernels", p.max_seqlen_k);
      // The kernels' grids are sized by the longest sequences, which they are never told: rows
      // present (a total above 0) mean a sequence of at least one row. (Whether max_seqlen_* is at
      // least the longest needs the offsets' values: documented, not checked, on the GPU.)
      require(p.seqlen_q == 0 || p.max_seqlen_q >= 1, "problem.max_seqlen_q",
              ">= 1 when q has rows (problem.seqlen_q > 0: the longest sequence has at least one)", p.max_seqlen_q);
      require(p.seqlen_k == 0 || p.max_seqlen_k >= 1, "problem.max_seqlen_k",
              ">= 1 when k has rows (problem.seqlen_k > 0: the longest sequence has at least one)", p.max_seqlen_k);
    }
  }

  // Attention dropout (docs/dropout.md): p and the seed pointer, never the seed's values.
  void check_dropout(const Problem& p) {
    require(std::isfinite(p.dropout_p) && p.dropout_p >= 0.0f && p.dropout_p < 1.0f, "problem.dropout_p",
            "a probability in [0, 1)", p.dropout_p);
    if (p.dropout_p > 0.0f) {
      require(p.dropout_seed != nullptr, "problem.dropout_seed",
              "a pointer to {seed, offset} (two uint64) when problem.dropout_p > 0", "NULL");
      require(reinterpret_cast<uintptr_t>(p.dropout_seed) % alignof(uint64_t) == 0, "problem.dropout_seed",
              "an 8-byte aligned pointer to two uint64", static_cast<const void*>(p.dropout_seed));
      const bool kvcache = p.seqused_k != nullptr || p.kv_batch_idx != nullptr || p.block_table != nullptr;
      require(!kvcache, "problem.dropout_p", "0 with a KV cache (dropout is a training feature; the decode path has none)",
              p.dropout_p);
    }
  }

  // The KV-cache fields (docs/kvcache.md): what costs nothing. Their values are host memory only
  // on the CPU path (check_host_sequences).
  void check_kvcache(const Problem& p) {
    for (const auto& [ptr, name] : {std::pair{p.seqused_k, "problem.seqused_k"},
                                    std::pair{p.kv_batch_idx, "problem.kv_batch_idx"},
                                    std::pair{p.block_table, "problem.block_table"}}) {
      require(ptr == nullptr || p.cu_seqlens_q == nullptr, name,
              "NULL with problem.cu_seqlens_q (packed sequences and a KV cache do not combine yet)",
              static_cast<const void*>(ptr));
      require(reinterpret_cast<uintptr_t>(ptr) % alignof(int32_t) == 0, name, "a 4-byte aligned pointer to int32",
              static_cast<const void*>(ptr));
    }
    require(p.kv_batch_idx == nullptr || p.block_table == nullptr, "problem.kv_batch_idx",
            "NULL with problem.block_table (a paged cache maps batch entries to pages)",
            static_cast<const void*>(p.kv_batch_idx));
    const bool kvcache = p.seqused_k != nullptr || p.kv_batch_idx != nullptr || p.block_table != nullptr;
    require(!kvcache || p.alibi_offset == 0, "problem.alibi_offset",
            "0 with a KV cache (the decode path takes ALiBi distances as they are)", p.alibi_offset);
    require(p.kv_batch >= 0, "problem.kv_batch", ">= 0 (0: batch)", p.kv_batch);
    require(p.num_splits >= 0 && p.num_splits <= kDecodeMaxSplits, "problem.num_splits",
            "0 (choose) .. 128 (splits of each KV-cache row's keys)", p.num_splits);
    if (p.block_table == nullptr) {
      require(p.page_size == 0, "problem.page_size", "0 without problem.block_table", p.page_size);
      return;
    }
    const bool power_of_two = p.page_size >= 16 && (p.page_size & (p.page_size - 1)) == 0;
    require(power_of_two, "problem.page_size", "a power of two >= 16 with problem.block_table", p.page_size);
    if (!ok_) return;
    std::ostringstream capacity;
    capacity << "a multiple of problem.page_size (" << p.page_size << ") with problem.block_table (each row's capacity)";
    require(p.seqlen_k % p.page_size == 0, "problem.seqlen_k", capacity.str(), p.seqlen_k);
    std::ostringstream stride;
    stride << ">= seqlen_k / page_size (" << p.seqlen_k / p.page_size << ", the pages of a row)";
    require(p.block_table_stride_batch >= p.seqlen_k / p.page_size, "problem.block_table_stride_batch", stride.str(),
            p.block_table_stride_batch);
    int64_t last_entry = 0;
    const bool table_overflow = p.batch > 0 && __builtin_mul_overflow(p.batch - 1, p.block_table_stride_batch, &last_entry);
    require(!table_overflow, "problem.block_table_stride_batch",
            "a stride whose largest entry offset, (batch - 1) * block_table_stride_batch, fits in 64 bits",
            p.block_table_stride_batch);
    require(p.kv_batch >= 1, "problem.kv_batch", ">= 1 with problem.block_table (the number of pages in k and v)",
            p.kv_batch);
  }

  // A [batch, seqlen, heads, head_dim] tensor; `name` is the argument ("q", "dout", ...). Packed
  // (cu_seqlens set), it is one [1, seqlen (total rows), heads, head_dim] tensor: stride_batch is
  // never used, so it is not checked.
  // `rows` >= 0 overrides the batch extent (a KV cache's rows or pages).
  void check_tensor(const Tensor& t, const char* name, const Problem& p, int64_t seqlen, int64_t heads,
                    int element_bytes, int64_t rows = -1) {
    if (!ok_) return;
    const std::string n(name);
    const bool packed = p.cu_seqlens_q != nullptr;
    const int64_t batches = rows >= 0 ? rows : packed ? std::min<int64_t>(p.batch, 1) : p.batch;
    const int64_t stride_batch = packed ? 0 : t.stride_batch;
    require(t.stride_dim == 1, (n + ".stride_dim").c_str(), "1 (the head dim must be contiguous)", t.stride_dim);
    require(stride_batch >= 0, (n + ".stride_batch").c_str(), ">= 0", t.stride_batch);
    require(t.stride_seq >= 0, (n + ".stride_seq").c_str(), ">= 0", t.stride_seq);
    require(t.stride_head >= 0, (n + ".stride_head").c_str(), ">= 0", t.stride_head);
    const bool has_elements = batches > 0 && seqlen > 0 && heads > 0 && p.head_dim > 0;
    if (!ok_ || !has_elements) return;
    require(t.data != nullptr, (n + ".data").c_str(), "a non-null pointer", "NULL");
    // Largest element offset, computed without overflow. If it overflows, the message names the
    // stride with the largest term (one whose product alone overflows counts as largest).
    int64_t span = 0;
    bool overflow = false;
    int largest = 0;
    int64_t largest_term = -1;
    const int64_t extents[3] = {batches - 1, seqlen - 1, heads - 1};
    const int64_t strides[3] = {stride_batch, t.stride_seq, t.stride_head};
    const char* const stride_names[3] = {".stride_batch", ".stride_seq", ".stride_head"};
    for (int i = 0; i < 3; ++i) {
      int64_t term = 0;
      const bool term_overflows = __builtin_mul_overflow(extents[i], strides[i], &term);
      if (term_overflows) term = std::numeric_limits<int64_t>::max();
      if (term > largest_term) largest = i, largest_term = term;
      overflow = overflow || term_overflows || __builtin_add_overflow(span, term, &span);
    }
    overflow = overflow || __builtin_add_overflow(span, p.head_dim - 1, &span);
    require(!overflow, (n + stride_names[largest]).c_str(), "strides whose largest offset fits in 64 bits",
            strides[largest]);
    if (backend_ != Backend::kCuda || !ok_) return;
    const int64_t vector = 16 / element_bytes;  // elements per 16-byte vector access
    require(reinterpret_cast<uintptr_t>(t.data) % 16 == 0, (n + ".data").c_str(),
            "a 16-byte aligned pointer for the GPU kernels", t.data);
    require(stride_batch % vector == 0, (n + ".stride_batch").c_str(),
            "a multiple of 8 elements (16 bytes) for the GPU kernels", t.stride_batch);
    require(t.stride_seq % vector == 0, (n + ".stride_seq").c_str(),
            "a multiple of 8 elements (16 bytes) for the GPU kernels", t.stride_seq);
    require(t.stride_head % vector == 0, (n + ".stride_head").c_str(),
            "a multiple of 8 elements (16 bytes) for the GPU kernels", t.stride_head);
    // The kernels index within one (batch, head) slice with 32-bit arithmetic. The slice's last
    // offset is at most `span`, so it cannot overflow; one past it could (at exactly INT64_MAX).
    const int64_t slice_last = (seqlen - 1) * t.stride_seq + (p.head_dim - 1);
    require(slice_last < std::numeric_limits<int32_t>::max(), (n + ".stride_seq").c_str(),
            "(seqlen - 1) * stride_seq + head_dim < 2^31 (the kernels index a head's rows with 32 bits)",
            t.stride_seq);
  }

 private:
  const char* where_;
  Backend backend_;
  bool ok_ = true;
};

inline int element_bytes(FlashSigmoidDType dtype) { return dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2; }

// The extent of k/v: dense [batch, seqlen_k], cache rows [kv_batch, seqlen_k] (kv_batch_idx), or
// pages [kv_batch, page_size] (block_table). rows -1: the tensor's usual batch extent.
struct KvGeometry {
  int64_t rows, seqlen;
};
inline KvGeometry kv_geometry(const Problem& p) {
  if (p.block_table != nullptr) return KvGeometry{p.kv_batch, p.page_size};
  if (p.kv_batch_idx != nullptr) return KvGeometry{p.kv_batch > 0 ? p.kv_batch : p.batch, p.seqlen_k};
  return KvGeometry{-1, p.seqlen_k};
}
// The rows (or pages) of k/v a KV-cache kernel may index: kv_geometry's, or batch for dense rows.
inline int kv_rows(const Problem& p) {
  const KvGeometry kv = kv_geometry(p);
  return static_cast<int>(kv.rows >= 0 ? kv.rows : p.batch);
}

// The KV-cache values of a CPU call (validate_kvcache.cpp): row b holds `lengths[b] + extra` keys
// (lengths NULL: the whole capacity seqlen_k, extra 0), which must fit the capacity; its cache row
// (kv_batch_idx) or every page holding one of those keys (block_table) must exist. `lengths_name`
// names `lengths` in messages.
void check_host_kv(Checker& c, const Problem& p, const int32_t* lengths, int64_t extra,
                   const char* lengths_name = "problem.seqused_k");

}  // namespace flash_sigmoid::api

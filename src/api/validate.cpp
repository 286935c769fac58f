// Layer: public API. Argument validation: every rejected argument gets a message that names it and
// says what was expected. validate() reads only the structs, never memory behind their pointers;
// check_host_sequences() reads the host offsets and biases of a CPU call, and nothing else.
#include "api/validate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "api/error.hpp"
#include "common/dq_accum_layout.hpp"

namespace flash_sigmoid::api {
namespace {

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
    require(p.score_function == FLASH_SIGMOID_SIGMOID_VIA_EXP2 || p.score_function == FLASH_SIGMOID_SIGMOID_VIA_TANH,
            "problem.score_function", "FLASH_SIGMOID_SIGMOID_VIA_EXP2 or FLASH_SIGMOID_SIGMOID_VIA_TANH",
            static_cast<int>(p.score_function));
    require(p.kernel_arch == 0 || p.kernel_arch == 80 || p.kernel_arch == 90, "problem.kernel_arch",
            "0 (best available), 80 or 90", p.kernel_arch);
    check_sequences(p);
    check_kvcache(p);
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
    require(p.kv_batch >= 0, "problem.kv_batch", ">= 0 (0: batch)", p.kv_batch);
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

int element_bytes(FlashSigmoidDType dtype) { return dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2; }

// The extent of k/v: dense [batch, seqlen_k], cache rows [kv_batch, seqlen_k] (kv_batch_idx), or
// pages [kv_batch, page_size] (block_table). rows -1: the tensor's usual batch extent.
struct KvGeometry {
  int64_t rows, seqlen;
};
KvGeometry kv_geometry(const Problem& p) {
  if (p.block_table != nullptr) return KvGeometry{p.kv_batch, p.page_size};
  if (p.kv_batch_idx != nullptr) return KvGeometry{p.kv_batch > 0 ? p.kv_batch : p.batch, p.seqlen_k};
  return KvGeometry{-1, p.seqlen_k};
}

// What is valid but not implemented by the GPU kernels yet (issue 18, step 3): Unsupported, never a
// kernel that would ignore the field and return a wrong answer.
Status gpu_implements(const Problem& p, const char* where) {
  if (p.cu_seqlens_q != nullptr) {
    return fail(Status::kUnsupported, std::string(where) +
                                          ": problem.cu_seqlens_q: varlen is not implemented on the GPU yet "
                                          "(docs/varlen.md); the CPU implementation (cpu::forward/backward) has it");
  }
  for (const auto& [ptr, name, what] :
       {std::tuple{p.seqused_k, "problem.seqused_k", "per-batch key counts (a KV cache)"},
        std::tuple{p.kv_batch_idx, "problem.kv_batch_idx", "a KV-cache row map"},
        std::tuple{p.block_table, "problem.block_table", "a paged KV cache"}}) {
    if (ptr != nullptr) {
      return fail(Status::kUnsupported, std::string(where) + ": " + name + ": " + what +
                                            " is not implemented on the GPU yet (docs/kvcache.md); the CPU "
                                            "implementation (cpu::forward) has it");
    }
  }
  if (p.sigmoid_bias_per_batch != nullptr) {
    return fail(Status::kUnsupported, std::string(where) +
                                          ": problem.sigmoid_bias_per_batch: a per-sequence bias is not implemented "
                                          "on the GPU yet (docs/varlen.md); the CPU implementation has it");
  }
  return Status::kSuccess;
}

template <class Args>
Status finish(const Checker& c, const Args& args, Backend backend, const char* where) {
  if (!c.ok()) return c.status();
  if (backend == Backend::kCuda) {
    if (Status s = gpu_implements(args.problem, where); s != Status::kSuccess) return s;
  }
  return succeed();
}

}  // namespace

Status validate(const ForwardArgs* args, Backend backend, const char* where) {
  Checker c(where, backend);
  c.require(args != nullptr, "args", "a non-null pointer", "NULL");
  if (!c.ok()) return c.status();
  const Problem& p = args->problem;
  c.check_problem(p);
  const int eb = element_bytes(p.dtype);
  c.check_tensor(args->q, "q", p, p.seqlen_q, p.heads_q, eb);
  const KvGeometry kv = kv_geometry(p);
  c.check_tensor(args->k, "k", p, kv.seqlen, p.heads_kv, eb, kv.rows);
  c.check_tensor(args->v, "v", p, kv.seqlen, p.heads_kv, eb, kv.rows);
  c.check_tensor(args->out, "out", p, p.seqlen_q, p.heads_q, eb);
  return finish(c, *args, backend, where);
}

Status validate(const BackwardArgs* args, Backend backend, const char* where) {
  Checker c(where, backend);
  c.require(args != nullptr, "args", "a non-null pointer", "NULL");
  if (!c.ok()) return c.status();
  const Problem& p = args->problem;
  c.check_problem(p);
  for (const auto& [ptr, name] : {std::pair{p.seqused_k, "problem.seqused_k"},
                                  std::pair{p.kv_batch_idx, "problem.kv_batch_idx"},
                                  std::pair{p.block_table, "problem.block_table"}}) {
    c.require(ptr == nullptr, name, "NULL for the backward (the KV-cache fields are forward-only)",
              static_cast<const void*>(ptr));
  }
  const int eb = element_bytes(p.dtype);
  c.check_tensor(args->q, "q", p, p.seqlen_q, p.heads_q, eb);
  c.check_tensor(args->k, "k", p, p.seqlen_k, p.heads_kv, eb);
  c.check_tensor(args->v, "v", p, p.seqlen_k, p.heads_kv, eb);
  c.check_tensor(args->dout, "dout", p, p.seqlen_q, p.heads_q, eb);
  c.check_tensor(args->dq, "dq", p, p.seqlen_q, p.heads_q, eb);
  c.check_tensor(args->dk, "dk", p, p.seqlen_k, p.heads_kv, eb);
  c.check_tensor(args->dv, "dv", p, p.seqlen_k, p.heads_kv, eb);
  if (backend == Backend::kCuda && c.ok() && !nothing_to_do(*args)) {
    // The workspace size must not wrap: zero strides let tensors of any size pass the checks.
    uint64_t bytes = 0;
    const bool overflow = !DqAccumLayout::checked_bytes(p.batch, p.heads_q, p.seqlen_q, p.head_dim, &bytes);
    std::ostringstream got;
    got << "batch " << p.batch << ", heads_q " << p.heads_q << ", seqlen_q " << p.seqlen_q << ", head_dim " << p.head_dim;
    c.require(!overflow, "problem",
              "a backward workspace of batch * heads_q * round_up(seqlen_q, 128) * round_up(head_dim, 32) * 4 bytes "
              "(at most 2^63 - 1)",
              got.str());
  }
  return finish(c, *args, backend, where);
}

namespace {

// The KV-cache values of a CPU call: row b holds `lengths[b] + extra` keys (lengths NULL: the whole
// capacity seqlen_k, extra 0), which must fit the capacity; its cache row (kv_batch_idx) or every
// page holding one of those keys (block_table) must exist. `lengths_name` names `lengths`.
void check_host_kv(Checker& c, const Problem& p, const int32_t* lengths, int64_t extra,
                   const char* lengths_name = "problem.seqused_k") {
  const KvGeometry kv = kv_geometry(p);
  for (int64_t b = 0; c.ok() && b < p.batch; ++b) {
    const int64_t keys = (lengths != nullptr ? int64_t{lengths[b]} : p.seqlen_k) + extra;
    if (lengths != nullptr) {
      const std::string name = std::string(lengths_name) + "[" + std::to_string(b) + "]";
      c.require(lengths[b] >= 0, name.c_str(), ">= 0", lengths[b]);
      std::ostringstream fits;
      if (extra > 0) fits << "a length that with seqlen_new (" << extra << ") fits ";
      else fits << "at most ";
      fits << "problem.seqlen_k (" << p.seqlen_k << ", the cache's capacity)";
      c.require(keys <= p.seqlen_k, name.c_str(), fits.str(), lengths[b]);
    }
    if (p.kv_batch_idx != nullptr) {
      const std::string name = "problem.kv_batch_idx[" + std::to_string(b) + "]";
      std::ostringstream range;
      range << "a row of k and v (0.." << kv.rows - 1 << ")";
      c.require(p.kv_batch_idx[b] >= 0 && p.kv_batch_idx[b] < kv.rows, name.c_str(), range.str(), p.kv_batch_idx[b]);
    }
    if (p.block_table != nullptr) {
      for (int64_t page = 0; c.ok() && page * p.page_size < keys; ++page) {
        const int64_t at = b * p.block_table_stride_batch + page;
        const int32_t entry = p.block_table[at];
        std::ostringstream name, range;
        name << "problem.block_table[" << at << "] (batch " << b << ", page " << page << ")";
        range << "a page of k and v (0.." << kv.rows - 1 << ")";
        c.require(entry >= 0 && entry < kv.rows, name.str().c_str(), range.str(), entry);
      }
    }
  }
}

}  // namespace

Status check_host_sequences(const Problem& p, const char* where) {
  Checker c(where, Backend::kCpu);
  if (p.cu_seqlens_q != nullptr) {
    for (const auto& [cu, side, total, max_seqlen] : {std::tuple{p.cu_seqlens_q, "q", p.seqlen_q, p.max_seqlen_q},
                                                      std::tuple{p.cu_seqlens_k, "k", p.seqlen_k, p.max_seqlen_k}}) {
      const std::string cu_name = std::string("cu_seqlens_") + side;
      const std::string name_text = "problem." + cu_name;
      const std::string max_name = std::string("problem.max_seqlen_") + side;
      const char* name = name_text.c_str();
      c.require(cu[0] == 0, name, "the first entry to be 0", cu[0]);
      int64_t longest = 0;
      for (int64_t b = 0; c.ok() && b < p.batch; ++b) {
        if (cu[b + 1] < cu[b]) {
          std::ostringstream got;
          got << cu[b] << " then " << cu[b + 1] << " at index " << b;
          c.require(false, name, "non-decreasing entries", got.str());
        }
        longest = std::max<int64_t>(longest, int64_t{cu[b + 1]} - cu[b]);
      }
      std::ostringstream total_text;
      total_text << "the last entry to equal problem.seqlen_" << side << " (" << total << ", the total rows)";
      c.require(cu[p.batch] == total, name, total_text.str(), cu[p.batch]);
      std::ostringstream longest_text;
      longest_text << "at least the longest sequence of " << cu_name << " (" << longest << ")";
      c.require(max_seqlen >= longest, max_name.c_str(), longest_text.str(), max_seqlen);
    }
  }
  check_host_kv(c, p, p.seqused_k, 0);
  if (p.sigmoid_bias_per_batch != nullptr) {
    for (int64_t b = 0; c.ok() && b < p.batch; ++b) {
      const std::string name = "problem.sigmoid_bias_per_batch[" + std::to_string(b) + "]";
      c.require(std::isfinite(p.sigmoid_bias_per_batch[b]), name.c_str(), "a finite number",
                p.sigmoid_bias_per_batch[b]);
    }
  }
  return c.ok() ? succeed() : c.status();
}

Status validate(const KvAppendArgs* args, Backend backend, const char* where) {
  Checker c(where, backend);
  c.require(args != nullptr, "args", "a non-null pointer", "NULL");
  if (!c.ok()) return c.status();
  const Problem& p = args->problem;
  c.check_problem(p);
  c.require(p.seqused_k == nullptr, "problem.seqused_k", "NULL for the append (cache_seqlens gives the lengths)",
            static_cast<const void*>(p.seqused_k));
  c.require(args->seqlen_new >= 0, "seqlen_new", ">= 0", args->seqlen_new);
  const bool has_work = p.batch > 0 && (args->seqlen_new > 0 || (args->rotary_cos != nullptr && p.seqlen_q > 0));
  c.require(args->cache_seqlens != nullptr || !has_work, "cache_seqlens", "a non-null pointer to int32 [batch]",
            "NULL");
  c.require(reinterpret_cast<uintptr_t>(args->cache_seqlens) % alignof(int32_t) == 0, "cache_seqlens",
            "a 4-byte aligned pointer to int32", static_cast<const void*>(args->cache_seqlens));
  const int eb = element_bytes(p.dtype);
  const KvGeometry kv = kv_geometry(p);
  c.check_tensor(args->k_new, "k_new", p, args->seqlen_new, p.heads_kv, eb);
  c.check_tensor(args->v_new, "v_new", p, args->seqlen_new, p.heads_kv, eb);
  if (args->seqlen_new > 0) {
    c.check_tensor(args->k_cache, "k_cache", p, kv.seqlen, p.heads_kv, eb, kv.rows);
    c.check_tensor(args->v_cache, "v_cache", p, kv.seqlen, p.heads_kv, eb, kv.rows);
  }
  const bool has_cos = args->rotary_cos != nullptr, has_sin = args->rotary_sin != nullptr;
  c.require(has_cos == has_sin, has_cos ? "rotary_sin" : "rotary_cos",
            std::string("a non-null pointer like ") + (has_cos ? "rotary_cos" : "rotary_sin") +
                " (both set: rotary; both NULL: none)",
            "NULL");
  if (has_cos && has_sin) {
    std::ostringstream dims;
    dims << "an even number in 2..head_dim (" << p.head_dim << ")";
    c.require(args->rotary_dim >= 2 && args->rotary_dim % 2 == 0 && args->rotary_dim <= p.head_dim, "rotary_dim",
              dims.str(), args->rotary_dim);
    std::ostringstream stride;
    stride << ">= rotary_dim / 2 (" << args->rotary_dim / 2 << ", a table row)";
    c.require(args->rotary_stride >= args->rotary_dim / 2, "rotary_stride", stride.str(), args->rotary_stride);
    c.require(args->rotary_seqlen >= 0, "rotary_seqlen", ">= 0", args->rotary_seqlen);
    for (const auto& [ptr, name] : {std::pair{args->rotary_cos, "rotary_cos"}, std::pair{args->rotary_sin, "rotary_sin"}}) {
      c.require(reinterpret_cast<uintptr_t>(ptr) % alignof(float) == 0, name, "a 4-byte aligned pointer to fp32",
                static_cast<const void*>(ptr));
    }
    if (args->q.data != nullptr) {
      c.check_tensor(args->q, "q", p, p.seqlen_q, p.heads_q, eb);
      c.check_tensor(args->q_rotated, "q_rotated", p, p.seqlen_q, p.heads_q, eb);
      c.require(args->q_rotated.data != args->q.data || p.batch == 0 || p.seqlen_q == 0, "q_rotated.data",
                "a buffer other than q.data (the rotation is not in place)", args->q_rotated.data);
    }
  }
  return c.ok() ? succeed() : c.status();
}

Status check_host_append(const KvAppendArgs& args, const char* where) {
  Checker c(where, Backend::kCpu);
  const Problem& p = args.problem;
  if (args.cache_seqlens == nullptr) return succeed();  // validate(): nothing is appended or rotated
  check_host_kv(c, p, args.cache_seqlens, args.seqlen_new, "cache_seqlens");
  if (args.rotary_cos != nullptr) {
    const bool q_steps = p.causal || p.window_left != -1 || p.window_right != -1;
    for (int64_t b = 0; c.ok() && b < p.batch; ++b) {
      int64_t last = -1;  // the last position rotated in row b
      if (args.seqlen_new > 0) last = args.cache_seqlens[b] + args.seqlen_new - 1;
      if (args.q.data != nullptr && p.seqlen_q > 0) {
        last = std::max<int64_t>(last, args.cache_seqlens[b] + (q_steps ? p.seqlen_q - 1 : 0));
      }
      std::ostringstream rows;
      rows << "more than " << last << " rows (the last position of batch " << b << "'s q and new k)";
      c.require(last < args.rotary_seqlen, "rotary_seqlen", rows.str(), args.rotary_seqlen);
    }
  }
  return c.ok() ? succeed() : c.status();
}

bool nothing_to_do(const ForwardArgs& args) { return args.problem.batch == 0 || args.problem.seqlen_q == 0; }

bool nothing_to_do(const BackwardArgs& args) {
  // With seqlen_q == 0 but keys present, dk and dv must still be written (as zeros).
  return args.problem.batch == 0 || (args.problem.seqlen_q == 0 && args.problem.seqlen_k == 0);
}

namespace {

StridedPtr strided(const Tensor& t) { return StridedPtr{t.data, t.stride_batch, t.stride_seq, t.stride_head}; }

ProblemParams problem_params(const Problem& p) {
  ProblemParams q;
  q.batch = static_cast<int>(p.batch);
  q.seqlen_q = static_cast<int>(p.seqlen_q);
  q.seqlen_k = static_cast<int>(p.seqlen_k);
  q.heads_q = static_cast<int>(p.heads_q);
  q.heads_kv = static_cast<int>(p.heads_kv);
  q.head_dim = static_cast<int>(p.head_dim);
  q.group_size = static_cast<int>(p.heads_q / p.heads_kv);
  q.scale = p.scale;
  // Dense, "auto" is one bias known on the host. (Packed sequences and per-sequence biases never
  // reach the kernels: gpu_implements.)
  q.bias = p.sigmoid_bias;
  if (p.sigmoid_bias_auto) q.bias = p.seqlen_k > 0 ? static_cast<float>(-std::log(static_cast<double>(p.seqlen_k))) : 0.0f;
  q.mask = resolve_mask(p.causal != 0, p.window_left, p.window_right, p.seqlen_q, p.seqlen_k);
  q.alibi_slopes = p.alibi_slopes;
  q.alibi_stride_batch = p.alibi_stride_batch;
  q.score_function = p.score_function == FLASH_SIGMOID_SIGMOID_VIA_TANH ? ScoreFunctionKind::kSigmoidViaTanh
                                                                        : ScoreFunctionKind::kSigmoidViaExp2;
  return q;
}

}  // namespace

ForwardParams make_params(const ForwardArgs& args) {
  ForwardParams f;
  f.problem = problem_params(args.problem);
  f.q = strided(args.q);
  f.k = strided(args.k);
  f.v = strided(args.v);
  f.out = strided(args.out);
  return f;
}

BackwardParams make_params(const BackwardArgs& args, void* workspace) {
  BackwardParams b;
  b.problem = problem_params(args.problem);
  b.q = strided(args.q);
  b.k = strided(args.k);
  b.v = strided(args.v);
  b.dout = strided(args.dout);
  b.dq = strided(args.dq);
  b.dk = strided(args.dk);
  b.dv = strided(args.dv);
  b.dq_accum = static_cast<float*>(workspace);
  b.deterministic = args.deterministic != 0;
  return b;
}

}  // namespace flash_sigmoid::api

// Layer: public API. Validation of the KV-cache fields' host values and of the append step
// (docs/kvcache.md); every rejected argument gets a message that names it. validate() reads only
// the struct; check_host_kv() and check_host_append() read the host lengths, row map, block table
// and nothing else (CPU path only).
#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <utility>

#include "api/checker.hpp"
#include "api/error.hpp"
#include "api/validate.hpp"

namespace flash_sigmoid::api {

void check_host_kv(Checker& c, const Problem& p, const int32_t* lengths, int64_t extra,
                   const char* lengths_name) {
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


Status validate(const KvAppendArgs* args, Backend backend, const char* where) {
  Checker c(where, backend);
  c.require(args != nullptr, "args", "a non-null pointer", "NULL");
  if (!c.ok()) return c.status();
  const Problem& p = args->problem;
  c.check_problem(p);
  c.require(p.seqused_k == nullptr, "problem.seqused_k", "NULL for the append (cache_seqlens gives the lengths)",
            static_cast<const void*>(p.seqused_k));
  c.require(args->seqlen_new >= 0, "seqlen_new", ">= 0", args->seqlen_new);
  const bool has_work = p.batch > 0 && (args->seqlen_new > 0 || (args->rotary_cos != nullptr && p.seqlen_q > 0) ||
                                        args->seqused_k_out != nullptr);
  c.require(args->cache_seqlens != nullptr || !has_work, "cache_seqlens", "a non-null pointer to int32 [batch]",
            "NULL");
  c.require(reinterpret_cast<uintptr_t>(args->cache_seqlens) % alignof(int32_t) == 0, "cache_seqlens",
            "a 4-byte aligned pointer to int32", static_cast<const void*>(args->cache_seqlens));
  c.require(reinterpret_cast<uintptr_t>(args->seqused_k_out) % alignof(int32_t) == 0, "seqused_k_out",
            "NULL or a 4-byte aligned pointer to int32 [batch]", static_cast<const void*>(args->seqused_k_out));
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

}  // namespace flash_sigmoid::api

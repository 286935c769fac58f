// Layer: public API. Argument validation: every rejected argument gets a message that names it and
// says what was expected. validate() reads only the structs, never memory behind their pointers;
// check_host_sequences() reads the host offsets, biases and KV-cache values of a CPU call, and
// nothing else. The checks themselves are the Checker's (checker.hpp); the append step's are in
// validate_kvcache.cpp.
#include "api/validate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>

#include "api/checker.hpp"
#include "api/error.hpp"
#include "common/dq_accum_layout.hpp"

namespace flash_sigmoid::api {
namespace {

// A KV-cache forward on the GPU runs the decode kernel (docs/kvcache.md): what it does not take is
// Unsupported naming the field, never a kernel that would ignore it.
Status decode_implements(const Problem& p, const char* where) {
  const int64_t rows = p.seqlen_q * (p.heads_q / p.heads_kv);
  if (rows > kDecodeMaxRows) {
    std::ostringstream os;
    os << where << ": problem.seqlen_q: the GPU KV-cache (decode) kernel takes seqlen_q * heads_q / heads_kv <= "
       << kDecodeMaxRows << " query rows per kv head, got " << p.seqlen_q << " * " << p.heads_q / p.heads_kv << " = "
       << rows << " (flash_attn_with_kvcache runs longer queries through the dense forward, docs/kvcache.md); the "
       << "CPU implementation (cpu::forward) has it";
    return fail(Status::kUnsupported, os.str());
  }
  if (p.kernel_arch == 90) {
    return fail(Status::kUnsupported, std::string(where) +
                                          ": problem.kernel_arch: the KV-cache decode kernel is sm80-family code "
                                          "(mma.sync, cp.async; it runs on sm_90 too): expected 0 or 80, got 90");
  }
  if (p.kernel_variant != nullptr && p.kernel_variant[0] != '\0') {
    return fail(Status::kUnsupported, std::string(where) + ": problem.kernel_variant: the KV-cache decode kernel has "
                                                           "no variants: expected NULL or \"\", got '" +
                                          p.kernel_variant + "'");
  }
  return Status::kSuccess;
}

// What is valid but not implemented by the GPU kernels: Unsupported, never a kernel that would
// ignore the field and return a wrong answer. Packed sequences and per-sequence biases are
// implemented by both kernel families, forward and backward (docs/varlen.md); a KV-cache forward
// runs the decode kernel.
Status gpu_implements(const Problem& p, const char* where) {
  if (is_kvcache(p)) return decode_implements(p, where);
  if (make_dropout(p.dropout_p, 0, 0).enabled() && p.score_function != FLASH_SIGMOID_SIGMOID_VIA_EXP2) {
    return fail(Status::kUnsupported, std::string(where) +
                                          ": problem.score_function: the GPU kernels apply dropout with the exp2 "
                                          "score function only (the tanh form with dropout is not built): expected "
                                          "FLASH_SIGMOID_SIGMOID_VIA_EXP2 with problem.dropout_p > 0, got "
                                          "FLASH_SIGMOID_SIGMOID_VIA_TANH");
  }
  return Status::kSuccess;
}

// The CPU implementation's counterpart: it implements every valid problem (dropout included,
// docs/dropout.md).
Status cpu_implements(const Problem& /*p*/, const char* /*where*/) { return Status::kSuccess; }

}  // namespace

bool is_kvcache(const Problem& p) {
  return p.seqused_k != nullptr || p.kv_batch_idx != nullptr || p.block_table != nullptr;
}

namespace {

template <class Args>
Status finish(const Checker& c, const Args& args, Backend backend, const char* where) {
  if (!c.ok()) return c.status();
  if (backend == Backend::kCuda) {
    if (Status s = gpu_implements(args.problem, where); s != Status::kSuccess) return s;
  } else {
    if (Status s = cpu_implements(args.problem, where); s != Status::kSuccess) return s;
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
    // Packed: one run of round_up(total + 128 batch, 128) rows per head (dq_accum_layout.hpp).
    uint64_t bytes = 0;
    const bool packed = p.cu_seqlens_q != nullptr;
    const bool overflow = !DqAccumLayout::checked_bytes(packed ? 1 : p.batch, p.heads_q,
                                                        packed ? p.seqlen_q + 128 * p.batch : p.seqlen_q, p.head_dim,
                                                        &bytes);
    std::ostringstream got;
    got << "batch " << p.batch << ", heads_q " << p.heads_q << ", seqlen_q " << p.seqlen_q << ", head_dim " << p.head_dim;
    c.require(!overflow, "problem",
              packed ? "a backward workspace of heads_q * round_up(seqlen_q + 128 * batch, 128) * "
                       "round_up(head_dim, 32) * 4 bytes (at most 2^63 - 1)"
                     : "a backward workspace of batch * heads_q * round_up(seqlen_q, 128) * round_up(head_dim, 32) * "
                       "4 bytes (at most 2^63 - 1)",
              got.str());
  }
  return finish(c, *args, backend, where);
}

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

bool nothing_to_do(const ForwardArgs& args) { return args.problem.batch == 0 || args.problem.seqlen_q == 0; }

bool nothing_to_do(const BackwardArgs& args) {
  // With seqlen_q == 0 but keys present, dk and dv must still be written (as zeros).
  return args.problem.batch == 0 || (args.problem.seqlen_q == 0 && args.problem.seqlen_k == 0);
}

namespace {

// Packed tensors' batch stride is ignored (every sequence is found by its offset along seq): 0, so
// that a kernel's batch_idx * stride_batch term vanishes.
StridedPtr strided(const Tensor& t, const Problem& p) {
  return StridedPtr{t.data, p.cu_seqlens_q != nullptr ? 0 : t.stride_batch, t.stride_seq, t.stride_head};
}

ProblemParams problem_params(const Problem& p) {
  ProblemParams q;
  const bool packed = p.cu_seqlens_q != nullptr;
  q.batch = static_cast<int>(p.batch);
  // Packed: the grids are sized by the longest sequences (at most the totals).
  q.seqlen_q = static_cast<int>(packed ? std::min(p.max_seqlen_q, p.seqlen_q) : p.seqlen_q);
  q.seqlen_k = static_cast<int>(packed ? std::min(p.max_seqlen_k, p.seqlen_k) : p.seqlen_k);
  q.total_q = static_cast<int>(p.seqlen_q);
  q.total_k = static_cast<int>(p.seqlen_k);
  q.cu_seqlens_q = p.cu_seqlens_q;
  q.cu_seqlens_k = p.cu_seqlens_k;
  q.heads_q = static_cast<int>(p.heads_q);
  q.heads_kv = static_cast<int>(p.heads_kv);
  q.head_dim = static_cast<int>(p.head_dim);
  q.group_size = static_cast<int>(p.heads_q / p.heads_kv);
  q.scale = p.scale;
  // Dense, "auto" is one bias known on the host; packed, each sequence's, which the kernels compute
  // from the offsets they read (sequence_bias).
  q.bias = p.sigmoid_bias;
  if (p.sigmoid_bias_auto && !packed) {
    q.bias = p.seqlen_k > 0 ? static_cast<float>(-std::log(static_cast<double>(p.seqlen_k))) : 0.0f;
  }
  q.bias_auto = p.sigmoid_bias_auto != 0 && packed;
  q.bias_per_batch = p.sigmoid_bias_per_batch;
  // Packed: a bound that hides nothing from the longest sequences hides nothing from any, so the
  // mask resolved with the longest lengths is every sequence's.
  q.mask = resolve_mask(p.causal != 0, p.window_left, p.window_right, q.seqlen_q, q.seqlen_k);
  q.alibi_slopes = p.alibi_slopes;
  q.alibi_stride_batch = p.alibi_stride_batch;
  q.alibi_offset = static_cast<int>(p.alibi_offset);
  q.score_function = p.score_function == FLASH_SIGMOID_SIGMOID_VIA_TANH ? ScoreFunctionKind::kSigmoidViaTanh
                                                                        : ScoreFunctionKind::kSigmoidViaExp2;
  const DropoutParams dropout = make_dropout(p.dropout_p, 0, 0);
  if (dropout.enabled()) {
    q.dropout_threshold = dropout.threshold;
    q.dropout_rescale = dropout.rescale;
    q.dropout_seed = p.dropout_seed;
  }
  return q;
}

}  // namespace

ForwardParams make_params(const ForwardArgs& args) {
  ForwardParams f;
  f.problem = problem_params(args.problem);
  f.q = strided(args.q, args.problem);
  f.k = strided(args.k, args.problem);
  f.v = strided(args.v, args.problem);
  f.out = strided(args.out, args.problem);
  return f;
}

DecodeParams make_decode_params(const ForwardArgs& args, const DecodePlan& plan, void* workspace) {
  const Problem& p = args.problem;
  DecodeParams d;
  d.forward = make_params(args);
  // Each row's bias is known on the device only (auto: -log of its key count).
  d.forward.problem.bias = p.sigmoid_bias;
  KvCacheParams& kv = d.kv;
  kv.seqused_k = p.seqused_k;
  kv.kv_batch_idx = p.kv_batch_idx;
  kv.block_table = p.block_table;
  kv.block_table_stride_batch = p.block_table_stride_batch;
  kv.page_size = p.block_table != nullptr ? static_cast<int>(p.page_size) : 0;
  kv.kv_rows = kv_rows(p);
  // Unresolved bounds (each row has its own key count); a bound past any row's keys never binds,
  // so clamping it to seqlen_k keeps the kernel's int arithmetic in range.
  auto clamp = [&](int64_t bound) { return static_cast<int>(bound < 0 ? -1 : std::min(bound, p.seqlen_k)); };
  kv.window_left = clamp(p.window_left);
  kv.window_right = p.causal ? 0 : clamp(p.window_right);
  kv.bias_per_batch = p.sigmoid_bias_per_batch;
  kv.bias_auto = p.sigmoid_bias_auto != 0;
  d.num_splits = plan.num_splits;
  d.row_chunks = plan.row_chunks;
  d.partial = static_cast<float*>(workspace);
  return d;
}

AppendParams make_params(const KvAppendArgs& args) {
  const Problem& p = args.problem;
  AppendParams a;
  a.batch = static_cast<int>(p.batch);
  a.seqlen_new = static_cast<int>(args.seqlen_new);
  const bool rotary = args.rotary_cos != nullptr;
  a.seqlen_q = rotary && args.q.data != nullptr ? static_cast<int>(p.seqlen_q) : 0;
  a.heads_q = static_cast<int>(p.heads_q);
  a.heads_kv = static_cast<int>(p.heads_kv);
  a.head_dim = static_cast<int>(p.head_dim);
  a.seqlen_k = static_cast<int>(p.seqlen_k);
  a.kv_rows = kv_rows(p);
  a.cache_seqlens = args.cache_seqlens;
  a.kv_batch_idx = p.kv_batch_idx;
  a.block_table = p.block_table;
  a.block_table_stride_batch = p.block_table_stride_batch;
  a.page_size = p.block_table != nullptr ? static_cast<int>(p.page_size) : 0;
  auto rows = [](const Tensor& t) { return StridedPtr{t.data, t.stride_batch, t.stride_seq, t.stride_head}; };
  a.k_new = rows(args.k_new);
  a.v_new = rows(args.v_new);
  a.k_cache = rows(args.k_cache);
  a.v_cache = rows(args.v_cache);
  a.q = rows(args.q);
  a.q_rotated = rows(args.q_rotated);
  if (rotary) {
    a.rotary_cos = args.rotary_cos;
    a.rotary_sin = args.rotary_sin;
    a.rotary_stride = args.rotary_stride;
    a.rotary_seqlen = static_cast<int>(args.rotary_seqlen);
    a.rotary_dim = static_cast<int>(args.rotary_dim);
    a.rotary_interleaved = args.rotary_interleaved != 0;
  }
  // flash-attn 2.5.6: with causal or a window q's token i sits at cache_seqlens[b] + i.
  a.q_steps = p.causal != 0 || p.window_left != -1 || p.window_right != -1;
  a.seqused_k_out = args.seqused_k_out;
  return a;
}

BackwardParams make_params(const BackwardArgs& args, void* workspace) {
  BackwardParams b;
  b.problem = problem_params(args.problem);
  b.q = strided(args.q, args.problem);
  b.k = strided(args.k, args.problem);
  b.v = strided(args.v, args.problem);
  b.dout = strided(args.dout, args.problem);
  b.dq = strided(args.dq, args.problem);
  b.dk = strided(args.dk, args.problem);
  b.dv = strided(args.dv, args.problem);
  b.dq_accum = static_cast<float*>(workspace);
  b.deterministic = args.deterministic != 0;
  return b;
}

}  // namespace flash_sigmoid::api

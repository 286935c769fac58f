// Layer: PyTorch binding. Torch tensors -> public API structs; see tensor_args.hpp. The public API
// validates the problem itself (GQA ratio, head dim range, window bounds, GPU limits) and names the
// argument; this file checks only what the API cannot see: ranks, dtypes, devices, shapes.
#include "tensor_args.hpp"

#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

#include <torch/csrc/stable/ops.h>
#include <torch/headeronly/core/ScalarType.h>

namespace flash_sigmoid::torch_binding {
namespace {

using torch::headeronly::ScalarType;

[[noreturn]] void fail(const char* op, const std::string& argument, const std::string& message) {
  throw std::runtime_error(std::string(op) + ": " + argument + ": " + message);
}

std::string shape_string(const StableTensor& t) {
  std::ostringstream os;
  os << "[";
  for (int64_t d = 0; d < t.dim(); ++d) os << (d ? ", " : "") << t.size(d);
  os << "]";
  return os.str();
}

std::string dtype_name(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    default: {
      std::ostringstream os;
      os << dtype;
      return os.str();
    }
  }
}

std::string device_name(const StableTensor& t) {
  if (t.is_cpu()) return "cpu";
  if (t.is_cuda()) return "cuda:" + std::to_string(t.get_device_index());
  return "a device other than cpu and cuda";
}

bool same_device(const StableTensor& a, const StableTensor& b) {
  if (a.is_cpu() || b.is_cpu()) return a.is_cpu() && b.is_cpu();
  return a.is_cuda() && b.is_cuda() && a.get_device_index() == b.get_device_index();
}

DType api_dtype(const char* op, const StableTensor& q, Backend backend) {
  switch (q.scalar_type()) {
    case ScalarType::Half: return DType::kFloat16;
    case ScalarType::BFloat16: return DType::kBFloat16;
    case ScalarType::Float:
      if (backend == Backend::kCpu) return DType::kFloat32;
      break;
    default: break;
  }
  fail(op, "q", std::string("expected dtype ") +
                    (backend == Backend::kCpu ? "float16, bfloat16 or float32" : "float16 or bfloat16") + " on " +
                    device_name(q) + ", got " + dtype_name(q.scalar_type()));
}

void check_like_q(const char* op, const char* name, const StableTensor& t, const StableTensor& q) {
  if (t.dim() != 4) {
    fail(op, name, "expected 4 dims [batch, seqlen, heads, head_dim], got shape " + shape_string(t));
  }
  if (t.scalar_type() != q.scalar_type()) {
    fail(op, name, "expected dtype " + dtype_name(q.scalar_type()) + " like q, got " + dtype_name(t.scalar_type()));
  }
  if (!same_device(t, q)) fail(op, name, "expected device " + device_name(q) + " like q, got " + device_name(t));
}

StableTensor readable(const StableTensor& t, Backend backend) {
  if (readable_in_place(t, backend)) return t;
  StableTensor copy = torch::stable::new_empty(t, t.sizes());
  torch::stable::copy_(copy, t);
  return copy;
}

std::optional<StableTensor> prepare_alibi(const char* op, const std::optional<StableTensor>& slopes,
                                          const StableTensor& q, int64_t batch, int64_t heads_q, Problem* problem) {
  problem->alibi_slopes = nullptr;
  problem->alibi_stride_batch = 0;
  if (!slopes.has_value()) return std::nullopt;
  const StableTensor& s = *slopes;
  if (s.scalar_type() != ScalarType::Float) {
    fail(op, "alibi_slopes", "expected dtype float32, got " + dtype_name(s.scalar_type()));
  }
  if (!same_device(s, q)) fail(op, "alibi_slopes", "expected device " + device_name(q) + " like q, got " + device_name(s));
  const bool per_head = s.dim() == 1 && s.size(0) == heads_q;
  const bool per_batch_head = s.dim() == 2 && s.size(0) == batch && s.size(1) == heads_q;
  if (!per_head && !per_batch_head) {
    fail(op, "alibi_slopes", "expected shape [" + std::to_string(heads_q) + "] or [" + std::to_string(batch) + ", " +
                                 std::to_string(heads_q) + "], got " + shape_string(s));
  }
  // The API reads slope (b, h) at b * alibi_stride_batch + h: the head dim must be contiguous and
  // the batch stride at least heads_q (or 0 when it is never used).
  StableTensor usable = s;
  const int64_t last = s.dim() - 1;
  const bool batch_stride_ok = per_head || s.size(0) == 1 || s.stride(0) >= heads_q;
  if ((s.size(last) > 1 && s.stride(last) != 1) || !batch_stride_ok) usable = torch::stable::contiguous(s);
  problem->alibi_slopes = static_cast<const float*>(usable.data_ptr());
  problem->alibi_stride_batch = (per_batch_head && s.size(0) > 1) ? usable.stride(0) : 0;
  return usable;
}

// The op parameters shared by the dense and varlen ops, checked where the API cannot name them.
void set_params(const char* op, const OpParams& params, Problem* p) {
  if (params.score_function != FLASH_SIGMOID_SIGMOID_VIA_EXP2 && params.score_function != FLASH_SIGMOID_SIGMOID_VIA_TANH) {
    fail(op, "score_function", "expected 0 (sigmoid via exp2) or 1 (sigmoid via tanh), got " +
                                   std::to_string(params.score_function));
  }
  if (params.kernel_arch != 0 && params.kernel_arch != 80 && params.kernel_arch != 90) {
    fail(op, "kernel_arch", "expected 0 (best available), 80 or 90, got " + std::to_string(params.kernel_arch));
  }
  p->scale = static_cast<float>(params.scale);
  p->sigmoid_bias = static_cast<float>(params.sigmoid_bias);
  p->causal = params.causal ? 1 : 0;
  p->window_left = params.window_left;
  p->window_right = params.window_right;
  p->score_function = static_cast<FlashSigmoidScoreFunction>(params.score_function);
  p->kernel_arch = static_cast<int32_t>(params.kernel_arch);
  p->kernel_variant = params.kernel_variant->empty() ? nullptr : params.kernel_variant->c_str();
  p->alibi_offset = params.alibi_offset;  // the API checks its range
}

}  // namespace

// The dropout seed tensor: int64 [2] ({seed, offset}'s bits) on q's device, read in place where it
// is contiguous (8-byte aligned, as every int64 tensor's data). Returns what problem.dropout_seed
// points into. Without dropout (p 0, or below half a step) the tensor may be absent and is not read.
std::optional<StableTensor> prepare_dropout(const char* op, const OpParams& params, const StableTensor& q,
                                            Problem* p) {
  p->dropout_p = static_cast<float>(params.dropout_p);
  p->dropout_seed = nullptr;
  if (!(params.dropout_p >= 0.0 && params.dropout_p < 1.0)) {
    fail(op, "dropout_p", "expected a probability in [0, 1), got " + std::to_string(params.dropout_p));
  }
  if (!params.dropout_seed.has_value()) {
    if (p->dropout_p * 256.0f + 0.5f >= 1.0f) {  // p rounds to a dropout (policies/dropout.hpp)
      fail(op, "dropout_seed", "expected an int64 tensor of shape [2] ({seed, offset}) on " + device_name(q) +
                                   " when dropout_p > 0 (dropout_p = " + std::to_string(params.dropout_p) +
                                   "), got None");
    }
    return std::nullopt;
  }
  const StableTensor& s = *params.dropout_seed;
  if (s.scalar_type() != ScalarType::Long) {
    fail(op, "dropout_seed", "expected dtype int64 ({seed, offset}), got " + dtype_name(s.scalar_type()));
  }
  if (!same_device(s, q)) fail(op, "dropout_seed", "expected device " + device_name(q) + " like q, got " + device_name(s));
  if (s.dim() != 1 || s.size(0) != 2) fail(op, "dropout_seed", "expected shape [2] ({seed, offset}), got " + shape_string(s));
  StableTensor usable = s.stride(0) == 1 ? s : torch::stable::contiguous(s);
  p->dropout_seed = static_cast<const uint64_t*>(usable.data_ptr());
  return usable;
}

// Size-1 dims are ignored: api_tensor() gives them stride 0.
bool readable_in_place(const StableTensor& t, Backend backend) {
  if (t.numel() == 0) return true;
  const int64_t last = t.dim() - 1;
  if (t.size(last) > 1 && t.stride(last) != 1) return false;
  const int64_t vector = 16 / static_cast<int64_t>(t.element_size());
  for (int64_t d = 0; d < last; ++d) {
    if (t.size(d) == 1) continue;
    if (t.stride(d) < 0) return false;
    if (backend == Backend::kCuda && t.stride(d) % vector != 0) return false;
  }
  return backend == Backend::kCpu || reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
}

Backend backend_of(const StableTensor& q) {
  if (q.is_cuda()) return Backend::kCuda;
  if (q.is_cpu()) return Backend::kCpu;
  throw std::runtime_error("flash_sigmoid: q: expected a CPU or CUDA tensor, got " + device_name(q));
}

Inputs prepare_inputs(const char* op, const StableTensor& q, const StableTensor& k, const StableTensor& v,
                      const std::optional<StableTensor>& dout, const OpParams& params) {
  const Backend backend = backend_of(q);
  if (q.dim() != 4) fail(op, "q", "expected 4 dims [batch, seqlen, heads, head_dim], got shape " + shape_string(q));
  const DType dtype = api_dtype(op, q, backend);
  check_like_q(op, "k", k, q);
  check_like_q(op, "v", v, q);
  if (k.size(0) != q.size(0) || k.size(3) != q.size(3)) {
    fail(op, "k", "expected batch " + std::to_string(q.size(0)) + " and head_dim " + std::to_string(q.size(3)) +
                      " like q, got shape " + shape_string(k));
  }
  for (int64_t d = 0; d < 4; ++d) {
    if (v.size(d) != k.size(d)) fail(op, "v", "expected the shape of k " + shape_string(k) + ", got " + shape_string(v));
  }
  if (dout.has_value()) {
    check_like_q(op, "dout", *dout, q);
    for (int64_t d = 0; d < 4; ++d) {
      if (dout->size(d) != q.size(d)) {
        fail(op, "dout", "expected the shape of q " + shape_string(q) + ", got " + shape_string(*dout));
      }
    }
  }
  Inputs in{backend, readable(q, backend), readable(k, backend), readable(v, backend), std::nullopt, std::nullopt,
            problem_init(q.size(3)), std::nullopt};
  if (dout.has_value()) in.dout = readable(*dout, backend);
  Problem& p = in.problem;
  p.dtype = static_cast<FlashSigmoidDType>(dtype);
  p.batch = q.size(0);
  p.seqlen_q = q.size(1);
  p.seqlen_k = k.size(1);
  p.heads_q = q.size(2);
  p.heads_kv = k.size(2);
  set_params(op, params, &p);
  in.alibi = prepare_alibi(op, params.alibi_slopes, q, p.batch, p.heads_q, &p);
  in.dropout_seed = prepare_dropout(op, params, q, &p);
  return in;
}

VarlenInputs prepare_varlen_inputs(const char* op, const StableTensor& q, const StableTensor& k, const StableTensor& v,
                                   const std::optional<StableTensor>& dout, const VarlenParams& varlen,
                                   const OpParams& params) {
  const Backend backend = backend_of(q);
  const char* layout = "expected 3 dims [total_tokens, heads, head_dim], got shape ";
  if (q.dim() != 3) fail(op, "q", layout + shape_string(q));
  const DType dtype = api_dtype(op, q, backend);
  for (const auto& [name, t] : {std::pair<const char*, const StableTensor*>{"k", &k}, {"v", &v}}) {
    if (t->dim() != 3) fail(op, name, layout + shape_string(*t));
    if (t->scalar_type() != q.scalar_type()) {
      fail(op, name, "expected dtype " + dtype_name(q.scalar_type()) + " like q, got " + dtype_name(t->scalar_type()));
    }
    if (!same_device(*t, q)) fail(op, name, "expected device " + device_name(q) + " like q, got " + device_name(*t));
  }
  if (k.size(2) != q.size(2)) {
    fail(op, "k", "expected head_dim " + std::to_string(q.size(2)) + " like q, got shape " + shape_string(k));
  }
  for (int64_t d = 0; d < 3; ++d) {
    if (v.size(d) != k.size(d)) fail(op, "v", "expected the shape of k " + shape_string(k) + ", got " + shape_string(v));
  }
  if (dout.has_value()) {
    if (dout->dim() != 3 || dout->scalar_type() != q.scalar_type() || !same_device(*dout, q) ||
        dout->size(0) != q.size(0) || dout->size(1) != q.size(1) || dout->size(2) != q.size(2)) {
      fail(op, "dout", "expected the shape " + shape_string(q) + ", dtype and device of q, got shape " +
                           shape_string(*dout));
    }
  }
  auto offsets = [&](const char* name, const StableTensor& cu) {
    if (cu.scalar_type() != ScalarType::Int) fail(op, name, "expected dtype int32, got " + dtype_name(cu.scalar_type()));
    if (!same_device(cu, q)) fail(op, name, "expected device " + device_name(q) + " like q, got " + device_name(cu));
    if (cu.dim() != 1 || cu.size(0) < 1) fail(op, name, "expected shape [batch + 1], got " + shape_string(cu));
    return torch::stable::contiguous(cu);
  };
  StableTensor cu_q = offsets("cu_seqlens_q", varlen.cu_seqlens_q);
  StableTensor cu_k = offsets("cu_seqlens_k", varlen.cu_seqlens_k);
  if (cu_k.size(0) != cu_q.size(0)) {
    fail(op, "cu_seqlens_k", "expected shape " + shape_string(cu_q) + " like cu_seqlens_q, got " + shape_string(cu_k));
  }
  const int64_t batch = cu_q.size(0) - 1;
  std::optional<StableTensor> bias;
  if (varlen.sigmoid_bias_per_batch.has_value()) {
    const StableTensor& b = *varlen.sigmoid_bias_per_batch;
    if (b.scalar_type() != ScalarType::Float) {
      fail(op, "sigmoid_bias_per_batch", "expected dtype float32, got " + dtype_name(b.scalar_type()));
    }
    if (!same_device(b, q)) {
      fail(op, "sigmoid_bias_per_batch", "expected device " + device_name(q) + " like q, got " + device_name(b));
    }
    if (b.dim() != 1 || b.size(0) != batch) {
      fail(op, "sigmoid_bias_per_batch", "expected shape [" + std::to_string(batch) + "] (one per sequence), got " +
                                             shape_string(b));
    }
    bias = torch::stable::contiguous(b);
  }

  VarlenInputs vi{Inputs{backend, readable(q, backend), readable(k, backend), readable(v, backend), std::nullopt,
                         std::nullopt, problem_init(q.size(2)), std::nullopt},
                  cu_q, cu_k, bias};
  Inputs& in = vi.in;
  if (dout.has_value()) in.dout = readable(*dout, backend);
  Problem& p = in.problem;
  p.dtype = static_cast<FlashSigmoidDType>(dtype);
  p.batch = batch;
  p.seqlen_q = q.size(0);
  p.seqlen_k = k.size(0);
  p.heads_q = q.size(1);
  p.heads_kv = k.size(1);
  set_params(op, params, &p);
  p.cu_seqlens_q = static_cast<const int32_t*>(cu_q.data_ptr());
  p.cu_seqlens_k = static_cast<const int32_t*>(cu_k.data_ptr());
  p.max_seqlen_q = varlen.max_seqlen_q;
  p.max_seqlen_k = varlen.max_seqlen_k;
  p.sigmoid_bias_per_batch = bias.has_value() ? static_cast<const float*>(bias->data_ptr()) : nullptr;
  p.sigmoid_bias_auto = varlen.sigmoid_bias_auto ? 1 : 0;
  in.alibi = prepare_alibi(op, params.alibi_slopes, q, batch, p.heads_q, &p);
  in.dropout_seed = prepare_dropout(op, params, q, &p);
  return vi;
}

namespace {

std::vector<int64_t> sizes_vec(const StableTensor& t) {
  std::vector<int64_t> sizes;
  for (int64_t d = 0; d < t.dim(); ++d) sizes.push_back(t.size(d));
  return sizes;
}

// An int32 index tensor on q's device: [batch] (dims 1) or [batch, any] (dims 2), last dim contiguous.
void check_index(const char* op, const char* name, const StableTensor& t, const StableTensor& q, int64_t batch,
                 int64_t dims) {
  if (t.scalar_type() != ScalarType::Int) fail(op, name, "expected dtype int32, got " + dtype_name(t.scalar_type()));
  if (!same_device(t, q)) fail(op, name, "expected device " + device_name(q) + " like q, got " + device_name(t));
  if (t.dim() != dims || t.size(0) != batch) {
    fail(op, name, "expected shape [" + std::to_string(batch) + (dims == 1 ? "]" : ", pages]") + ", got " +
                       shape_string(t));
  }
  if (t.size(dims - 1) > 1 && t.stride(dims - 1) != 1) fail(op, name, "expected a contiguous last dim");
}

}  // namespace

void prepare_kvcache_inputs(const char* op, const StableTensor& q, const StableTensor& k_cache,
                            const StableTensor& v_cache, const KvCacheParams& kv, const OpParams& params,
                            KvCacheInputs* in) {
  const Backend backend = backend_of(q);
  in->backend = backend;
  if (q.dim() != 4) fail(op, "q", "expected 4 dims [batch, seqlen_q, heads, head_dim], got shape " + shape_string(q));
  check_like_q(op, "k_cache", k_cache, q);
  check_like_q(op, "v_cache", v_cache, q);
  if (sizes_vec(v_cache) != sizes_vec(k_cache)) {
    fail(op, "v_cache", "expected the shape of k_cache " + shape_string(k_cache) + ", got " + shape_string(v_cache));
  }
  const int64_t batch = q.size(0), head_dim = q.size(3), heads_kv = k_cache.size(2);
  if (k_cache.size(3) != head_dim) fail(op, "k_cache", "expected head_dim " + std::to_string(head_dim) + " like q");
  const bool paged = kv.block_table.has_value();
  Problem p = problem_init(head_dim);
  p.dtype = static_cast<FlashSigmoidDType>(api_dtype(op, q, backend));
  p.batch = batch, p.seqlen_q = q.size(1), p.heads_q = q.size(2), p.heads_kv = heads_kv;
  set_params(op, params, &p);
  if (kv.num_splits < 0 || kv.num_splits > 128) {
    fail(op, "num_splits", "expected 0 (choose) .. 128, got " + std::to_string(kv.num_splits));
  }
  p.num_splits = static_cast<int32_t>(kv.num_splits);
  in->alibi = prepare_alibi(op, params.alibi_slopes, q, batch, p.heads_q, &p);
  check_index(op, "cache_seqlens", kv.cache_seqlens, q, batch, 1);
  if (paged) {
    check_index(op, "block_table", *kv.block_table, q, batch, 2);
    p.block_table = static_cast<const int32_t*>(kv.block_table->data_ptr());
    p.block_table_stride_batch = kv.block_table->size(1);
    p.page_size = k_cache.size(1);
    p.seqlen_k = kv.block_table->size(1) * p.page_size;
    p.kv_batch = k_cache.size(0);
    if (kv.block_table->size(0) > 1) p.block_table_stride_batch = kv.block_table->stride(0);
  } else {
    p.seqlen_k = k_cache.size(1);
    if (kv.cache_batch_idx.has_value()) {
      check_index(op, "cache_batch_idx", *kv.cache_batch_idx, q, batch, 1);
      p.kv_batch_idx = static_cast<const int32_t*>(kv.cache_batch_idx->data_ptr());
      p.kv_batch = k_cache.size(0);
    } else if (k_cache.size(0) < batch) {
      fail(op, "k_cache", "expected at least batch (" + std::to_string(batch) + ") rows without cache_batch_idx");
    }
  }
  const int32_t* lengths = static_cast<const int32_t*>(kv.cache_seqlens.data_ptr());

  KvAppendArgs& a = in->append;
  a = KvAppendArgs{};
  a.problem = p;
  a.problem.causal = kv.rotary_q_steps ? 1 : 0;  // the append reads the mask fields only for q's positions
  a.problem.window_left = a.problem.window_right = -1;
  a.problem.alibi_slopes = nullptr;
  a.cache_seqlens = lengths;
  a.k_cache = api_tensor(k_cache);
  a.v_cache = api_tensor(v_cache);
  a.k_new = a.v_new = Tensor{nullptr, 0, 0, 0, 1};  // no new tokens: an empty tensor
  if (kv.k.has_value() != kv.v.has_value()) fail(op, "k, v", "expected both or neither");
  if (kv.k.has_value()) {
    check_like_q(op, "k", *kv.k, q);
    check_like_q(op, "v", *kv.v, q);
    const std::vector<int64_t> want{batch, kv.k->size(1), heads_kv, head_dim};
    if (sizes_vec(*kv.k) != want || sizes_vec(*kv.v) != want) {
      fail(op, "k, v", "expected shape [" + std::to_string(batch) + ", seqlen_new, " + std::to_string(heads_kv) + ", " +
                           std::to_string(head_dim) + "], got " + shape_string(*kv.k) + " and " + shape_string(*kv.v));
    }
    a.seqlen_new = kv.k->size(1);
    a.k_new = api_tensor(*kv.k);
    a.v_new = api_tensor(*kv.v);
  }
  in->q_rotated = q;
  if (kv.rotary_cos.has_value() != kv.rotary_sin.has_value()) fail(op, "rotary_cos, rotary_sin", "expected both or neither");
  if (kv.rotary_cos.has_value()) {
    const StableTensor& cos = *kv.rotary_cos;
    const StableTensor& sin = *kv.rotary_sin;
    for (const auto& [name, t] : {std::pair{"rotary_cos", &cos}, std::pair{"rotary_sin", &sin}}) {
      if (t->scalar_type() != ScalarType::Float) fail(op, name, "expected dtype float32, got " + dtype_name(t->scalar_type()));
      if (!same_device(*t, q)) fail(op, name, "expected device " + device_name(q) + " like q");
      if (t->dim() != 2) fail(op, name, "expected 2 dims [seqlen_ro, rotary_dim / 2], got shape " + shape_string(*t));
      if (t->numel() > 0 && (t->stride(1) != 1 || t->stride(0) != cos.stride(0))) {
        fail(op, name, "expected a contiguous last dim and rotary_cos's row stride");
      }
    }
    if (sizes_vec(sin) != sizes_vec(cos)) fail(op, "rotary_sin", "expected the shape of rotary_cos");
    a.rotary_cos = static_cast<const float*>(cos.data_ptr());
    a.rotary_sin = static_cast<const float*>(sin.data_ptr());
    a.rotary_seqlen = cos.size(0);
    a.rotary_dim = 2 * cos.size(1);
    a.rotary_stride = cos.size(0) > 1 ? cos.stride(0) : cos.size(1);
    a.rotary_interleaved = kv.rotary_interleaved ? 1 : 0;
    in->q_rotated = empty_like_sizes(q, q);
    a.q = api_tensor(q);
    a.q_rotated = api_tensor(in->q_rotated);
  }

  in->seqused_k.resize(static_cast<size_t>(batch));
  ForwardArgs& f = in->forward;
  f = ForwardArgs{};
  f.problem = p;
  // The forward's key counts: on the CPU filled after the append; on CUDA written by the append
  // kernel into device memory when it runs, else cache_seqlens itself (it counts every key).
  in->appends = a.seqlen_new > 0 || a.rotary_cos != nullptr;
  f.problem.seqused_k = lengths;
  if (backend == Backend::kCpu) {
    a.seqused_k_out = in->seqused_k.data();  // written by the append, which checks the lengths first
    f.problem.seqused_k = a.seqused_k_out;
  } else if (in->appends) {
    in->seqused_k_device = torch::stable::new_empty(q, std::vector<int64_t>{batch}, ScalarType::Int);
    a.seqused_k_out = static_cast<int32_t*>(in->seqused_k_device->data_ptr());
    f.problem.seqused_k = a.seqused_k_out;
  }
  if (backend == Backend::kCuda && a.rotary_cos == nullptr) in->q_rotated = readable(q, backend);
  in->out = empty_like_sizes(q, q);
  f.q = api_tensor(in->q_rotated);
  f.k = api_tensor(k_cache);
  f.v = api_tensor(v_cache);
  f.out = api_tensor(in->out);
}

Tensor api_packed_tensor(const StableTensor& t) {
  if (t.numel() == 0) return Tensor{t.data_ptr(), 0, 0, 0, 1};  // nothing is read or written
  auto stride = [&](int64_t d) { return t.size(d) == 1 ? (d == 2 ? 1 : 0) : t.stride(d); };
  return Tensor{t.data_ptr(), 0, stride(0), stride(1), stride(2)};
}

Tensor api_tensor(const StableTensor& t) {
  if (t.numel() == 0) return Tensor{t.data_ptr(), 0, 0, 0, 1};  // nothing is read or written
  auto stride = [&](int64_t d) { return t.size(d) == 1 ? (d == 3 ? 1 : 0) : t.stride(d); };
  return Tensor{t.data_ptr(), stride(0), stride(1), stride(2), stride(3)};
}

StableTensor empty_like_sizes(const StableTensor& t, const StableTensor& sizes_of) {
  return torch::stable::new_empty(t, sizes_of.sizes());
}

StableTensor scratch_bytes(const StableTensor& t, size_t bytes) {
  const std::vector<int64_t> sizes{static_cast<int64_t>(bytes)};
  return torch::stable::new_empty(t, sizes, ScalarType::Byte);
}

void check_status(const char* op, Status status) {
  if (status == Status::kSuccess) return;
  throw std::runtime_error(std::string(op) + ": " + last_error() + " [" + status_name(status) + "]");
}

}  // namespace flash_sigmoid::torch_binding

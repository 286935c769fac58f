// Test support for the CPU implementation: a naive fp64 oracle of DESIGN §1 (forward and
// analytic backward), host tensors with arbitrary strides in fp32/fp16/bf16, and the comparison
// rule of DESIGN §7.
//
// Independent on purpose: dense loops over every (i, j), double arithmetic, its own dtype
// conversions (frexp/ldexp arithmetic, not bit tricks), and the mask written as the three
// inequalities of the public header. It shares nothing with src/cpu/ but the public arg structs,
// and with the library only the dropout policy's per-entry reference dropout_keeps (the mask is a
// definition, tested in test_policies.cpp; the CPU implementation fills it block by block).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "policies/dropout.hpp"

namespace flash_sigmoid::oracle {

// ---- dtypes -------------------------------------------------------------------------------------

inline const char* dtype_label(FlashSigmoidDType dtype) {
  return dtype == FLASH_SIGMOID_FLOAT16 ? "fp16" : dtype == FLASH_SIGMOID_BFLOAT16 ? "bf16" : "fp32";
}

struct Format {
  int mantissa_bits;  // stored fraction bits
  int min_exponent;   // exponent of the smallest normal
  double max_finite;
};

inline Format format_of(FlashSigmoidDType dtype) {
  switch (dtype) {
    case FLASH_SIGMOID_FLOAT16:
      return {10, -14, 65504.0};
    case FLASH_SIGMOID_BFLOAT16:
      return {7, -126, std::ldexp(255.0, 120)};
    default:
      return {23, -126, static_cast<double>(std::numeric_limits<float>::max())};
  }
}

// The spacing of the dtype's values around |x| (subnormal spacing below the normal range).
inline double spacing(FlashSigmoidDType dtype, double x) {
  const Format f = format_of(dtype);
  int e = 0;
  std::frexp(x, &e);  // |x| in [2^(e-1), 2^e)
  const int lead = x == 0.0 ? f.min_exponent : std::max(e - 1, f.min_exponent);
  return std::ldexp(1.0, lead - f.mantissa_bits);
}

// x rounded to the dtype, to nearest even, straight from double (no double rounding through
// float); beyond the range it is +-inf, as IEEE rounding gives.
inline double round_to(FlashSigmoidDType dtype, double x) {
  if (!std::isfinite(x) || x == 0.0) return x;
  const double quantum = spacing(dtype, x);
  const double r = std::nearbyint(x / quantum) * quantum;  // default mode: to nearest even
  if (std::fabs(r) > format_of(dtype).max_finite) return std::copysign(HUGE_VAL, x);
  return r;
}

// Bits of a value that is exactly representable in the dtype (e.g. the result of round_to).
inline uint32_t encode(FlashSigmoidDType dtype, double x) {
  if (dtype == FLASH_SIGMOID_FLOAT32 || dtype == FLASH_SIGMOID_BFLOAT16) {
    const float f = static_cast<float>(x);
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if (dtype == FLASH_SIGMOID_FLOAT32) return u;
    return std::isnan(x) ? 0x7fc0u : u >> 16;  // exact: the low 16 bits are zero
  }
  const uint32_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double a = std::fabs(x);
  if (std::isnan(x)) return 0x7e00u;
  if (std::isinf(x)) return sign | 0x7c00u;
  if (a < std::ldexp(1.0, -14)) return sign | static_cast<uint32_t>(std::ldexp(a, 24));
  int e = 0;
  std::frexp(a, &e);
  const int exponent = e - 1;
  const auto fraction = static_cast<uint32_t>(std::ldexp(a, -exponent) * 1024.0 - 1024.0);
  return sign | static_cast<uint32_t>(exponent + 15) << 10 | fraction;
}

inline double decode(FlashSigmoidDType dtype, uint32_t bits) {
  if (dtype == FLASH_SIGMOID_FLOAT32 || dtype == FLASH_SIGMOID_BFLOAT16) {
    const uint32_t u = dtype == FLASH_SIGMOID_FLOAT32 ? bits : bits << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  const double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  const int exponent = static_cast<int>((bits >> 10) & 0x1fu);
  const int fraction = static_cast<int>(bits & 0x3ffu);
  if (exponent == 31) return std::copysign(fraction ? std::numeric_limits<double>::quiet_NaN() : HUGE_VAL, sign);
  if (exponent == 0) return sign * std::ldexp(fraction, -24);
  return sign * std::ldexp(1024 + fraction, exponent - 25);
}

inline size_t element_bytes(FlashSigmoidDType dtype) { return dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2; }

// Element [b, s, h, d] of a tensor, as the oracle reads it (all four strides honoured).
inline double element(const FlashSigmoidTensor& t, FlashSigmoidDType dtype, int64_t b, int64_t s, int64_t h,
                      int64_t d) {
  const int64_t offset = b * t.stride_batch + s * t.stride_seq + h * t.stride_head + d * t.stride_dim;
  if (dtype == FLASH_SIGMOID_FLOAT32) {
    uint32_t u;
    std::memcpy(&u, static_cast<const char*>(t.data) + offset * 4, 4);
    return decode(dtype, u);
  }
  uint16_t u;
  std::memcpy(&u, static_cast<const char*>(t.data) + offset * 2, 2);
  return decode(dtype, u);
}

// ---- host tensors -------------------------------------------------------------------------------

// Memory layouts of a [batch, seqlen, heads, head_dim] tensor. Padded leaves gaps after every
// head, row and batch; HeadMajor stores [batch, heads, seqlen, head_dim] (with gaps), the layout
// of a transposed tensor.
enum class Layout { kContiguous, kPadded, kHeadMajor };

class HostTensor {
 public:
  HostTensor(FlashSigmoidDType dtype, int64_t batch, int64_t seqlen, int64_t heads, int64_t head_dim,
             Layout layout = Layout::kContiguous)
      : dtype_(dtype), batch_(batch), seqlen_(seqlen), heads_(heads), head_dim_(head_dim) {
    view_.stride_dim = 1;
    switch (layout) {
      case Layout::kContiguous:
        view_.stride_head = head_dim;
        view_.stride_seq = heads * head_dim;
        view_.stride_batch = seqlen * heads * head_dim;
        break;
      case Layout::kPadded:
        view_.stride_head = head_dim + 3;
        view_.stride_seq = heads * (head_dim + 3) + 5;
        view_.stride_batch = seqlen * view_.stride_seq + 7;
        break;
      case Layout::kHeadMajor:
        view_.stride_seq = head_dim + 1;
        view_.stride_head = seqlen * (head_dim + 1) + 2;
        view_.stride_batch = heads * view_.stride_head + 1;
        break;
    }
    int64_t size = 1;
    if (numel() > 0) {
      size = (batch - 1) * view_.stride_batch + (seqlen - 1) * view_.stride_seq + (heads - 1) * view_.stride_head +
             head_dim;
    }
    bytes_.assign(static_cast<size_t>(size) * element_bytes(dtype), 0);
  }

  // The tensor as the API sees it (built on demand, so copies and moves stay valid).
  FlashSigmoidTensor view() {
    FlashSigmoidTensor t = view_;
    t.data = bytes_.data();
    return t;
  }
  FlashSigmoidDType dtype() const { return dtype_; }
  int64_t numel() const { return batch_ * seqlen_ * heads_ * head_dim_; }
  size_t byte_size() const { return bytes_.size(); }  // the whole strided allocation

  double get(int64_t b, int64_t s, int64_t h, int64_t d) const {
    FlashSigmoidTensor t = view_;
    t.data = const_cast<unsigned char*>(bytes_.data());
    return element(t, dtype_, b, s, h, d);
  }
  // Stores x rounded to the dtype; returns the stored value.
  double set(int64_t b, int64_t s, int64_t h, int64_t d, double x) {
    const double r = round_to(dtype_, x);
    store_bits(offset(b, s, h, d), encode(dtype_, r));
    return r;
  }

  // Fresh random values from `dist` (a <random> distribution of doubles), rounded to the dtype;
  // a value that rounds to 0 is drawn again, so no element is zero.
  template <class Dist>
  void fill(std::mt19937_64& rng, Dist dist) {
    for_each([&](int64_t b, int64_t s, int64_t h, int64_t d) {
      while (set(b, s, h, d, dist(rng)) == 0.0) {
      }
    });
  }

  // Every byte of storage, padding included, to a NaN whose payload the code under test will not
  // produce; untouched_outside_view() then tells that nothing outside the view was written.
  void poison() {
    const size_t n = bytes_.size() / element_bytes(dtype_);
    for (size_t e = 0; e < n; ++e) store_bits(static_cast<int64_t>(e), poison_bits());
  }
  bool untouched_outside_view() const {
    std::vector<bool> in_view(bytes_.size() / element_bytes(dtype_), false);
    for_each([&](int64_t b, int64_t s, int64_t h, int64_t d) { in_view[size_t(offset(b, s, h, d))] = true; });
    for (size_t e = 0; e < in_view.size(); ++e) {
      if (!in_view[e] && load_bits(static_cast<int64_t>(e)) != poison_bits()) return false;
    }
    return true;
  }

  // The elements in [b, s, h, d] order.
  std::vector<double> dense() const {
    std::vector<double> out;
    out.reserve(static_cast<size_t>(numel()));
    for_each([&](int64_t b, int64_t s, int64_t h, int64_t d) { out.push_back(get(b, s, h, d)); });
    return out;
  }

  template <class F>
  void for_each(F f) const {
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t s = 0; s < seqlen_; ++s)
        for (int64_t h = 0; h < heads_; ++h)
          for (int64_t d = 0; d < head_dim_; ++d) f(b, s, h, d);
  }

 private:
  int64_t offset(int64_t b, int64_t s, int64_t h, int64_t d) const {
    return b * view_.stride_batch + s * view_.stride_seq + h * view_.stride_head + d;
  }
  uint32_t poison_bits() const {
    return dtype_ == FLASH_SIGMOID_FLOAT32 ? 0x7fc0dea1u : dtype_ == FLASH_SIGMOID_FLOAT16 ? 0x7e5au : 0x7fdau;
  }
  void store_bits(int64_t e, uint32_t bits) {
    if (dtype_ == FLASH_SIGMOID_FLOAT32) {
      std::memcpy(bytes_.data() + e * 4, &bits, 4);
    } else {
      const auto h = static_cast<uint16_t>(bits);
      std::memcpy(bytes_.data() + e * 2, &h, 2);
    }
  }
  uint32_t load_bits(int64_t e) const {
    if (dtype_ == FLASH_SIGMOID_FLOAT32) {
      uint32_t u;
      std::memcpy(&u, bytes_.data() + e * 4, 4);
      return u;
    }
    uint16_t h;
    std::memcpy(&h, bytes_.data() + e * 2, 2);
    return h;
  }

  FlashSigmoidDType dtype_;
  int64_t batch_, seqlen_, heads_, head_dim_;
  FlashSigmoidTensor view_{};  // strides; data is set by view()
  std::vector<unsigned char> bytes_;
};

// ---- the fp64 oracle (DESIGN §1) ----------------------------------------------------------------

// Key j is visible from query i: the public header's three conditions, bottom-right aligned.
inline bool visible(const FlashSigmoidProblem& p, int64_t i, int64_t j) {
  const int64_t diag = i + p.seqlen_k - p.seqlen_q;
  if (p.causal && j > diag) return false;
  if (p.window_left >= 0 && j < diag - p.window_left) return false;
  if (p.window_right >= 0 && j > diag + p.window_right) return false;
  return true;
}

// z[i, j] before the sigmoid, from the score s = q_i . k_j.
inline double logit(const FlashSigmoidProblem& p, int64_t b, int64_t h, int64_t i, int64_t j, double s) {
  double z = static_cast<double>(p.scale) * s + static_cast<double>(p.sigmoid_bias);
  if (p.alibi_slopes) {
    const double slope = p.alibi_slopes[b * p.alibi_stride_batch + h];
    z -= slope * static_cast<double>(std::llabs(i + p.seqlen_k - p.seqlen_q - j));
  }
  return z;
}

// Dropout's factor of entry (i, j) of head h of batch entry b: 0 where dropped, 256 / (256 - t)
// (in double) where kept, 1 without dropout. first_batch: the call's index of batch entry 0 (a
// packed sequence's index when the oracle runs one sequence as a dense problem).
inline double dropout_factor(const FlashSigmoidProblem& p, int64_t first_batch, int64_t b, int64_t h, int64_t i,
                             int64_t j) {
  const DropoutParams off = make_dropout(p.dropout_p, 0, 0);
  if (!off.enabled()) return 1.0;
  const DropoutParams d = make_dropout(p.dropout_p, p.dropout_seed[0], p.dropout_seed[1]);
  const auto bh = static_cast<uint32_t>((first_batch + b) * p.heads_q + h);
  return dropout_keeps(d, bh, i, j) ? 256.0 / static_cast<double>(256 - d.threshold) : 0.0;
}

inline size_t dense_index(int64_t b, int64_t s, int64_t h, int64_t d, int64_t seqlen, int64_t heads, int64_t head_dim) {
  return static_cast<size_t>(((b * seqlen + s) * heads + h) * head_dim + d);
}

// O = P V (P' V with dropout), dense [batch, seqlen_q, heads_q, head_dim].
inline std::vector<double> forward(const FlashSigmoidForwardArgs& a, int64_t first_batch = 0) {
  const FlashSigmoidProblem& p = a.problem;
  const int64_t D = p.head_dim, group = p.heads_q / p.heads_kv;
  std::vector<double> out(static_cast<size_t>(p.batch * p.seqlen_q * p.heads_q * D), 0.0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = 0; i < p.seqlen_q; ++i)
        for (int64_t j = 0; j < p.seqlen_k; ++j) {
          if (!visible(p, i, j)) continue;  // P = 0 exactly: contributes nothing
          double s = 0.0;
          for (int64_t d = 0; d < D; ++d)
            s += element(a.q, p.dtype, b, i, h, d) * element(a.k, p.dtype, b, j, h / group, d);
          const double prob =
              dropout_factor(p, first_batch, b, h, i, j) / (1.0 + std::exp(-logit(p, b, h, i, j, s)));
          for (int64_t d = 0; d < D; ++d)
            out[dense_index(b, i, h, d, p.seqlen_q, p.heads_q, D)] += prob * element(a.v, p.dtype, b, j, h / group, d);
        }
  return out;
}

struct Gradients {
  std::vector<double> dq, dk, dv;  // dense, [b, s, h, d]
};

// dP = dO V^T, dZ = dP P (1 - P), dQ = scale dZ K, dK = scale dZ^T Q, dV = P^T dO, with dK and
// dV summed over the query heads that share a kv head. With dropout (factor f = M / (1 - p)):
// dV = (f P)^T dO and dZ = f dP P (1 - P), P undropped.
inline Gradients backward(const FlashSigmoidBackwardArgs& a, int64_t first_batch = 0) {
  const FlashSigmoidProblem& p = a.problem;
  const int64_t D = p.head_dim, group = p.heads_q / p.heads_kv;
  Gradients g;
  g.dq.assign(static_cast<size_t>(p.batch * p.seqlen_q * p.heads_q * D), 0.0);
  g.dk.assign(static_cast<size_t>(p.batch * p.seqlen_k * p.heads_kv * D), 0.0);
  g.dv.assign(g.dk.size(), 0.0);
  const double scale = p.scale;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads_q; ++h)
      for (int64_t i = 0; i < p.seqlen_q; ++i)
        for (int64_t j = 0; j < p.seqlen_k; ++j) {
          if (!visible(p, i, j)) continue;
          const int64_t hk = h / group;
          double s = 0.0, dp = 0.0;
          for (int64_t d = 0; d < D; ++d) {
            s += element(a.q, p.dtype, b, i, h, d) * element(a.k, p.dtype, b, j, hk, d);
            dp += element(a.dout, p.dtype, b, i, h, d) * element(a.v, p.dtype, b, j, hk, d);
          }
          const double prob = 1.0 / (1.0 + std::exp(-logit(p, b, h, i, j, s)));
          const double f = dropout_factor(p, first_batch, b, h, i, j);
          const double dz = f * dp * prob * (1.0 - prob);
          for (int64_t d = 0; d < D; ++d) {
            g.dq[dense_index(b, i, h, d, p.seqlen_q, p.heads_q, D)] += scale * dz * element(a.k, p.dtype, b, j, hk, d);
            g.dk[dense_index(b, j, hk, d, p.seqlen_k, p.heads_kv, D)] += scale * dz * element(a.q, p.dtype, b, i, h, d);
            g.dv[dense_index(b, j, hk, d, p.seqlen_k, p.heads_kv, D)] +=
                f * prob * element(a.dout, p.dtype, b, i, h, d);
          }
        }
  return g;
}

// ---- comparison (DESIGN §7) ---------------------------------------------------------------------

// The CPU implementation sees the rounded inputs exactly and computes in fp32, so its only
// unavoidable error is rounding the result to the output dtype: the "floor" is
// ||round_to(dtype, ref) - ref|| (Frobenius), which plays the role of §7's same-dtype reference.
// Passes when
//   ||out - ref|| <= factor * floor + 1e-5 * ||ref||        (factor 2 for outputs, 3 for gradients;
//                                                           the second term allows fp32 accumulation
//                                                           and is the whole bound for fp32 outputs)
// and, per element, |out - ref| <= spacing(dtype, ref) + 1e-4 * rms(ref), which catches a few
// wrong elements that the norm could hide. NaN in ref must be NaN in out; every other element of
// out must be finite (so unwritten, NaN-poisoned elements fail).
inline ::testing::AssertionResult matches(const HostTensor& out, const std::vector<double>& ref, double factor,
                                          const char* what) {
  const std::vector<double> got = out.dense();
  if (got.size() != ref.size()) return ::testing::AssertionFailure() << what << ": size mismatch";
  const FlashSigmoidDType dtype = out.dtype();
  double err2 = 0, ref2 = 0, floor2 = 0;
  size_t finite = 0;
  for (size_t e = 0; e < ref.size(); ++e) {
    if (std::isnan(ref[e])) {
      if (std::isnan(got[e])) continue;
      return ::testing::AssertionFailure() << what << "[" << e << "] = " << got[e] << ", expected NaN";
    }
    if (!std::isfinite(got[e])) {
      return ::testing::AssertionFailure()
             << what << "[" << e << "] = " << got[e] << " (unwritten or non-finite), expected " << ref[e];
    }
    err2 += (got[e] - ref[e]) * (got[e] - ref[e]);
    ref2 += ref[e] * ref[e];
    const double r = round_to(dtype, ref[e]) - ref[e];
    floor2 += r * r;
    ++finite;
  }
  const double rms = finite ? std::sqrt(ref2 / static_cast<double>(finite)) : 0.0;
  for (size_t e = 0; e < ref.size(); ++e) {
    if (std::isnan(ref[e])) continue;
    const double bound = spacing(dtype, ref[e]) + 1e-4 * rms;
    if (std::fabs(got[e] - ref[e]) > bound) {
      return ::testing::AssertionFailure() << what << "[" << e << "] = " << got[e] << ", expected " << ref[e]
                                           << " (|diff| " << std::fabs(got[e] - ref[e]) << " > " << bound << ")";
    }
  }
  const double err = std::sqrt(err2), norm = std::sqrt(ref2), floor = std::sqrt(floor2);
  const double bound = (dtype == FLASH_SIGMOID_FLOAT32 ? 0.0 : factor * floor) + 1e-5 * norm;
  std::ostringstream msg;
  msg << what << " (" << dtype_label(dtype) << "): relative error " << (norm > 0 ? err / norm : err) << ", floor "
      << (norm > 0 ? floor / norm : floor) << ", bound " << (norm > 0 ? bound / norm : bound);
  if (err > bound) return ::testing::AssertionFailure() << msg.str();
  return ::testing::AssertionSuccess() << msg.str();
}

// ---- test problems ------------------------------------------------------------------------------

enum class Alibi { kNone, kPerHead, kPerBatch };  // slopes [Hq] (stride_batch 0) or [batch, Hq]
enum class Bias { kZero, kNegLogSk, kRandom };    // 0, -log(Sk) (the paper's), uniform in (-10, 2)

struct Spec {
  FlashSigmoidDType dtype = FLASH_SIGMOID_FLOAT32;
  int64_t batch = 1, seqlen_q = 1, seqlen_k = 1, heads_q = 1, heads_kv = 1, head_dim = 8;
  bool causal = false;
  int64_t window_left = -1, window_right = -1;
  Alibi alibi = Alibi::kNone;
  Bias bias = Bias::kZero;
  float scale = 0.0f;  // 0: the default, 1/sqrt(head_dim)
  Layout layout = Layout::kContiguous;
  uint64_t seed = 1;

  // A GoogleTest-safe name (letters, digits, underscores).
  std::string label() const {
    std::ostringstream o;
    o << dtype_label(dtype) << "_b" << batch << "_sq" << seqlen_q << "_sk" << seqlen_k << "_h" << heads_q << "x"
      << heads_kv << "_d" << head_dim;
    if (causal) o << "_causal";
    if (window_left >= 0 || window_right >= 0) {
      o << "_win" << (window_left < 0 ? std::string("inf") : std::to_string(window_left)) << "x"
        << (window_right < 0 ? std::string("inf") : std::to_string(window_right));
    }
    if (alibi != Alibi::kNone) o << (alibi == Alibi::kPerHead ? "_alibiH" : "_alibiBH");
    if (bias != Bias::kZero) o << (bias == Bias::kNegLogSk ? "_biasNegLog" : "_biasRand");
    if (scale != 0.0f) {
      std::ostringstream v;
      v << scale;
      std::string text = v.str();
      for (char& c : text) c = c == '.' ? 'p' : c == '-' ? 'm' : c;
      o << "_scale" << text;
    }
    if (layout != Layout::kContiguous) o << (layout == Layout::kPadded ? "_padded" : "_headmajor");
    return o.str();
  }
};

// GoogleTest prints a parameter through this (instead of its bytes).
inline void PrintTo(const Spec& spec, std::ostream* os) { *os << spec.label(); }

// A problem with fresh random inputs (q, k, v, dout ~ N(0, 1), never zero; slopes in (0.05, 1)),
// and poisoned outputs in the same layout as the inputs.
struct Inputs {
  explicit Inputs(const Spec& s)
      : spec(s),
        rng(s.seed * 0x9e3779b97f4a7c15ull + 12345),
        q(s.dtype, s.batch, s.seqlen_q, s.heads_q, s.head_dim, s.layout),
        k(s.dtype, s.batch, s.seqlen_k, s.heads_kv, s.head_dim, s.layout),
        v(s.dtype, s.batch, s.seqlen_k, s.heads_kv, s.head_dim, s.layout),
        dout(s.dtype, s.batch, s.seqlen_q, s.heads_q, s.head_dim, s.layout) {
    for (HostTensor* t : {&q, &k, &v, &dout}) t->fill(rng, std::normal_distribution<double>(0.0, 1.0));
    problem = flash_sigmoid::problem_init(s.head_dim);
    problem.dtype = s.dtype;
    problem.batch = s.batch;
    problem.seqlen_q = s.seqlen_q;
    problem.seqlen_k = s.seqlen_k;
    problem.heads_q = s.heads_q;
    problem.heads_kv = s.heads_kv;
    problem.causal = s.causal ? 1 : 0;
    problem.window_left = s.window_left;
    problem.window_right = s.window_right;
    if (s.scale != 0.0f) problem.scale = s.scale;
    if (s.bias == Bias::kNegLogSk) problem.sigmoid_bias = -std::log(float(std::max<int64_t>(s.seqlen_k, 1)));
    if (s.bias == Bias::kRandom) problem.sigmoid_bias = std::uniform_real_distribution<float>(-10.0f, 2.0f)(rng);
    if (s.alibi != Alibi::kNone) {
      const int64_t rows = s.alibi == Alibi::kPerBatch ? s.batch : 1;
      std::uniform_real_distribution<float> slope(0.05f, 1.0f);
      slopes.resize(static_cast<size_t>(std::max<int64_t>(rows * s.heads_q, 1)));
      for (float& x : slopes) x = slope(rng);
      problem.alibi_slopes = slopes.data();
      problem.alibi_stride_batch = s.alibi == Alibi::kPerBatch ? s.heads_q : 0;
    }
  }
  Inputs(const Inputs&) = delete;
  Inputs& operator=(const Inputs&) = delete;

  HostTensor poisoned(int64_t seqlen, int64_t heads) const {
    HostTensor t(spec.dtype, spec.batch, seqlen, heads, spec.head_dim, spec.layout);
    t.poison();
    return t;
  }
  HostTensor new_out() const { return poisoned(spec.seqlen_q, spec.heads_q); }
  HostTensor new_dq() const { return poisoned(spec.seqlen_q, spec.heads_q); }
  HostTensor new_dkv() const { return poisoned(spec.seqlen_k, spec.heads_kv); }

  FlashSigmoidForwardArgs forward_args(HostTensor& out) {
    return FlashSigmoidForwardArgs{problem, q.view(), k.view(), v.view(), out.view()};
  }
  FlashSigmoidBackwardArgs backward_args(HostTensor& dq, HostTensor& dk, HostTensor& dv) {
    return FlashSigmoidBackwardArgs{problem,
                                    q.view(),
                                    k.view(),
                                    v.view(),
                                    dout.view(),
                                    dq.view(),
                                    dk.view(),
                                    dv.view(),
                                    /*deterministic=*/1};
  }

  Spec spec;
  std::mt19937_64 rng;
  HostTensor q, k, v, dout;
  FlashSigmoidProblem problem{};
  std::vector<float> slopes;
};

}  // namespace flash_sigmoid::oracle

// Tests of the public API layer: the shared fixture of the API validation tests
// (test_api_validation*.cpp).
//
// The fixture holds one fully valid problem (batch 2, Sq 5, Sk 7, Hq 4, Hkv 2, D 64, fp16,
// contiguous) twice: over real host buffers, which SetUp runs through the CPU path to prove the
// arguments valid, and over bogus pointers into the never-mapped first page of the address space,
// which the tests mutate one field at a time. Validation must never read behind a pointer, so a
// check that did would crash the test rather than pass it.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "flash_sigmoid/flash_sigmoid.h"
#include "flash_sigmoid/flash_sigmoid.hpp"

namespace flash_sigmoid::testing {

// Addresses in the first page (below vm.mmap_min_addr, 4096 at least) are never mapped: reading
// or writing through one faults. All are 16-byte aligned, so they pass the GPU alignment rule.
inline void* bogus(uintptr_t address) { return reinterpret_cast<void*>(address); }
inline const uintptr_t kBogusQ = 0x100, kBogusK = 0x200, kBogusV = 0x300, kBogusOut = 0x400, kBogusDout = 0x500,
                       kBogusDq = 0x600, kBogusDk = 0x700, kBogusDv = 0x800, kBogusSlopes = 0x900,
                       kBogusWorkspace = 0xa00;

inline constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// A workspace that can never be the reason a call fails (it is never dereferenced either).
inline Workspace ample_workspace() { return Workspace{bogus(kBogusWorkspace), std::numeric_limits<size_t>::max()}; }

// Checks a failed call: its status, and that last_error() reads
//   "<where>: <argument>: expected <... expected ...>, got <got>".
inline ::testing::AssertionResult rejected(Status status, Status want, const std::string& where,
                                           const std::string& argument, const std::string& expected,
                                           const std::string& got) {
  const std::string message = last_error();
  const std::string head = where + ": " + argument + ": expected ";
  const std::string tail = ", got " + got;
  const bool ok = status == want && message.rfind(head, 0) == 0 &&
                  message.find(expected, head.size()) != std::string::npos && message.size() >= tail.size() &&
                  message.compare(message.size() - tail.size(), tail.size(), tail) == 0;
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "status " << status_name(status) << " (want " << status_name(want)
                                       << "), last_error \"" << message << "\"; want \"" << head << "..." << expected
                                       << "..." << tail << "\"";
}

// Checks that last_error() starts with `prefix` and contains each of `parts`.
inline ::testing::AssertionResult message_has(const std::string& prefix, std::initializer_list<std::string> parts) {
  const std::string message = last_error();
  bool ok = message.rfind(prefix, 0) == 0;
  for (const std::string& part : parts) ok = ok && message.find(part) != std::string::npos;
  if (ok) return ::testing::AssertionSuccess();
  std::ostringstream want;
  for (const std::string& part : parts) want << " \"" << part << "\"";
  return ::testing::AssertionFailure() << "last_error \"" << message << "\" lacks the prefix \"" << prefix
                                       << "\" or one of" << want.str();
}

// Which entry points a rule applies to.
enum Paths { kGpu = 1, kCpu = 2, kGpuAndCpu = 3 };

// Every C++ entry point of `paths` rejects `args` with kInvalidArgument and a message naming
// `argument`. GPU: forward, can_implement, workspace_size; CPU: cpu::forward.
inline void expect_rejected(const ForwardArgs& args, Paths paths, const std::string& argument,
                            const std::string& expected, const std::string& got) {
  const Status bad = Status::kInvalidArgument;
  if (paths & kGpu) {
    size_t bytes = 1;
    EXPECT_TRUE(rejected(forward(args, ample_workspace(), nullptr), bad, "forward", argument, expected, got));
    EXPECT_TRUE(rejected(can_implement(args), bad, "can_implement", argument, expected, got));
    EXPECT_TRUE(rejected(workspace_size(args, &bytes), bad, "workspace_size", argument, expected, got));
    EXPECT_EQ(bytes, 0u);
  }
  if (paths & kCpu) {
    EXPECT_TRUE(rejected(cpu::forward(args, 1), bad, "cpu::forward", argument, expected, got));
  }
}

// The same for the backward entry points.
inline void expect_rejected(const BackwardArgs& args, Paths paths, const std::string& argument,
                            const std::string& expected, const std::string& got) {
  const Status bad = Status::kInvalidArgument;
  if (paths & kGpu) {
    size_t bytes = 1;
    EXPECT_TRUE(rejected(backward(args, ample_workspace(), nullptr), bad, "backward", argument, expected, got));
    EXPECT_TRUE(rejected(can_implement(args), bad, "can_implement", argument, expected, got));
    EXPECT_TRUE(rejected(workspace_size(args, &bytes), bad, "workspace_size", argument, expected, got));
    EXPECT_EQ(bytes, 0u);
  }
  if (paths & kCpu) {
    EXPECT_TRUE(rejected(cpu::backward(args, 1), bad, "cpu::backward", argument, expected, got));
  }
}

// Real host memory for one problem: contiguous tensors (rows padded by `seq_pad` elements), inputs
// filled with small values of either sign, outputs poisoned with NaN.
class HostTensors {
 public:
  explicit HostTensors(const Problem& p, int64_t seq_pad = 0) : p_(p), pad_(seq_pad) {
    const int64_t rows_q = p.batch * p.seqlen_q, rows_k = p.batch * p.seqlen_k;
    for (auto* t : {&q_, &out_, &dout_, &dq_}) t->resize(bytes(rows_q, p.heads_q));
    for (auto* t : {&k_, &v_, &dk_, &dv_}) t->resize(bytes(rows_k, p.heads_kv));
    for (auto* t : {&q_, &k_, &v_, &dout_}) fill(*t, false);
    for (auto* t : {&out_, &dq_, &dk_, &dv_}) fill(*t, true);
  }

  ForwardArgs forward_args() {
    return ForwardArgs{p_, tensor(q_, p_.seqlen_q, p_.heads_q), tensor(k_, p_.seqlen_k, p_.heads_kv),
                       tensor(v_, p_.seqlen_k, p_.heads_kv), tensor(out_, p_.seqlen_q, p_.heads_q)};
  }

  BackwardArgs backward_args() {
    BackwardArgs a{};
    a.problem = p_;
    a.q = tensor(q_, p_.seqlen_q, p_.heads_q);
    a.k = tensor(k_, p_.seqlen_k, p_.heads_kv);
    a.v = tensor(v_, p_.seqlen_k, p_.heads_kv);
    a.dout = tensor(dout_, p_.seqlen_q, p_.heads_q);
    a.dq = tensor(dq_, p_.seqlen_q, p_.heads_q);
    a.dk = tensor(dk_, p_.seqlen_k, p_.heads_kv);
    a.dv = tensor(dv_, p_.seqlen_k, p_.heads_kv);
    return a;
  }

  int element_bytes() const { return p_.dtype == FLASH_SIGMOID_FLOAT32 ? 4 : 2; }

  // Whether every element of an output is exactly zero.
  bool all_zero(const std::vector<unsigned char>& t) const {
    for (size_t i = 0; i < t.size() - kSlack * element_bytes(); ++i) {
      if (t[i] != 0) return false;
    }
    return true;
  }
  const std::vector<unsigned char>& out() const { return out_; }
  const std::vector<unsigned char>& dk() const { return dk_; }
  const std::vector<unsigned char>& dv() const { return dv_; }

 private:
  // Spare elements after each tensor, so a test may shift a data pointer by an element.
  static constexpr int64_t kSlack = 8;

  size_t bytes(int64_t rows, int64_t heads) const {
    return static_cast<size_t>((rows * (heads * p_.head_dim + pad_) + kSlack) * element_bytes());
  }

  Tensor tensor(std::vector<unsigned char>& t, int64_t seqlen, int64_t heads) {
    const int64_t stride_seq = heads * p_.head_dim + pad_;
    return Tensor{t.data(), seqlen * stride_seq, stride_seq, p_.head_dim, 1};
  }

  void fill(std::vector<unsigned char>& t, bool poison) const {
    const size_t n = t.size() / element_bytes();
    for (size_t i = 0; i < n; ++i) {
      const bool negative = (i * 7 + 3) % 5 < 2;
      if (p_.dtype == FLASH_SIGMOID_FLOAT32) {
        const float x = poison ? std::numeric_limits<float>::quiet_NaN() : (negative ? -0.1f : 0.2f);
        std::memcpy(&t[i * 4], &x, 4);
      } else {
        // fp16: 0x7e00 NaN, 0xae66 -0.1, 0x3266 0.2; bf16: 0x7fc0 NaN, 0xbdcd -0.1, 0x3e4d 0.2.
        const bool half = p_.dtype == FLASH_SIGMOID_FLOAT16;
        const uint16_t bits = poison ? (half ? 0x7e00 : 0x7fc0)
                                     : negative ? (half ? 0xae66 : 0xbdcd) : (half ? 0x3266 : 0x3e4d);
        std::memcpy(&t[i * 2], &bits, 2);
      }
    }
  }

  Problem p_;
  int64_t pad_;
  std::vector<unsigned char> q_, k_, v_, out_, dout_, dq_, dk_, dv_;
};

class ApiValidation : public ::testing::Test {
 protected:
  static constexpr int64_t kBatch = 2, kSeqlenQ = 5, kSeqlenK = 7, kHeadsQ = 4, kHeadsKv = 2, kHeadDim = 64;

  static Problem valid_problem() {
    Problem p = problem_init(kHeadDim);
    p.batch = kBatch;
    p.seqlen_q = kSeqlenQ;
    p.seqlen_k = kSeqlenK;
    p.heads_q = kHeadsQ;
    p.heads_kv = kHeadsKv;
    return p;
  }

  static Tensor bogus_tensor(uintptr_t address, int64_t seqlen, int64_t heads) {
    return contiguous_tensor(bogus(address), seqlen, heads, kHeadDim);
  }

  void SetUp() override {
    const Problem p = valid_problem();
    fwd_ = ForwardArgs{p, bogus_tensor(kBogusQ, kSeqlenQ, kHeadsQ), bogus_tensor(kBogusK, kSeqlenK, kHeadsKv),
                       bogus_tensor(kBogusV, kSeqlenK, kHeadsKv), bogus_tensor(kBogusOut, kSeqlenQ, kHeadsQ)};
    bwd_ = BackwardArgs{};
    bwd_.problem = p;
    bwd_.q = fwd_.q;
    bwd_.k = fwd_.k;
    bwd_.v = fwd_.v;
    bwd_.dout = bogus_tensor(kBogusDout, kSeqlenQ, kHeadsQ);
    bwd_.dq = bogus_tensor(kBogusDq, kSeqlenQ, kHeadsQ);
    bwd_.dk = bogus_tensor(kBogusDk, kSeqlenK, kHeadsKv);
    bwd_.dv = bogus_tensor(kBogusDv, kSeqlenK, kHeadsKv);

    // The unmutated problem is valid: the CPU path runs it on real memory, and the GPU rules pass
    // for the bogus pointers (workspace_size validates without looking for a kernel or device).
    HostTensors host(p);
    ASSERT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
    ASSERT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
    size_t bytes = 0;
    ASSERT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess) << last_error();
    ASSERT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  }

  ForwardArgs fwd_{};   // valid, over bogus pointers; each test mutates one field
  BackwardArgs bwd_{};  // the same for the backward
};

// A compiled kernel key, parsed from build_info()'s "kernels:" section
// (names as kernel_table.py writes them: sm80_fwd_fp16_hdim64_mask_none).
struct BuiltKey {
  int arch = 0;
  std::string direction, variant, dtype, mask;  // variant "": the family's default mainloop
  int head_dim = 0;
};

inline std::vector<BuiltKey> built_keys() {
  std::vector<BuiltKey> keys;
  std::istringstream info(build_info());
  std::string line;
  bool in_kernels = false;
  while (std::getline(info, line)) {
    if (line == "kernels:") {
      in_kernels = true;
      continue;
    }
    if (!in_kernels || line.empty()) continue;
    for (char& c : line) c = c == '_' ? ' ' : c;  // "sm80 fwd fp16 hdim64 mask none", "sm90a fwd ws lockstep bf16 ..."
    std::istringstream fields(line);
    std::string arch, hdim, mask_word;
    BuiltKey key;
    fields >> arch >> key.direction;
    // The variant's words (it may hold underscores: "ws_lockstep") up to the dtype.
    std::string word;
    while (fields >> word && word != "fp16" && word != "bf16") key.variant += (key.variant.empty() ? "" : "_") + word;
    key.dtype = word;
    fields >> hdim >> mask_word >> key.mask;
    key.arch = std::stoi(arch.substr(2));
    key.head_dim = std::stoi(hdim.substr(4));
    keys.push_back(key);
  }
  return keys;
}

// Whether a default-variant kernel serving this key is built (arch 0: of any family).
inline bool is_built(const std::string& direction, const std::string& dtype, int head_dim, const std::string& mask,
                     int arch = 0) {
  for (const BuiltKey& k : built_keys()) {
    if (k.variant.empty() && k.direction == direction && k.dtype == dtype && k.mask == mask &&
        k.head_dim >= head_dim && (arch == 0 || k.arch == arch)) {
      return true;
    }
  }
  return false;
}

inline bool cuda_device_present() {
  int count = 0;
  const bool present = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return present;
}

}  // namespace flash_sigmoid::testing

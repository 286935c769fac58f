// GPU tier (label "gpu"): the forward kernels through the public C++ API on device memory, against
// the fp64 oracle, one small problem per mask kind, dtype and a few head dims. Also the driver for
// compute-sanitizer (tools/gpu_tier.sh). The pytest grid (tests/gpu) applies the exact DESIGN §7
// tolerance rule; this test checks the relative error is within a few units of the dtype's
// rounding, which any indexing, masking or pipeline bug exceeds by orders of magnitude.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "gpu_helpers.hpp"
#include "oracle.hpp"

namespace flash_sigmoid {
namespace {

using testing_gpu::DeviceCopy;
using testing_gpu::have_gpu;
using oracle::Alibi;
using oracle::Bias;
using oracle::HostTensor;
using oracle::Inputs;
using oracle::Spec;

double relative_error(const HostTensor& out, const std::vector<double>& ref) {
  const std::vector<double> got = out.dense();
  double e2 = 0, r2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;  // unwritten (poisoned) or non-finite
    e2 += (got[i] - ref[i]) * (got[i] - ref[i]);
    r2 += ref[i] * ref[i];
  }
  return r2 > 0 ? std::sqrt(e2 / r2) : std::sqrt(e2);
}

// A narrowed build (tools/gpu_tier.sh with FLASH_SIGMOID_HEAD_DIMS or FLASH_SIGMOID_DTYPES) holds
// some kernels only: whether build_info() lists a forward kernel of the case's dtype whose head-dim
// bucket covers it (as tests/gpu/kernels.py asks for the pytest grid).
bool forward_bucket_built(const Spec& s) {
  const std::string info = build_info();
  const std::string prefix = std::string("_fwd_") + oracle::dtype_label(s.dtype) + "_hdim";
  const long long padded = (s.head_dim + 7) / 8 * 8;
  for (size_t at = info.find(prefix); at != std::string::npos; at = info.find(prefix, at + 1)) {
    if (std::stoll(info.substr(at + prefix.size())) >= padded) return true;
  }
  return false;
}

// Runs the case's forward on the device (kernel_arch 0: the registry's choice) into a NaN-poisoned
// output; on success *err is the relative error against the fp64 oracle.
Status run_case(const Spec& s, int kernel_arch, double* err, void (*tweak)(ForwardArgs&) = nullptr) {
  Inputs in(s);
  HostTensor out = in.new_out();  // NaN-poisoned
  DeviceCopy q(in.q), k(in.k), v(in.v), o(out);
  float* slopes = nullptr;
  ForwardArgs args{};
  args.problem = in.problem;
  args.problem.kernel_arch = kernel_arch;
  if (in.problem.alibi_slopes != nullptr) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&slopes), in.slopes.size() * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(slopes, in.slopes.data(), in.slopes.size() * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
    args.problem.alibi_slopes = slopes;
  }
  args.q = q.view();
  args.k = k.view();
  args.v = v.view();
  args.out = o.view();
  if (tweak != nullptr) tweak(args);
  const Status status = forward(args, Workspace{}, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(slopes);
  if (status != Status::kSuccess) return status;
  o.copy_back();

  ForwardArgs host_args = args;
  host_args.problem.alibi_slopes = in.problem.alibi_slopes;
  host_args.q = in.q.view();
  host_args.k = in.k.view();
  host_args.v = in.v.view();
  if (tweak != nullptr) tweak(host_args);
  *err = relative_error(out, oracle::forward(host_args));
  return status;
}

double rounding_unit(const Spec& s) {
  return s.dtype == FLASH_SIGMOID_BFLOAT16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
}

class GpuForward : public ::testing::TestWithParam<Spec> {};

TEST_P(GpuForward, MatchesFp64Oracle) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Spec& s = GetParam();
  if (!forward_bucket_built(s)) GTEST_SKIP() << "no forward kernel built for " << s.label() << " in this build";
  double err = INFINITY;
  ASSERT_EQ(run_case(s, 0, &err), Status::kSuccess) << last_error();
  EXPECT_LE(err, 4 * rounding_unit(s)) << "relative error " << err << " (4 units of rounding: " << 4 * rounding_unit(s)
                                       << ")";
}

bool key_built(const std::string& key) { return std::string(build_info()).find(key) != std::string::npos; }

// Above D 128 the sm90 family has only its TMA forward. K and V broadcast over the batch (batch
// stride 0, which validation accepts and TMA cannot take) make the kernel decline: the registry
// serves the sm80 family, and asking for the sm90 family by name is an Unsupported error that says
// why. (Unaligned bases, strides that are not multiples of 8 and head dims that are not are refused
// by validation on the GPU before any kernel is asked.)
TEST(GpuForwardSm90, TensorsTmaCannotDescribeGoToTheSm80Family) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!key_built("sm90a_fwd_bf16_hdim256_mask_none")) GTEST_SKIP() << "no sm90 forward at head dim 256 in this build";
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "sm_90a kernels run on compute capability 9.0 only";
  Spec s;
  s.dtype = FLASH_SIGMOID_BFLOAT16;
  s.batch = 2, s.seqlen_q = 77, s.seqlen_k = 131, s.heads_q = 4, s.heads_kv = 2, s.head_dim = 256;
  s.bias = Bias::kNegLogSk;
  s.seed = 41;
  auto broadcast_kv = [](ForwardArgs& a) { a.k.stride_batch = a.v.stride_batch = 0; };
  double err = INFINITY;
  EXPECT_EQ(run_case(s, 90, &err, broadcast_kv), Status::kUnsupported);
  EXPECT_NE(std::string(last_error()).find("TMA cannot describe q, k or v"), std::string::npos) << last_error();
  if (!key_built("sm80_fwd_bf16_hdim256_mask_none")) GTEST_SKIP() << "no sm80 forward at head dim 256 in this build";
  ASSERT_EQ(run_case(s, 0, &err, broadcast_kv), Status::kSuccess) << last_error();
  EXPECT_LE(err, 4 * rounding_unit(s));
}

// An empty key set: O = 0 from the TMA forward at every bucket (no K/V descriptor is needed).
TEST(GpuForwardSm90, EmptyKeySetGivesZeros) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  if (major != 9) GTEST_SKIP() << "sm_90a kernels run on compute capability 9.0 only";
  for (int64_t d : {64, 128, 192, 256}) {
    if (!key_built("sm90a_fwd_bf16_hdim" + std::to_string(d) + "_mask_none")) continue;
    Spec s;
    s.dtype = FLASH_SIGMOID_BFLOAT16;
    s.batch = 2, s.seqlen_q = 77, s.seqlen_k = 0, s.heads_q = 4, s.heads_kv = 2, s.head_dim = d;
    s.seed = 43;
    double err = INFINITY;
    ASSERT_EQ(run_case(s, 90, &err), Status::kSuccess) << "head dim " << d << ": " << last_error();
    EXPECT_EQ(err, 0.0) << "head dim " << d;  // the oracle's O is exactly 0; NaN (unwritten) gives inf
  }
}

std::vector<Spec> specs() {
  std::vector<Spec> all;
  uint64_t seed = 1;
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
    for (int64_t d : {40, 64, 128, 256}) {
      for (int mask = 0; mask < 4; ++mask) {
        Spec s;
        s.dtype = dtype;
        s.batch = 2;
        // 77 rows: one query tile; 300 rows: three, and under the causal mask the first 169 rows
        // see no key (empty key ranges).
        s.seqlen_q = mask % 2 == 1 ? 300 : 77;
        s.seqlen_k = 131;
        s.heads_q = 4;
        s.heads_kv = 2;
        s.head_dim = d;
        s.bias = Bias::kNegLogSk;
        s.causal = mask == 1;
        if (mask == 2) s.window_left = 9, s.window_right = 4;
        if (mask == 3) s.alibi = Alibi::kPerHead, s.window_left = 20;
        s.seed = seed++;
        all.push_back(s);
      }
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Small, GpuForward, ::testing::ValuesIn(specs()),
                         [](const ::testing::TestParamInfo<Spec>& info) { return info.param.label(); });

}  // namespace
}  // namespace flash_sigmoid

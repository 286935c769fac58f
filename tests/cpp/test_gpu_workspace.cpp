// GPU tier (label "gpu"): the backward workspace that the API reports (workspace_size, which asks
// the kernels that could serve the problem) is the workspace the kernels use. The workspace and a
// guard region after it are poisoned with NaN bit patterns; after a backward every float of the
// reported workspace must have been overwritten with a finite value (the launcher cleared it and the
// atomics added into it, so nothing the kernels need lies outside what was reported), and every
// byte of the guard must be untouched (nothing is written past it). The gradients are checked
// against the fp64 oracle too, so a workspace too small to hold dQ could not pass unnoticed.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "flash_sigmoid/flash_sigmoid.hpp"
#include "gpu_helpers.hpp"
#include "oracle.hpp"

namespace flash_sigmoid {
namespace {

using oracle::HostTensor;
using oracle::Inputs;
using oracle::Spec;
using testing_gpu::DeviceCopy;
using testing_gpu::have_gpu;

constexpr size_t kGuardBytes = 64 * 1024;
constexpr unsigned char kPoison = 0xFF;  // 0xFFFFFFFF is a NaN as fp32

struct WorkspaceCase {
  Spec spec;
  int kernel_arch;  // 0: the registry's choice; 80 or 90: that family
  bool deterministic;
  std::string label() const {
    return spec.label() + "_arch" + std::to_string(kernel_arch) + (deterministic ? "_det" : "");
  }
};

bool backward_built(const Spec& s, int kernel_arch) {
  const std::string info = build_info();
  const std::string family = kernel_arch == 0 ? "" : (kernel_arch == 80 ? "sm80_" : "sm90a_");
  const std::string key = std::string("bwd_") + oracle::dtype_label(s.dtype) + "_hdim" + std::to_string(s.head_dim) +
                          "_mask_none";
  for (size_t at = info.find(key); at != std::string::npos; at = info.find(key, at + 1)) {
    const size_t line = info.rfind('\n', at) + 1;
    if (info.compare(line, family.size(), family) == 0) return true;
  }
  return false;
}

double relative_error(const HostTensor& got_t, const std::vector<double>& ref) {
  const std::vector<double> got = got_t.dense();
  double e2 = 0, r2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    e2 += (got[i] - ref[i]) * (got[i] - ref[i]);
    r2 += ref[i] * ref[i];
  }
  return r2 > 0 ? std::sqrt(e2 / r2) : std::sqrt(e2);
}

class GpuWorkspace : public ::testing::TestWithParam<WorkspaceCase> {};

TEST_P(GpuWorkspace, ReportedWorkspaceIsWhatTheKernelsUse) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const WorkspaceCase& c = GetParam();
  if (!backward_built(c.spec, c.kernel_arch)) GTEST_SKIP() << "no backward kernel built for " << c.label();
  Inputs in(c.spec);
  HostTensor dq = in.new_dq(), dk = in.new_dkv(), dv = in.new_dkv();
  DeviceCopy q(in.q), k(in.k), v(in.v), dout(in.dout), dq_d(dq), dk_d(dk), dv_d(dv);
  BackwardArgs args{};
  args.problem = in.problem;
  args.problem.kernel_arch = c.kernel_arch;
  args.q = q.view();
  args.k = k.view();
  args.v = v.view();
  args.dout = dout.view();
  args.dq = dq_d.view();
  args.dk = dk_d.view();
  args.dv = dv_d.view();
  args.deterministic = c.deterministic ? 1 : 0;

  size_t bytes = 1;
  ASSERT_EQ(workspace_size(args, &bytes), Status::kSuccess) << last_error();
  if (c.deterministic) {
    EXPECT_EQ(bytes, 0u) << "deterministic mode accumulates dQ in registers";
  } else {
    ASSERT_GT(bytes, 0u);
    EXPECT_EQ(bytes % 16, 0u);
  }
  const size_t total = bytes + kGuardBytes;
  unsigned char* region = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&region), total), cudaSuccess);
  ASSERT_EQ(cudaMemset(region, kPoison, total), cudaSuccess);
  ASSERT_EQ(backward(args, Workspace{bytes ? region : nullptr, bytes}, nullptr), Status::kSuccess) << last_error();
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<unsigned char> host(total);
  ASSERT_EQ(cudaMemcpy(host.data(), region, total, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(region);
  dq_d.copy_back();
  dk_d.copy_back();
  dv_d.copy_back();

  size_t unwritten = 0;
  for (size_t i = 0; i < bytes / sizeof(float); ++i) {
    float f;
    std::memcpy(&f, host.data() + i * sizeof(float), sizeof(float));
    unwritten += std::isfinite(f) ? 0 : 1;
  }
  EXPECT_EQ(unwritten, 0u) << "floats of the reported workspace that the backward never wrote";
  size_t touched = 0;
  for (size_t i = bytes; i < total; ++i) touched += host[i] == kPoison ? 0 : 1;
  EXPECT_EQ(touched, 0u) << "bytes written past the reported workspace";

  BackwardArgs host_args = args;
  host_args.problem.alibi_slopes = in.problem.alibi_slopes;
  host_args.q = in.q.view();
  host_args.k = in.k.view();
  host_args.v = in.v.view();
  host_args.dout = in.dout.view();
  const oracle::Gradients ref = oracle::backward(host_args);
  const double unit = c.spec.dtype == FLASH_SIGMOID_BFLOAT16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
  EXPECT_LE(relative_error(dq, ref.dq), 8 * unit);
  EXPECT_LE(relative_error(dk, ref.dk), 8 * unit);
  EXPECT_LE(relative_error(dv, ref.dv), 8 * unit);
}

std::vector<WorkspaceCase> cases() {
  std::vector<WorkspaceCase> all;
  uint64_t seed = 100;
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
    for (int64_t d : {64, 128}) {
      for (int arch : {0, 80, 90}) {
        for (bool deterministic : {false, true}) {
          if (arch == 90 && deterministic) continue;  // the sm90 family has no deterministic mode
          Spec s;
          s.dtype = dtype;
          s.batch = 2;
          s.seqlen_q = 129;  // rounds up to 256 workspace rows
          s.seqlen_k = 77;
          s.heads_q = 4;
          s.heads_kv = 2;
          s.head_dim = d;
          s.bias = oracle::Bias::kNegLogSk;
          s.seed = seed++;
          all.push_back(WorkspaceCase{s, arch, deterministic});
        }
      }
    }
  }
  return all;
}

INSTANTIATE_TEST_SUITE_P(Small, GpuWorkspace, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<WorkspaceCase>& info) { return info.param.label(); });

}  // namespace
}  // namespace flash_sigmoid

// Tests of the public API layer: the backward workspace, the answers for kernel keys that are not
// built (or a machine without a GPU), zero-size problems, the thread-local error channel, and the
// small helpers (status_name, build_info, problem_init, contiguous_tensor).
//
// These run on any machine: which keys are built is read from build_info(), and a test whose
// premise does not hold for this build or machine skips itself. No test launches a kernel: every
// GPU call here fails before the launch or has nothing to do.
#include <algorithm>
#include <cmath>
#include <thread>

#include "api_validation_fixture.hpp"

namespace flash_sigmoid::testing {
namespace {

// batch * heads_q * round_up(seqlen_q, 128) * round_up(head_dim, 32) * sizeof(float)
constexpr size_t kFixtureWorkspaceBytes = 2 * 4 * 128 * 64 * 4;

// ---- workspace ------------------------------------------------------------------------------------

TEST_F(ApiValidation, ForwardNeedsNoWorkspace) {
  size_t bytes = 1;
  EXPECT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess);
  EXPECT_EQ(bytes, 0u);
}

TEST_F(ApiValidation, BackwardWorkspaceSizeIsTheDocumentedBytes) {
  size_t bytes = 0;
  ASSERT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, kFixtureWorkspaceBytes);

  // Rounding both ways: batch 3, Hq 2, Sq 129 -> 256 rows, D 40 -> 64 columns.
  BackwardArgs a{};
  a.problem = problem_init(40);
  a.problem.batch = 3;
  a.problem.seqlen_q = 129;
  a.problem.seqlen_k = 1;
  a.problem.heads_q = 2;
  a.problem.heads_kv = 1;
  a.q = a.dout = a.dq = contiguous_tensor(bogus(kBogusQ), 129, 2, 40);
  a.k = a.v = a.dk = a.dv = contiguous_tensor(bogus(kBogusK), 1, 1, 40);
  ASSERT_EQ(workspace_size(a, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, size_t{3} * 2 * 256 * 64 * 4);
  EXPECT_EQ(flash_sigmoid_backward_workspace_size(&a, &bytes), FLASH_SIGMOID_SUCCESS);
  EXPECT_EQ(bytes, size_t{3} * 2 * 256 * 64 * 4);

  // Exact multiples are not rounded further.
  a.problem.seqlen_q = 128;
  a.problem.head_dim = 32;
  a.q = a.dout = a.dq = contiguous_tensor(bogus(kBogusQ), 128, 2, 32);
  a.k = a.v = a.dk = a.dv = contiguous_tensor(bogus(kBogusK), 1, 1, 32);
  ASSERT_EQ(workspace_size(a, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, size_t{3} * 2 * 128 * 32 * 4);
}

TEST_F(ApiValidation, BackwardWorkspaceIsZeroWithoutQueries) {
  size_t bytes = 1;
  bwd_.problem.seqlen_q = 0;
  ASSERT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, 0u);
}

TEST_F(ApiValidation, BackwardWorkspaceIsZeroInDeterministicMode) {
  // Deterministic mode accumulates dQ in registers (a separate dQ kernel): no fp32 accumulator.
  size_t bytes = 1;
  bwd_.deterministic = 1;
  ASSERT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(flash_sigmoid_backward_workspace_size(&bwd_, &bytes), FLASH_SIGMOID_SUCCESS);
  EXPECT_EQ(bytes, 0u);
}

TEST_F(ApiValidation, GpuRejectsBackwardWhoseWorkspaceSizeOverflows) {
  // Zero strides let the largest problem pass every tensor rule; its accumulator, 65535 * 65535 *
  // 2^30 * 256 floats (2^72 bytes), must be rejected rather than have its size wrap around.
  bwd_.problem.batch = 65535;
  bwd_.problem.heads_q = 65535;
  bwd_.problem.heads_kv = 1;
  bwd_.problem.seqlen_q = (int64_t{1} << 30) - 1;
  bwd_.problem.head_dim = 256;
  for (Tensor* t : {&bwd_.q, &bwd_.k, &bwd_.v, &bwd_.dout, &bwd_.dq, &bwd_.dk, &bwd_.dv}) {
    *t = Tensor{t->data, 0, 0, 0, 1};
  }
  expect_rejected(bwd_, kGpu, "problem", "a backward workspace of batch * heads_q * round_up(seqlen_q, 128)",
                  "batch 65535, heads_q 65535, seqlen_q 1073741823, head_dim 256");
}

TEST_F(ApiValidation, BackwardWithWorkspaceOneByteShortIsWorkspaceTooSmall) {
  const Workspace short_by_one{bogus(kBogusWorkspace), kFixtureWorkspaceBytes - 1};
  EXPECT_TRUE(rejected(backward(bwd_, short_by_one, nullptr), Status::kWorkspaceTooSmall, "backward",
                       "workspace.bytes", "at least 262144", "262143"));
  EXPECT_EQ(flash_sigmoid_backward(&bwd_, bogus(kBogusWorkspace), kFixtureWorkspaceBytes - 1, nullptr),
            FLASH_SIGMOID_WORKSPACE_TOO_SMALL);
}

TEST_F(ApiValidation, BackwardWithNullWorkspaceOfEnoughBytesIsInvalidArgument) {
  const Workspace null_workspace{nullptr, kFixtureWorkspaceBytes};
  EXPECT_TRUE(rejected(backward(bwd_, null_workspace, nullptr), Status::kInvalidArgument, "backward",
                       "workspace.data", "a non-null 16-byte aligned device pointer", "NULL"));
}

TEST_F(ApiValidation, BackwardWithMisalignedWorkspaceIsInvalidArgument) {
  const Workspace misaligned{bogus(kBogusWorkspace + 4), kFixtureWorkspaceBytes};
  EXPECT_TRUE(rejected(backward(bwd_, misaligned, nullptr), Status::kInvalidArgument, "backward", "workspace.data",
                       "a non-null 16-byte aligned device pointer", "0xa04"));
}

TEST_F(ApiValidation, BackwardWithExactWorkspacePassesTheWorkspaceCheck) {
  if (is_built("bwd", "fp16", kHeadDim, "none") && cuda_device_present()) {
    GTEST_SKIP() << "a backward kernel would launch on the bogus pointers";
  }
  const Status s = backward(bwd_, Workspace{bogus(kBogusWorkspace), kFixtureWorkspaceBytes}, nullptr);
  EXPECT_NE(s, Status::kWorkspaceTooSmall) << last_error();
  EXPECT_NE(s, Status::kInvalidArgument) << last_error();
}

// ---- keys that are not built, and machines without a GPU ------------------------------------------

TEST_F(ApiValidation, BackwardIsUnsupportedWhileNoBackwardKernelIsBuilt) {
  if (is_built("bwd", "fp16", kHeadDim, "none")) GTEST_SKIP() << "a backward kernel for this key is built";
  EXPECT_EQ(backward(bwd_, ample_workspace(), nullptr), Status::kUnsupported);
  EXPECT_TRUE(message_has("backward: ", {"bwd", "head_dim 64", "built", "FLASH_SIGMOID_ARCHS"}));
  EXPECT_EQ(can_implement(bwd_), Status::kUnsupported);
  EXPECT_TRUE(message_has("can_implement: ", {"bwd", "head_dim 64", "built", "FLASH_SIGMOID_ARCHS"}));
}

// The "not built" answer names the build option that left the key out (issue 22): with no GPU
// kernels at all FLASH_SIGMOID_ARCHS, else the first filter of the kernel table (architectures,
// directions, dtypes, head dims, masks) that no compiled kernel passes; and always what this build's
// FLASH_SIGMOID_ARCHS was.
TEST_F(ApiValidation, NotBuiltMessageNamesTheBuildOption) {
  const std::vector<BuiltKey> keys = built_keys();
  auto any = [&](auto&& pred) { return std::any_of(keys.begin(), keys.end(), pred); };
  const std::string this_build = "(this build: FLASH_SIGMOID_ARCHS=";
  if (keys.empty()) {
    for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
      fwd_.problem.dtype = bwd_.problem.dtype = dtype;
      EXPECT_EQ(can_implement(fwd_), Status::kUnsupported);
      EXPECT_TRUE(
          message_has("can_implement: ", {"no GPU kernels", "rebuild with FLASH_SIGMOID_ARCHS", this_build + "none"}));
      EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported);
      EXPECT_TRUE(message_has("forward: ", {"rebuild with FLASH_SIGMOID_ARCHS", this_build + "none"}));
      EXPECT_EQ(can_implement(bwd_), Status::kUnsupported);
      EXPECT_TRUE(message_has("can_implement: ", {"bwd", "rebuild with FLASH_SIGMOID_ARCHS", this_build + "none"}));
    }
    return;
  }
  // fp16, head dim 64, no mask (the fixture's key), forward.
  const bool fwd_built = any([](const BuiltKey& k) { return k.direction == "fwd"; });
  const bool bwd_built = any([](const BuiltKey& k) { return k.direction == "bwd"; });
  const bool fp16_fwd = any([](const BuiltKey& k) { return k.direction == "fwd" && k.dtype == "fp16"; });
  if (!bwd_built) {
    EXPECT_EQ(can_implement(bwd_), Status::kUnsupported);
    EXPECT_TRUE(message_has("can_implement: ", {"FLASH_SIGMOID_DIRECTIONS left out bwd", this_build}));
  }
  if (fwd_built && !fp16_fwd) {
    EXPECT_EQ(can_implement(fwd_), Status::kUnsupported);
    EXPECT_TRUE(message_has("can_implement: ", {"FLASH_SIGMOID_DTYPES left out fp16", this_build}));
  }
  // A head dim above every built bucket of a built dtype's forward.
  for (const BuiltKey& built : keys) {
    if (built.direction != "fwd" || !built.variant.empty()) continue;
    int top = 0;
    for (const BuiltKey& k : keys) {
      if (k.direction == "fwd" && k.dtype == built.dtype) top = std::max(top, k.head_dim);
    }
    if (top >= 256) continue;
    ForwardArgs args = fwd_;
    args.problem.dtype = built.dtype == "fp16" ? FLASH_SIGMOID_FLOAT16 : FLASH_SIGMOID_BFLOAT16;
    args.problem.head_dim = top + 8;
    args.problem.scale = 0.125f;
    for (Tensor* t : {&args.q, &args.out}) *t = contiguous_tensor(t->data, kSeqlenQ, kHeadsQ, top + 8);
    for (Tensor* t : {&args.k, &args.v}) *t = contiguous_tensor(t->data, kSeqlenK, kHeadsKv, top + 8);
    EXPECT_EQ(can_implement(args), Status::kUnsupported);
    const std::string left_out = "FLASH_SIGMOID_HEAD_DIMS left out every bucket >= " + std::to_string(top + 8);
    EXPECT_TRUE(message_has("can_implement: ", {left_out, this_build}));
    break;
  }
  // The sm90 family asked for by a build without it.
  if (!any([](const BuiltKey& k) { return k.arch == 90; })) {
    fwd_.problem.kernel_arch = 90;
    EXPECT_EQ(can_implement(fwd_), Status::kUnsupported);
    EXPECT_TRUE(message_has("can_implement: ", {"FLASH_SIGMOID_ARCHS left out the sm90 family", this_build}));
  }
}

TEST_F(ApiValidation, HeadDimWhoseBucketIsNotBuiltIsUnsupported) {
  int head_dim = 0;
  for (int d = 8; d <= 256 && head_dim == 0; d += 8) head_dim = is_built("fwd", "fp16", d, "none") ? 0 : d;
  if (head_dim == 0) GTEST_SKIP() << "every fp16 forward head dim is built";
  fwd_.problem.head_dim = head_dim;
  fwd_.problem.scale = 0.125f;
  for (Tensor* t : {&fwd_.q, &fwd_.out}) *t = contiguous_tensor(t->data, kSeqlenQ, kHeadsQ, head_dim);
  for (Tensor* t : {&fwd_.k, &fwd_.v}) *t = contiguous_tensor(t->data, kSeqlenK, kHeadsKv, head_dim);
  const std::string key = "head_dim " + std::to_string(head_dim);
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported);
  EXPECT_TRUE(message_has("forward: ", {key, "built fwd kernels: "}));
  EXPECT_EQ(can_implement(fwd_), Status::kUnsupported);
  EXPECT_TRUE(message_has("can_implement: ", {key, "built fwd kernels: "}));
  for (const BuiltKey& k : built_keys()) {  // the message lists what was built
    if (k.direction == "fwd") {
      EXPECT_TRUE(message_has("can_implement: ", {"hdim" + std::to_string(k.head_dim)}));
    }
  }
}

TEST_F(ApiValidation, DtypeWhoseKernelsAreNotBuiltIsUnsupported) {
  if (is_built("fwd", "bf16", kHeadDim, "none")) GTEST_SKIP() << "bf16 forward kernels are built";
  fwd_.problem.dtype = FLASH_SIGMOID_BFLOAT16;
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported);
  EXPECT_TRUE(message_has("forward: ", {"dtype bf16", "built"}));
}

TEST_F(ApiValidation, MaskWhoseKernelsAreNotBuiltIsUnsupported) {
  // Causal with Sq = 5 <= Sk = 7 bounds keys on the right only: mask kind "right".
  if (is_built("fwd", "fp16", kHeadDim, "right")) GTEST_SKIP() << "right-masked forward kernels are built";
  fwd_.problem.causal = 1;
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported);
  EXPECT_TRUE(message_has("forward: ", {"mask right", "built"}));
}

TEST_F(ApiValidation, KernelArch90WithoutSm90KernelsIsUnsupported) {
  if (is_built("fwd", "fp16", kHeadDim, "none", 90)) GTEST_SKIP() << "sm90 forward kernels are built";
  fwd_.problem.kernel_arch = 90;
  // Unsupported on any machine, with or without a GPU: the answer needs no device.
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("forward: ", {"built"}));
  EXPECT_EQ(can_implement(fwd_), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("can_implement: ", {"built"}));
}

TEST_F(ApiValidation, DeterministicBackwardOnTheSm90FamilyIsUnsupported) {
  // The sm90 backward has no deterministic mode: named, that is a clear Unsupported (known without a
  // device); left to the library, a deterministic call goes to the sm80 family.
  if (!is_built("bwd", "bf16", kHeadDim, "none", 90)) GTEST_SKIP() << "no sm90 bf16 backward kernel for head dim 64";
  bwd_.problem.dtype = FLASH_SIGMOID_BFLOAT16;
  bwd_.problem.kernel_arch = 90;
  bwd_.deterministic = 1;
  EXPECT_EQ(can_implement(bwd_), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("can_implement: ", {"sm90 family", "deterministic mode", "built"}));
}

TEST_F(ApiValidation, KernelVariantThatIsNotBuiltIsUnsupported) {
  // A named variant is served by its own entries only: never by the default mainloop, on any
  // machine (the answer needs no device), and the message names the variant.
  fwd_.problem.kernel_variant = "no_such_mainloop";
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("forward: ", {"variant 'no_such_mainloop'", "built"}));
  EXPECT_EQ(can_implement(fwd_), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("can_implement: ", {"variant 'no_such_mainloop'"}));
  bwd_.problem.kernel_variant = "no_such_mainloop";
  EXPECT_EQ(can_implement(bwd_), Status::kUnsupported) << last_error();
  EXPECT_TRUE(message_has("can_implement: ", {"bwd", "variant 'no_such_mainloop'"}));
  // The workspace answer does not depend on the build: no kernel of the variant, so the dQ
  // accumulator's documented size.
  size_t bytes = 0;
  ASSERT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, kFixtureWorkspaceBytes);
}

TEST_F(ApiValidation, EmptyKernelVariantIsTheDefault) {
  if (!is_built("fwd", "fp16", kHeadDim, "none")) GTEST_SKIP() << "no fp16 forward kernel for head dim 64 is built";
  fwd_.problem.kernel_variant = "";
  const Status s = can_implement(fwd_);
  // The default mainloop is found (then a CUDA error without a device, success with one).
  EXPECT_NE(s, Status::kUnsupported) << last_error();
}

TEST_F(ApiValidation, BuiltKeyWithoutCudaDeviceIsCudaError) {
  if (cuda_device_present()) GTEST_SKIP() << "a CUDA device is present";
  if (!is_built("fwd", "fp16", kHeadDim, "none")) GTEST_SKIP() << "no fp16 forward kernel for head dim 64 is built";
  EXPECT_EQ(can_implement(fwd_), Status::kCudaError);
  EXPECT_TRUE(message_has("can_implement: no usable CUDA device", {}));
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kCudaError);
  EXPECT_TRUE(message_has("forward: no usable CUDA device", {}));
}

TEST_F(ApiValidation, BuiltKeyOnACudaDeviceCanBeImplemented) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device";
  if (!is_built("fwd", "fp16", kHeadDim, "none", 80)) GTEST_SKIP() << "no sm80 fp16 forward kernel for head dim 64";
  fwd_.problem.kernel_arch = 80;  // sm_80 code runs on every device of compute capability >= 8.0
  EXPECT_EQ(can_implement(fwd_), Status::kSuccess) << last_error();
  EXPECT_STREQ(last_error(), "");
}

// ---- zero-size problems are valid and do nothing ----------------------------------------------------

TEST_F(ApiValidation, ForwardWithBatch0AndNullPointersSucceeds) {
  fwd_.problem.batch = 0;
  fwd_.q.data = fwd_.k.data = fwd_.v.data = fwd_.out.data = nullptr;
  size_t bytes = 1;
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kSuccess) << last_error();
  EXPECT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(cpu::forward(fwd_, 1), Status::kSuccess) << last_error();
  EXPECT_EQ(flash_sigmoid_forward(&fwd_, nullptr, 0, nullptr), FLASH_SIGMOID_SUCCESS);
}

TEST_F(ApiValidation, ForwardWithSeqlenQ0AndNullQAndOutSucceeds) {
  // q and out have no elements and may be null; k and v still do, and stay bogus.
  fwd_.problem.seqlen_q = 0;
  fwd_.q.data = fwd_.out.data = nullptr;
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::forward(fwd_, 1), Status::kSuccess) << last_error();
  fwd_.problem.seqlen_k = 0;
  fwd_.k.data = fwd_.v.data = nullptr;
  EXPECT_EQ(forward(fwd_, Workspace{}, nullptr), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::forward(fwd_, 1), Status::kSuccess) << last_error();
}

TEST_F(ApiValidation, BackwardWithBatch0AndNullPointersSucceeds) {
  bwd_.problem.batch = 0;
  for (Tensor* t : {&bwd_.q, &bwd_.k, &bwd_.v, &bwd_.dout, &bwd_.dq, &bwd_.dk, &bwd_.dv}) t->data = nullptr;
  size_t bytes = 1;
  EXPECT_EQ(workspace_size(bwd_, &bytes), Status::kSuccess) << last_error();
  EXPECT_EQ(bytes, 0u);
  EXPECT_EQ(backward(bwd_, Workspace{}, nullptr), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(bwd_, 1), Status::kSuccess) << last_error();
  EXPECT_EQ(flash_sigmoid_backward(&bwd_, nullptr, 0, nullptr), FLASH_SIGMOID_SUCCESS);
}

TEST_F(ApiValidation, CpuForwardWithoutKeysWritesZeros) {
  Problem p = valid_problem();
  p.seqlen_k = 0;
  HostTensors host(p);
  ASSERT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_TRUE(host.all_zero(host.out()));
}

TEST_F(ApiValidation, CpuBackwardWithoutQueriesWritesZeroDkAndDv) {
  Problem p = valid_problem();
  p.seqlen_q = 0;
  HostTensors host(p);
  ASSERT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_TRUE(host.all_zero(host.dk()));
  EXPECT_TRUE(host.all_zero(host.dv()));
}

// ---- the error channel ---------------------------------------------------------------------------

TEST_F(ApiValidation, CpuRejectsNegativeNumThreads) {
  EXPECT_TRUE(rejected(cpu::forward(fwd_, -1), Status::kInvalidArgument, "cpu::forward", "num_threads", ">= 0",
                       "-1"));
  EXPECT_TRUE(rejected(cpu::backward(bwd_, -2), Status::kInvalidArgument, "cpu::backward", "num_threads", ">= 0",
                       "-2"));
}

TEST_F(ApiValidation, CShimReportsTheSameMessagesAsTheCppApi) {
  fwd_.problem.head_dim = 0;
  EXPECT_EQ(flash_sigmoid_forward(&fwd_, nullptr, 0, nullptr), FLASH_SIGMOID_INVALID_ARGUMENT);
  EXPECT_STREQ(flash_sigmoid_last_error(), "forward: problem.head_dim: expected 1..256, got 0");
  EXPECT_EQ(flash_sigmoid_can_implement_forward(&fwd_), FLASH_SIGMOID_INVALID_ARGUMENT);
  EXPECT_STREQ(flash_sigmoid_last_error(), "can_implement: problem.head_dim: expected 1..256, got 0");
  EXPECT_EQ(flash_sigmoid_cpu_forward(&fwd_, 1), FLASH_SIGMOID_INVALID_ARGUMENT);
  EXPECT_STREQ(flash_sigmoid_last_error(), "cpu::forward: problem.head_dim: expected 1..256, got 0");
  bwd_.dq.stride_dim = 3;
  EXPECT_EQ(flash_sigmoid_cpu_backward(&bwd_, 1), FLASH_SIGMOID_INVALID_ARGUMENT);
  EXPECT_STREQ(flash_sigmoid_last_error(), "cpu::backward: dq.stride_dim: expected 1 (the head dim must be contiguous), got 3");
}

TEST_F(ApiValidation, LastErrorIsEmptyAfterASuccess) {
  size_t bytes = 0;
  fwd_.problem.head_dim = 0;
  ASSERT_EQ(workspace_size(fwd_, &bytes), Status::kInvalidArgument);
  ASSERT_STRNE(last_error(), "");
  fwd_.problem.head_dim = kHeadDim;
  EXPECT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess);
  EXPECT_STREQ(last_error(), "");

  ASSERT_EQ(cpu::forward(fwd_, -1), Status::kInvalidArgument);
  ASSERT_STRNE(flash_sigmoid_last_error(), "");
  HostTensors host(valid_problem());
  EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess);
  EXPECT_STREQ(flash_sigmoid_last_error(), "");
}

TEST_F(ApiValidation, LastErrorIsThreadLocal) {
  size_t bytes = 0;
  ASSERT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess);  // this thread: ""
  std::string other_message, other_sees_before;
  std::thread other([&] {
    ForwardArgs bad = fwd_;
    bad.problem.heads_q = 0;
    workspace_size(bad, &bytes);
    other_message = last_error();
  });
  other.join();
  EXPECT_EQ(other_message, "workspace_size: problem.heads_q: expected >= 1, got 0");
  EXPECT_STREQ(last_error(), "");  // the other thread's error does not show here

  fwd_.problem.head_dim = 257;
  ASSERT_EQ(workspace_size(fwd_, &bytes), Status::kInvalidArgument);
  std::thread fresh([&] { other_sees_before = last_error(); });
  fresh.join();
  EXPECT_EQ(other_sees_before, "");  // nor this thread's error on another
  EXPECT_TRUE(message_has("workspace_size: problem.head_dim", {}));
}

// ---- small helpers ----------------------------------------------------------------------------

TEST(ApiValidationHelpers, StatusNameNamesEveryStatus) {
  EXPECT_STREQ(status_name(Status::kSuccess), "success");
  EXPECT_STREQ(status_name(Status::kInvalidArgument), "invalid argument");
  EXPECT_STREQ(status_name(Status::kUnsupported), "unsupported");
  EXPECT_STREQ(status_name(Status::kWorkspaceTooSmall), "workspace too small");
  EXPECT_STREQ(status_name(Status::kCudaError), "CUDA error");
  EXPECT_STREQ(status_name(Status::kInternalError), "internal error");
  EXPECT_STREQ(status_name(static_cast<Status>(42)), "unknown status");
  EXPECT_STREQ(flash_sigmoid_status_name(FLASH_SIGMOID_WORKSPACE_TOO_SMALL), "workspace too small");
}

TEST(ApiValidationHelpers, BuildInfoMentionsTheLibraryTheArchsAndEveryKernel) {
  const std::string info = build_info();
  EXPECT_EQ(info.rfind("flash_sigmoid ", 0), 0u) << info;
  EXPECT_EQ(info, flash_sigmoid_build_info());
  const size_t archs_at = info.find("\narchs ");
  ASSERT_NE(archs_at, std::string::npos) << info;
  const std::string archs = info.substr(archs_at + 7, info.find('\n', archs_at + 1) - archs_at - 7);
  EXPECT_FALSE(archs.empty()) << info;
  EXPECT_NE(info.find("\nkernels:\n"), std::string::npos) << info;
  for (const BuiltKey& k : built_keys()) {  // every kernel is of a built arch
    const std::string arch = k.arch == 90 ? "90a" : std::to_string(k.arch);
    EXPECT_NE(archs.find(arch), std::string::npos) << "kernel arch " << k.arch << " not in \"" << archs << "\"";
  }
}

TEST(ApiValidationHelpers, ProblemInitDefaults) {
  const Problem p = problem_init(64);
  EXPECT_EQ(p.dtype, FLASH_SIGMOID_FLOAT16);
  EXPECT_EQ(p.head_dim, 64);
  EXPECT_EQ(p.batch, 0);
  EXPECT_EQ(p.seqlen_q, 0);
  EXPECT_EQ(p.seqlen_k, 0);
  EXPECT_EQ(p.heads_q, 0);
  EXPECT_EQ(p.heads_kv, 0);
  EXPECT_EQ(p.scale, 0.125f);
  EXPECT_FLOAT_EQ(problem_init(59).scale, 1.0f / std::sqrt(59.0f));
  EXPECT_EQ(p.sigmoid_bias, 0.0f);
  EXPECT_EQ(p.causal, 0);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.window_right, -1);
  EXPECT_EQ(p.alibi_slopes, nullptr);
  EXPECT_EQ(p.alibi_stride_batch, 0);
  EXPECT_EQ(p.score_function, FLASH_SIGMOID_SIGMOID_VIA_EXP2);
  EXPECT_EQ(p.kernel_arch, 0);
  EXPECT_EQ(p.kernel_variant, nullptr);
  const FlashSigmoidProblem c = flash_sigmoid_problem_init(64);  // the C shim gives the same defaults
  EXPECT_EQ(c.dtype, p.dtype);
  EXPECT_EQ(c.head_dim, p.head_dim);
  EXPECT_EQ(c.scale, p.scale);
  EXPECT_EQ(c.window_left, p.window_left);
  EXPECT_EQ(c.window_right, p.window_right);
  EXPECT_EQ(c.score_function, p.score_function);
  EXPECT_EQ(c.kernel_arch, p.kernel_arch);
  EXPECT_EQ(c.kernel_variant, p.kernel_variant);
}

TEST(ApiValidationHelpers, ContiguousTensorStrides) {
  const Tensor t = contiguous_tensor(bogus(kBogusQ), 5, 4, 64);
  EXPECT_EQ(t.data, bogus(kBogusQ));
  EXPECT_EQ(t.stride_batch, 5 * 4 * 64);
  EXPECT_EQ(t.stride_seq, 4 * 64);
  EXPECT_EQ(t.stride_head, 64);
  EXPECT_EQ(t.stride_dim, 1);
  const FlashSigmoidTensor c = flash_sigmoid_contiguous_tensor(bogus(kBogusQ), 5, 4, 64);
  EXPECT_EQ(std::memcmp(&c, &t, sizeof t), 0);
}

}  // namespace
}  // namespace flash_sigmoid::testing

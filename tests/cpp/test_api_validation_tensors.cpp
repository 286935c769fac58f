// Tests of the public API layer: validation of the pointer arguments and of the tensors (null
// arguments and data, stride_dim, negative and overflowing strides, and the GPU kernels' rules on
// alignment, stride granularity and the 32-bit per-head slice). All tensors point into the
// never-mapped first page, so a check that read behind a pointer would crash the test.
#include "api_validation_fixture.hpp"

namespace flash_sigmoid::testing {
namespace {

// ---- null arguments ---------------------------------------------------------------------------

::testing::AssertionResult null_args_rejected(FlashSigmoidStatus status, const std::string& where) {
  return rejected(static_cast<Status>(status), Status::kInvalidArgument, where, "args", "a non-null pointer", "NULL");
}

TEST(ApiValidationCShim, ForwardRejectsNullArgs) {
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_forward(nullptr, nullptr, 0, nullptr), "forward"));
}

TEST(ApiValidationCShim, BackwardRejectsNullArgs) {
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_backward(nullptr, bogus(kBogusWorkspace), 1 << 20, nullptr), "backward"));
}

TEST(ApiValidationCShim, CanImplementRejectsNullArgs) {
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_can_implement_forward(nullptr), "can_implement"));
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_can_implement_backward(nullptr), "can_implement"));
}

TEST(ApiValidationCShim, WorkspaceSizeRejectsNullArgs) {
  size_t bytes = 1;
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_forward_workspace_size(nullptr, &bytes), "workspace_size"));
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_backward_workspace_size(nullptr, &bytes), "workspace_size"));
}

TEST(ApiValidationCShim, CpuForwardAndBackwardRejectNullArgs) {
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_cpu_forward(nullptr, 1), "cpu::forward"));
  EXPECT_TRUE(null_args_rejected(flash_sigmoid_cpu_backward(nullptr, 1), "cpu::backward"));
}

TEST_F(ApiValidation, WorkspaceSizeRejectsNullBytes) {
  EXPECT_TRUE(rejected(workspace_size(fwd_, nullptr), Status::kInvalidArgument, "workspace_size", "bytes",
                       "a non-null pointer", "NULL"));
  EXPECT_TRUE(rejected(workspace_size(bwd_, nullptr), Status::kInvalidArgument, "workspace_size", "bytes",
                       "a non-null pointer", "NULL"));
  EXPECT_TRUE(rejected(static_cast<Status>(flash_sigmoid_backward_workspace_size(&bwd_, nullptr)),
                       Status::kInvalidArgument, "workspace_size", "bytes", "a non-null pointer", "NULL"));
}

// ---- null data where elements exist -------------------------------------------------------------

TEST_F(ApiValidation, NullQDataIsRejected) {
  fwd_.q.data = nullptr;
  expect_rejected(fwd_, kGpuAndCpu, "q.data", "a non-null pointer", "NULL");
  bwd_.q.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "q.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullKDataIsRejected) {
  fwd_.k.data = nullptr;
  expect_rejected(fwd_, kGpuAndCpu, "k.data", "a non-null pointer", "NULL");
  bwd_.k.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "k.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullVDataIsRejected) {
  fwd_.v.data = nullptr;
  expect_rejected(fwd_, kGpuAndCpu, "v.data", "a non-null pointer", "NULL");
  bwd_.v.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "v.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullOutDataIsRejected) {
  fwd_.out.data = nullptr;
  expect_rejected(fwd_, kGpuAndCpu, "out.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullDoutDataIsRejected) {
  bwd_.dout.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "dout.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullDqDataIsRejected) {
  bwd_.dq.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "dq.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullDkDataIsRejected) {
  bwd_.dk.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "dk.data", "a non-null pointer", "NULL");
}

TEST_F(ApiValidation, NullDvDataIsRejected) {
  bwd_.dv.data = nullptr;
  expect_rejected(bwd_, kGpuAndCpu, "dv.data", "a non-null pointer", "NULL");
}

// ---- stride_dim ----------------------------------------------------------------------------------

TEST_F(ApiValidation, QStrideDimNot1IsRejected) {
  fwd_.q.stride_dim = 2;
  expect_rejected(fwd_, kGpuAndCpu, "q.stride_dim", "1 (the head dim must be contiguous)", "2");
  bwd_.q.stride_dim = 0;
  expect_rejected(bwd_, kGpuAndCpu, "q.stride_dim", "1 (the head dim must be contiguous)", "0");
}

TEST_F(ApiValidation, KAndVStrideDimNot1IsRejected) {
  fwd_.k.stride_dim = -1;
  expect_rejected(fwd_, kGpuAndCpu, "k.stride_dim", "1 (the head dim must be contiguous)", "-1");
  fwd_.k.stride_dim = 1;
  fwd_.v.stride_dim = 8;
  expect_rejected(fwd_, kGpuAndCpu, "v.stride_dim", "1 (the head dim must be contiguous)", "8");
}

TEST_F(ApiValidation, OutStrideDimNot1IsRejected) {
  fwd_.out.stride_dim = 64;
  expect_rejected(fwd_, kGpuAndCpu, "out.stride_dim", "1 (the head dim must be contiguous)", "64");
}

TEST_F(ApiValidation, BackwardTensorsStrideDimNot1IsRejected) {
  for (Tensor BackwardArgs::*t : {&BackwardArgs::dout, &BackwardArgs::dq, &BackwardArgs::dk, &BackwardArgs::dv}) {
    BackwardArgs args = bwd_;
    (args.*t).stride_dim = 2;
    const std::string name = t == &BackwardArgs::dout ? "dout"
                             : t == &BackwardArgs::dq ? "dq"
                             : t == &BackwardArgs::dk ? "dk"
                                                      : "dv";
    SCOPED_TRACE(name);
    expect_rejected(args, kGpuAndCpu, name + ".stride_dim", "1 (the head dim must be contiguous)", "2");
  }
}

// ---- negative and overflowing strides -------------------------------------------------------------

TEST_F(ApiValidation, NegativeStrideBatchIsRejected) {
  fwd_.q.stride_batch = -1280;
  expect_rejected(fwd_, kGpuAndCpu, "q.stride_batch", ">= 0", "-1280");
  bwd_.dq.stride_batch = -8;
  expect_rejected(bwd_, kGpuAndCpu, "dq.stride_batch", ">= 0", "-8");
}

TEST_F(ApiValidation, NegativeStrideSeqIsRejected) {
  fwd_.k.stride_seq = -128;
  expect_rejected(fwd_, kGpuAndCpu, "k.stride_seq", ">= 0", "-128");
  bwd_.dv.stride_seq = -128;
  expect_rejected(bwd_, kGpuAndCpu, "dv.stride_seq", ">= 0", "-128");
}

TEST_F(ApiValidation, NegativeStrideHeadIsRejected) {
  fwd_.out.stride_head = -64;
  expect_rejected(fwd_, kGpuAndCpu, "out.stride_head", ">= 0", "-64");
  bwd_.dout.stride_head = -64;
  expect_rejected(bwd_, kGpuAndCpu, "dout.stride_head", ">= 0", "-64");
}

TEST_F(ApiValidation, StrideBatchWhoseOffsetsOverflowInt64IsRejected) {
  fwd_.q.stride_batch = kInt64Max - 7;  // 1 * stride_batch + the rest of the row > INT64_MAX
  expect_rejected(fwd_, kGpuAndCpu, "q.stride_batch", "fits in 64 bits", std::to_string(kInt64Max - 7));
}

TEST_F(ApiValidation, StrideSeqWhoseOffsetsOverflowInt64IsRejected) {
  fwd_.k.stride_seq = int64_t{1} << 62;  // 6 * 2^62 overflows
  expect_rejected(fwd_, kGpuAndCpu, "k.stride_seq", "fits in 64 bits", "4611686018427387904");
  bwd_.dq.stride_seq = int64_t{1} << 61;  // 4 * 2^61 = 2^63 overflows
  expect_rejected(bwd_, kGpuAndCpu, "dq.stride_seq", "fits in 64 bits", "2305843009213693952");
}

TEST_F(ApiValidation, StrideHeadWhoseOffsetsOverflowInt64IsRejected) {
  fwd_.out.stride_head = kInt64Max / 2;  // 3 * stride_head overflows
  expect_rejected(fwd_, kGpuAndCpu, "out.stride_head", "fits in 64 bits", std::to_string(kInt64Max / 2));
}

TEST_F(ApiValidation, StridesWhoseSumOverflowsInt64AreRejected) {
  // Each term fits; their sum does not: 1 * 2^62 + 6 * 2^60 > 2^63. The message names the
  // stride with the largest term.
  fwd_.v.stride_batch = int64_t{1} << 62;
  fwd_.v.stride_seq = int64_t{1} << 60;
  expect_rejected(fwd_, kGpuAndCpu, "v.stride_seq", "fits in 64 bits", "1152921504606846976");
}

// ---- GPU: alignment and stride granularity (16-byte vector accesses) -----------------------------

TEST_F(ApiValidation, GpuRejectsDataNotAlignedTo16Bytes) {
  fwd_.q.data = bogus(kBogusQ + 8);
  expect_rejected(fwd_, kGpu, "q.data", "a 16-byte aligned pointer", "0x108");
  fwd_.q.data = bogus(kBogusQ);
  fwd_.out.data = bogus(kBogusOut + 2);
  expect_rejected(fwd_, kGpu, "out.data", "a 16-byte aligned pointer", "0x402");
  bwd_.dk.data = bogus(kBogusDk + 6);
  expect_rejected(bwd_, kGpu, "dk.data", "a 16-byte aligned pointer", "0x706");
}

TEST_F(ApiValidation, CpuAcceptsDataNotAlignedTo16Bytes) {
  HostTensors host(valid_problem());
  ForwardArgs args = host.forward_args();
  args.q.data = static_cast<unsigned char*>(args.q.data) + host.element_bytes();
  args.out.data = static_cast<unsigned char*>(args.out.data) + host.element_bytes();
  EXPECT_EQ(cpu::forward(args, 1), Status::kSuccess) << last_error();
}

TEST_F(ApiValidation, GpuRejectsStrideHeadNotMultipleOf8Elements) {
  fwd_.q.stride_head = 68;
  expect_rejected(fwd_, kGpu, "q.stride_head", "a multiple of 8 elements (16 bytes)", "68");
}

TEST_F(ApiValidation, GpuRejectsStrideSeqNotMultipleOf8Elements) {
  fwd_.k.stride_seq = 132;
  expect_rejected(fwd_, kGpu, "k.stride_seq", "a multiple of 8 elements (16 bytes)", "132");
  bwd_.dv.stride_seq = 129;
  expect_rejected(bwd_, kGpu, "dv.stride_seq", "a multiple of 8 elements (16 bytes)", "129");
}

TEST_F(ApiValidation, GpuRejectsStrideBatchNotMultipleOf8Elements) {
  fwd_.out.stride_batch = 1284;
  expect_rejected(fwd_, kGpu, "out.stride_batch", "a multiple of 8 elements (16 bytes)", "1284");
}

TEST_F(ApiValidation, CpuAcceptsStridesNotMultipleOf8Elements) {
  HostTensors host(valid_problem(), /*seq_pad=*/3);
  EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
}

// ---- GPU: one (batch, head) slice is indexed with 32 bits ------------------------------------------

TEST_F(ApiValidation, GpuRejectsPerHeadSliceOver2To31) {
  // (2^20 - 1) * 4096 + 64 elements > 2^31: rejected from the struct alone, touching no memory.
  const int64_t seqlen = int64_t{1} << 20;
  fwd_.problem.seqlen_q = seqlen;
  fwd_.q = Tensor{bogus(kBogusQ), seqlen * 4096, 4096, kHeadDim, 1};
  fwd_.out = bogus_tensor(kBogusOut, seqlen, kHeadsQ);
  expect_rejected(fwd_, kGpu, "q.stride_seq", "(seqlen - 1) * stride_seq + head_dim < 2^31", "4096");

  bwd_.problem.seqlen_k = seqlen;
  bwd_.k = bogus_tensor(kBogusK, seqlen, kHeadsKv);
  bwd_.v = bogus_tensor(kBogusV, seqlen, kHeadsKv);
  bwd_.dk = bogus_tensor(kBogusDk, seqlen, kHeadsKv);
  bwd_.dv = Tensor{bogus(kBogusDv), seqlen * 4096, 4096, kHeadDim, 1};
  expect_rejected(bwd_, kGpu, "dv.stride_seq", "< 2^31", "4096");
}

TEST_F(ApiValidation, GpuAcceptsPerHeadSliceJustUnder2To31) {
  // (2^19 - 1) * 4096 + 64 < 2^31. workspace_size validates without needing a kernel or device.
  const int64_t seqlen = int64_t{1} << 19;
  fwd_.problem.seqlen_q = seqlen;
  fwd_.q = Tensor{bogus(kBogusQ), seqlen * 4096, 4096, kHeadDim, 1};
  fwd_.out = bogus_tensor(kBogusOut, seqlen, kHeadsQ);
  size_t bytes = 1;
  EXPECT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess) << last_error();
  fwd_.problem.seqlen_q = seqlen + 1;
  expect_rejected(fwd_, kGpu, "q.stride_seq", "< 2^31", "4096");
}

TEST_F(ApiValidation, GpuRejectsPerHeadSliceWhoseEndIs2To63) {
  // The last element's offset is exactly INT64_MAX, so the 64-bit rule passes; the slice's end,
  // one past it, must not wrap around and slip under the 32-bit rule.
  fwd_.problem.batch = 1;
  fwd_.problem.seqlen_q = 2;
  fwd_.q = Tensor{bogus(kBogusQ), 0, kInt64Max - kHeadDim + 1, 0, 1};
  fwd_.out = bogus_tensor(kBogusOut, 2, kHeadsQ);
  expect_rejected(fwd_, kGpu, "q.stride_seq", "< 2^31", std::to_string(kInt64Max - kHeadDim + 1));
}

}  // namespace
}  // namespace flash_sigmoid::testing

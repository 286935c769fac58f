// Tests of the public API layer: validation of the problem's fields (dtype, sizes, head dim, scale
// and bias, mask windows, ALiBi, score function, kernel family, the GPU kernels' size limits).
// Each test breaks one field of a valid problem and checks the status and the message on every
// entry point the rule applies to; where the GPU and CPU rules differ, the CPU side has its own
// test. Tensor arguments: test_api_validation_tensors.cpp. Workspace, dispatch, zero-size
// problems and the error channel: test_api_validation_dispatch.cpp.
#include <cmath>
#include <limits>

#include "api_validation_fixture.hpp"

namespace flash_sigmoid::testing {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- dtype ---------------------------------------------------------------------------------

TEST_F(ApiValidation, GpuRejectsFloat32) {
  fwd_.problem.dtype = FLASH_SIGMOID_FLOAT32;
  expect_rejected(fwd_, kGpu, "problem.dtype", "FLASH_SIGMOID_FLOAT16 or FLASH_SIGMOID_BFLOAT16", "2");
  bwd_.problem.dtype = FLASH_SIGMOID_FLOAT32;
  expect_rejected(bwd_, kGpu, "problem.dtype", "FLASH_SIGMOID_FLOAT16 or FLASH_SIGMOID_BFLOAT16", "2");
}

TEST_F(ApiValidation, CpuAcceptsFloat32) {
  Problem p = valid_problem();
  p.dtype = FLASH_SIGMOID_FLOAT32;
  HostTensors host(p);
  EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
}

TEST_F(ApiValidation, CpuAcceptsBFloat16) {
  Problem p = valid_problem();
  p.dtype = FLASH_SIGMOID_BFLOAT16;
  HostTensors host(p);
  EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
}

TEST_F(ApiValidation, OutOfRangeDtypeIsRejectedOnGpuAndCpu) {
  fwd_.problem.dtype = static_cast<FlashSigmoidDType>(7);
  expect_rejected(fwd_, kGpuAndCpu, "problem.dtype", "FLASH_SIGMOID_BFLOAT16", "7");
  bwd_.problem.dtype = static_cast<FlashSigmoidDType>(-1);
  expect_rejected(bwd_, kGpuAndCpu, "problem.dtype", "FLASH_SIGMOID_BFLOAT16", "-1");
}

// ---- head dim --------------------------------------------------------------------------------

TEST_F(ApiValidation, HeadDimZeroIsRejected) {
  fwd_.problem.head_dim = 0;
  expect_rejected(fwd_, kGpuAndCpu, "problem.head_dim", "1..256", "0");
  bwd_.problem.head_dim = 0;
  expect_rejected(bwd_, kGpuAndCpu, "problem.head_dim", "1..256", "0");
}

TEST_F(ApiValidation, HeadDim257IsRejected) {
  fwd_.problem.head_dim = 257;
  expect_rejected(fwd_, kGpuAndCpu, "problem.head_dim", "1..256", "257");
  bwd_.problem.head_dim = 257;
  expect_rejected(bwd_, kGpuAndCpu, "problem.head_dim", "1..256", "257");
}

TEST_F(ApiValidation, GpuRejectsHeadDimNotMultipleOf8) {
  fwd_.problem.head_dim = 59;
  expect_rejected(fwd_, kGpu, "problem.head_dim", "a multiple of 8", "59");
  bwd_.problem.head_dim = 59;
  expect_rejected(bwd_, kGpu, "problem.head_dim", "a multiple of 8", "59");
}

TEST_F(ApiValidation, CpuAcceptsHeadDimNotMultipleOf8) {
  Problem p = valid_problem();
  p.head_dim = 59;
  HostTensors host(p);
  EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
  EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
}

// ---- heads and sizes -----------------------------------------------------------------------------

TEST_F(ApiValidation, HeadsQNotMultipleOfHeadsKvIsRejected) {
  fwd_.problem.heads_kv = 3;
  expect_rejected(fwd_, kGpuAndCpu, "problem.heads_q", "a multiple of problem.heads_kv (3)", "4");
  bwd_.problem.heads_kv = 3;
  expect_rejected(bwd_, kGpuAndCpu, "problem.heads_q", "a multiple of problem.heads_kv (3)", "4");
}

TEST_F(ApiValidation, HeadsQZeroIsRejected) {
  fwd_.problem.heads_q = 0;
  expect_rejected(fwd_, kGpuAndCpu, "problem.heads_q", ">= 1", "0");
  bwd_.problem.heads_q = 0;
  expect_rejected(bwd_, kGpuAndCpu, "problem.heads_q", ">= 1", "0");
}

TEST_F(ApiValidation, HeadsKvZeroIsRejected) {
  fwd_.problem.heads_kv = 0;
  expect_rejected(fwd_, kGpuAndCpu, "problem.heads_kv", ">= 1", "0");
  bwd_.problem.heads_kv = 0;
  expect_rejected(bwd_, kGpuAndCpu, "problem.heads_kv", ">= 1", "0");
}

TEST_F(ApiValidation, NegativeBatchIsRejected) {
  fwd_.problem.batch = -1;
  expect_rejected(fwd_, kGpuAndCpu, "problem.batch", ">= 0", "-1");
  bwd_.problem.batch = -1;
  expect_rejected(bwd_, kGpuAndCpu, "problem.batch", ">= 0", "-1");
}

TEST_F(ApiValidation, NegativeSeqlenQIsRejected) {
  fwd_.problem.seqlen_q = -5;
  expect_rejected(fwd_, kGpuAndCpu, "problem.seqlen_q", ">= 0", "-5");
  bwd_.problem.seqlen_q = -5;
  expect_rejected(bwd_, kGpuAndCpu, "problem.seqlen_q", ">= 0", "-5");
}

TEST_F(ApiValidation, NegativeSeqlenKIsRejected) {
  fwd_.problem.seqlen_k = std::numeric_limits<int64_t>::min();
  expect_rejected(fwd_, kGpuAndCpu, "problem.seqlen_k", ">= 0", "-9223372036854775808");
  bwd_.problem.seqlen_k = -7;
  expect_rejected(bwd_, kGpuAndCpu, "problem.seqlen_k", ">= 0", "-7");
}

// ---- the GPU kernels' size limits (grid y/z, int positions) -----------------------------------

TEST_F(ApiValidation, GpuRejectsBatchAbove65535) {
  fwd_.problem.batch = 65536;
  expect_rejected(fwd_, kGpu, "problem.batch", "<= 65535", "65536");
  bwd_.problem.batch = 65536;
  expect_rejected(bwd_, kGpu, "problem.batch", "<= 65535", "65536");
}

TEST_F(ApiValidation, GpuRejectsHeadsQAbove65535) {
  fwd_.problem.heads_q = 65536;
  expect_rejected(fwd_, kGpu, "problem.heads_q", "<= 65535", "65536");
  bwd_.problem.heads_q = 65536;
  expect_rejected(bwd_, kGpu, "problem.heads_q", "<= 65535", "65536");
}

TEST_F(ApiValidation, GpuRejectsSeqlenQOf2To30) {
  fwd_.problem.seqlen_q = int64_t{1} << 30;
  expect_rejected(fwd_, kGpu, "problem.seqlen_q", "< 2^30", "1073741824");
  bwd_.problem.seqlen_q = int64_t{1} << 30;
  expect_rejected(bwd_, kGpu, "problem.seqlen_q", "< 2^30", "1073741824");
}

TEST_F(ApiValidation, GpuRejectsSeqlenKOf2To30) {
  fwd_.problem.seqlen_k = int64_t{1} << 30;
  expect_rejected(fwd_, kGpu, "problem.seqlen_k", "< 2^30", "1073741824");
  bwd_.problem.seqlen_k = int64_t{1} << 30;
  expect_rejected(bwd_, kGpu, "problem.seqlen_k", "< 2^30", "1073741824");
}

// ---- scale and bias -------------------------------------------------------------------------------

TEST_F(ApiValidation, NaNScaleIsRejected) {
  fwd_.problem.scale = kNaN;
  expect_rejected(fwd_, kGpuAndCpu, "problem.scale", "a finite number", "nan");
  bwd_.problem.scale = kNaN;
  expect_rejected(bwd_, kGpuAndCpu, "problem.scale", "a finite number", "nan");
}

TEST_F(ApiValidation, InfiniteScaleIsRejected) {
  fwd_.problem.scale = kInf;
  expect_rejected(fwd_, kGpuAndCpu, "problem.scale", "a finite number", "inf");
  bwd_.problem.scale = -kInf;
  expect_rejected(bwd_, kGpuAndCpu, "problem.scale", "a finite number", "-inf");
}

TEST_F(ApiValidation, NaNSigmoidBiasIsRejected) {
  fwd_.problem.sigmoid_bias = kNaN;
  expect_rejected(fwd_, kGpuAndCpu, "problem.sigmoid_bias", "a finite number", "nan");
  bwd_.problem.sigmoid_bias = kNaN;
  expect_rejected(bwd_, kGpuAndCpu, "problem.sigmoid_bias", "a finite number", "nan");
}

TEST_F(ApiValidation, InfiniteSigmoidBiasIsRejected) {
  fwd_.problem.sigmoid_bias = -kInf;
  expect_rejected(fwd_, kGpuAndCpu, "problem.sigmoid_bias", "a finite number", "-inf");
  bwd_.problem.sigmoid_bias = kInf;
  expect_rejected(bwd_, kGpuAndCpu, "problem.sigmoid_bias", "a finite number", "inf");
}

// ---- mask ---------------------------------------------------------------------------------------

TEST_F(ApiValidation, WindowLeftBelowMinusOneIsRejected) {
  fwd_.problem.window_left = -2;
  expect_rejected(fwd_, kGpuAndCpu, "problem.window_left", ">= -1 (-1: unbounded)", "-2");
  bwd_.problem.window_left = -2;
  expect_rejected(bwd_, kGpuAndCpu, "problem.window_left", ">= -1 (-1: unbounded)", "-2");
}

TEST_F(ApiValidation, WindowRightBelowMinusOneIsRejected) {
  fwd_.problem.window_right = -3;
  expect_rejected(fwd_, kGpuAndCpu, "problem.window_right", ">= -1 (-1: unbounded)", "-3");
  bwd_.problem.window_right = -3;
  expect_rejected(bwd_, kGpuAndCpu, "problem.window_right", ">= -1 (-1: unbounded)", "-3");
}

TEST_F(ApiValidation, CausalWithWindowRight5IsRejected) {
  fwd_.problem.causal = 1;
  fwd_.problem.window_right = 5;
  expect_rejected(fwd_, kGpuAndCpu, "problem.window_right", "-1 or 0 with causal", "5");
  bwd_.problem.causal = 1;
  bwd_.problem.window_right = 5;
  expect_rejected(bwd_, kGpuAndCpu, "problem.window_right", "-1 or 0 with causal", "5");
}

TEST_F(ApiValidation, CausalWithWindowRight0OrMinus1IsAccepted) {
  for (int64_t right : {int64_t{0}, int64_t{-1}}) {
    Problem p = valid_problem();
    p.causal = 1;
    p.window_left = 2;
    p.window_right = right;
    HostTensors host(p);
    EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
    EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
  }
}

// ---- ALiBi ----------------------------------------------------------------------------------------

TEST_F(ApiValidation, NegativeAlibiStrideBatchIsRejected) {
  fwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  fwd_.problem.alibi_stride_batch = -1;
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_stride_batch", "0 (slopes of shape [heads_q]) or >= heads_q",
                  "-1");
  bwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  bwd_.problem.alibi_stride_batch = -4;
  expect_rejected(bwd_, kGpuAndCpu, "problem.alibi_stride_batch", "or >= heads_q", "-4");
}

TEST_F(ApiValidation, AlibiOffsetOutsidePlusMinus2To30IsRejected) {
  for (const int64_t offset : {int64_t{1} << 30, -(int64_t{1} << 30), kInt64Max}) {
    fwd_.problem.alibi_offset = offset;
    expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_offset", "|alibi_offset| < 2^30", std::to_string(offset));
    bwd_.problem.alibi_offset = offset;
    expect_rejected(bwd_, kGpuAndCpu, "problem.alibi_offset", "|alibi_offset| < 2^30", std::to_string(offset));
  }
}

TEST_F(ApiValidation, AlibiOffsetWithAKvCacheIsRejected) {
  fwd_.problem.seqused_k = static_cast<const int32_t*>(bogus(0xc00));
  fwd_.problem.alibi_offset = 5;
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_offset", "0 with a KV cache", "5");
  fwd_.problem.seqused_k = nullptr;
  fwd_.problem.kv_batch_idx = static_cast<const int32_t*>(bogus(0xc00));
  fwd_.problem.alibi_offset = -3;
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_offset", "0 with a KV cache", "-3");
}

TEST_F(ApiValidation, AlibiOffsetThatPushesTheDiagonalPast2To30IsRejected) {
  // |alibi_offset| < 2^30 alone, but seqlen_k - seqlen_q + alibi_offset reaches 2^30.
  const int64_t offset = (int64_t{1} << 30) - 1 - (fwd_.problem.seqlen_k - fwd_.problem.seqlen_q) + 1;
  fwd_.problem.alibi_offset = offset;
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_offset", "|seqlen_k - seqlen_q + alibi_offset| < 2^30",
                  std::to_string(offset));
}

TEST_F(ApiValidation, AlibiStrideBatchBetween1AndHeadsQMinus1IsRejected) {
  fwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  for (int64_t stride = 1; stride < kHeadsQ; ++stride) {
    fwd_.problem.alibi_stride_batch = stride;
    expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_stride_batch", "or >= heads_q", std::to_string(stride));
  }
  bwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  bwd_.problem.alibi_stride_batch = kHeadsQ - 1;
  expect_rejected(bwd_, kGpuAndCpu, "problem.alibi_stride_batch", "or >= heads_q", "3");
}

TEST_F(ApiValidation, AlibiStrideBatchWhoseOffsetsOverflowInt64IsRejected) {
  fwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  fwd_.problem.alibi_stride_batch = kInt64Max - 1;  // (batch - 1) * stride + heads_q - 1 overflows
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_stride_batch", "fits in 64 bits", std::to_string(kInt64Max - 1));
  bwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes));
  bwd_.problem.alibi_stride_batch = kInt64Max - (kHeadsQ - 2);  // one past INT64_MAX
  expect_rejected(bwd_, kGpuAndCpu, "problem.alibi_stride_batch", "fits in 64 bits",
                  std::to_string(kInt64Max - (kHeadsQ - 2)));
}

TEST_F(ApiValidation, MisalignedAlibiSlopesAreRejected) {
  fwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes + 2));
  expect_rejected(fwd_, kGpuAndCpu, "problem.alibi_slopes", "a 4-byte aligned pointer", "0x902");
  bwd_.problem.alibi_slopes = static_cast<const float*>(bogus(kBogusSlopes + 1));
  expect_rejected(bwd_, kGpuAndCpu, "problem.alibi_slopes", "a 4-byte aligned pointer", "0x901");
}

TEST_F(ApiValidation, AlibiSlopesPerHeadOrPerBatchAndHeadAreAccepted) {
  const std::vector<float> slopes(kBatch * kHeadsQ + 3, 0.25f);
  for (int64_t stride : {int64_t{0}, kHeadsQ, kHeadsQ + 3}) {
    Problem p = valid_problem();
    p.alibi_slopes = slopes.data();
    p.alibi_stride_batch = stride;
    HostTensors host(p);
    EXPECT_EQ(cpu::forward(host.forward_args(), 1), Status::kSuccess) << last_error();
    EXPECT_EQ(cpu::backward(host.backward_args(), 1), Status::kSuccess) << last_error();
  }
}

// ---- score function and kernel family ----------------------------------------------------------

TEST_F(ApiValidation, OutOfRangeScoreFunctionIsRejected) {
  fwd_.problem.score_function = static_cast<FlashSigmoidScoreFunction>(2);
  expect_rejected(fwd_, kGpuAndCpu, "problem.score_function",
                  "FLASH_SIGMOID_SIGMOID_VIA_EXP2 or FLASH_SIGMOID_SIGMOID_VIA_TANH", "2");
  bwd_.problem.score_function = static_cast<FlashSigmoidScoreFunction>(-1);
  expect_rejected(bwd_, kGpuAndCpu, "problem.score_function", "FLASH_SIGMOID_SIGMOID_VIA_TANH", "-1");
}

TEST_F(ApiValidation, KernelArch75IsRejected) {
  fwd_.problem.kernel_arch = 75;
  expect_rejected(fwd_, kGpuAndCpu, "problem.kernel_arch", "0 (best available), 80 or 90", "75");
  bwd_.problem.kernel_arch = 75;
  expect_rejected(bwd_, kGpuAndCpu, "problem.kernel_arch", "0 (best available), 80 or 90", "75");
}

// ---- the first wrong argument is the one named --------------------------------------------------

TEST_F(ApiValidation, MessageNamesTheFirstWrongArgument) {
  fwd_.problem.head_dim = 0;
  fwd_.problem.scale = kNaN;
  fwd_.q.stride_dim = 2;
  expect_rejected(fwd_, kGpuAndCpu, "problem.head_dim", "1..256", "0");
}

// ---- dropout (docs/dropout.md) ---------------------------------------------------------------

TEST_F(ApiValidation, DropoutPOutsideZeroToOneIsRejected) {
  const uint64_t* seed = static_cast<const uint64_t*>(bogus(0xb00));
  fwd_.problem.dropout_seed = bwd_.problem.dropout_seed = seed;
  fwd_.problem.dropout_p = -0.25f;
  expect_rejected(fwd_, kGpuAndCpu, "problem.dropout_p", "a probability in [0, 1)", "-0.25");
  bwd_.problem.dropout_p = 1.0f;
  expect_rejected(bwd_, kGpuAndCpu, "problem.dropout_p", "a probability in [0, 1)", "1");
  fwd_.problem.dropout_p = kNaN;
  expect_rejected(fwd_, kGpuAndCpu, "problem.dropout_p", "a probability in [0, 1)", "nan");
}

TEST_F(ApiValidation, DropoutNeedsAnAlignedSeedPointer) {
  fwd_.problem.dropout_p = bwd_.problem.dropout_p = 0.1f;
  expect_rejected(fwd_, kGpuAndCpu, "problem.dropout_seed", "a pointer to {seed, offset}", "NULL");
  expect_rejected(bwd_, kGpuAndCpu, "problem.dropout_seed", "a pointer to {seed, offset}", "NULL");
  fwd_.problem.dropout_seed = bwd_.problem.dropout_seed = static_cast<const uint64_t*>(bogus(0xb04));
  expect_rejected(fwd_, kGpuAndCpu, "problem.dropout_seed", "an 8-byte aligned pointer", "0xb04");
  expect_rejected(bwd_, kGpuAndCpu, "problem.dropout_seed", "an 8-byte aligned pointer", "0xb04");
}

TEST_F(ApiValidation, DropoutWithAKvCacheIsRejected) {
  fwd_.problem.dropout_p = 0.5f;
  fwd_.problem.dropout_seed = static_cast<const uint64_t*>(bogus(0xb00));
  fwd_.problem.seqused_k = static_cast<const int32_t*>(bogus(0xc00));
  expect_rejected(fwd_, kGpuAndCpu, "problem.dropout_p", "0 with a KV cache", "0.5");
}

TEST_F(ApiValidation, DropoutBelowHalfAStepIsNoDropout) {
  // p rounds to a multiple of 1/256: below 1/512 nothing is dropped, and no seed is read.
  fwd_.problem.dropout_p = 1.0f / 1024;
  fwd_.problem.dropout_seed = static_cast<const uint64_t*>(bogus(0xb00));
  size_t bytes = 0;
  EXPECT_EQ(workspace_size(fwd_, &bytes), Status::kSuccess) << last_error();
}

}  // namespace
}  // namespace flash_sigmoid::testing

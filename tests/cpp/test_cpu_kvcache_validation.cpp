// Tests of the KV-cache fields' and the append step's validation (docs/kvcache.md) through the
// public API: every error's message names the argument and nothing is written before failing; the
// GPU path answers Unsupported naming each field before any device is asked, and its append checks
// the struct as the CPU's does.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/decode_plan.hpp"
#include "flash_sigmoid/flash_sigmoid.hpp"
#include "kvcache_fixture.hpp"

namespace flash_sigmoid {
namespace {

using namespace kvcache_test;

::testing::AssertionResult fails_with(Status got, Status want, const std::string& message) {
  const std::string error = last_error();
  if (got != want) return ::testing::AssertionFailure() << "status " << status_name(got) << ": " << error;
  if (error.find(message) == std::string::npos) {
    return ::testing::AssertionFailure() << "message \"" << error << "\" lacks \"" << message << "\"";
  }
  return ::testing::AssertionSuccess();
}

// A valid paged fp32 cache: 3 rows of capacity 64 in pages of 16 (12 + 3 pages), lengths 0, 17, 40.
KvCache small_paged() { return KvCache(FLASH_SIGMOID_FLOAT32, Layout::kPaged, 16, {0, 17, 40}, 64, 2, 2, 2, 8); }

TEST(CpuKvCacheValidation, ForwardErrorsNameTheArgument) {
  static int32_t cu[4] = {0, 1, 2, 3};
  static int32_t row_map[3] = {0, 1, 2};
  struct Bad {
    const char* message;
    void (*change)(KvCache&, ForwardArgs&);
  };
  const Bad bad[] = {
      {"cpu::forward: problem.page_size: expected a power of two >= 16 with problem.block_table, got 24",
       [](KvCache&, ForwardArgs& a) { a.problem.page_size = 24; }},
      {"problem.page_size: expected a power of two >= 16 with problem.block_table, got 8",
       [](KvCache&, ForwardArgs& a) { a.problem.page_size = 8; }},
      {"problem.page_size: expected 0 without problem.block_table, got 16",
       [](KvCache&, ForwardArgs& a) { a.problem.block_table = nullptr; }},
      {"problem.seqlen_k: expected a multiple of problem.page_size (16) with problem.block_table (each row's "
       "capacity), got 60",
       [](KvCache&, ForwardArgs& a) { a.problem.seqlen_k = 60; }},
      {"problem.block_table_stride_batch: expected >= seqlen_k / page_size (4, the pages of a row), got 3",
       [](KvCache&, ForwardArgs& a) { a.problem.block_table_stride_batch = 3; }},
      {"problem.kv_batch: expected >= 1 with problem.block_table (the number of pages in k and v), got 0",
       [](KvCache&, ForwardArgs& a) { a.problem.kv_batch = 0; }},
      {"problem.block_table_stride_batch: expected a stride whose largest entry offset, (batch - 1) * "
       "block_table_stride_batch, fits in 64 bits",
       [](KvCache&, ForwardArgs& a) { a.problem.block_table_stride_batch = int64_t{1} << 62; }},
      {"problem.kv_batch: expected >= 0 (0: batch), got -1", [](KvCache&, ForwardArgs& a) { a.problem.kv_batch = -1; }},
      {"problem.block_table[6] (batch 1, page 2): expected a page of k and v (0..14), got 15",
       [](KvCache& c, ForwardArgs&) { c.lengths[1] = 40, c.table[6] = 15; }},
      {"problem.block_table[9] (batch 2, page 1): expected a page of k and v (0..14), got -1",
       [](KvCache& c, ForwardArgs&) { c.table[9] = -1; }},
      {"problem.seqused_k[2]: expected at most problem.seqlen_k (64, the cache's capacity), got 65",
       [](KvCache& c, ForwardArgs&) { c.lengths[2] = 65; }},
      {"problem.seqused_k[0]: expected >= 0, got -1", [](KvCache& c, ForwardArgs&) { c.lengths[0] = -1; }},
      {"problem.kv_batch_idx: expected NULL with problem.block_table (a paged cache maps batch entries to pages)",
       [](KvCache&, ForwardArgs& a) { a.problem.kv_batch_idx = row_map; }},
      {"problem.seqused_k: expected NULL with problem.cu_seqlens_q (packed sequences and a KV cache do not combine",
       [](KvCache&, ForwardArgs& a) {
         a.problem.cu_seqlens_q = a.problem.cu_seqlens_k = cu;
         a.problem.block_table = nullptr, a.problem.page_size = 0;
       }},
      {"k.stride_dim: expected 1 (the head dim must be contiguous), got 2",
       [](KvCache&, ForwardArgs& a) { a.k.stride_dim = 2; }},
      {"problem.seqused_k: expected a 4-byte aligned pointer to int32",
       [](KvCache& c, ForwardArgs& a) {
         a.problem.seqused_k = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(c.lengths.data()) + 2);
       }},
  };
  for (const Bad& b : bad) {
    KvCache c = small_paged();
    ForwardArgs a = c.forward_args();  // points at c's lengths and table, changed in place below
    b.change(c, a);
    EXPECT_TRUE(fails_with(cpu::forward(a, 1), Status::kInvalidArgument, b.message));
    for (size_t i = 0; i < c.out.size(); ++i) ASSERT_TRUE(std::isnan(c.out.get(i))) << b.message << ": wrote out";
  }
  // Pages past a row's used keys are never read, so their entries may be anything.
  KvCache c = small_paged();
  c.table[1 * 4 + 3] = -7;  // row 1 (17 keys) uses pages 0 and 1 only
  EXPECT_EQ(cpu::forward(c.forward_args(), 1), Status::kSuccess) << last_error();
  // A row map out of range, and the backward, which has no KV-cache fields.
  KvCache m(FLASH_SIGMOID_FLOAT32, Layout::kRowMap, 0, {3, 4, 5}, 8, 1, 2, 2, 8);
  m.row_map[1] = 5;
  EXPECT_TRUE(fails_with(cpu::forward(m.forward_args(), 1), Status::kInvalidArgument,
                         "problem.kv_batch_idx[1]: expected a row of k and v (0..4), got 5"));
  BackwardArgs g{};
  g.problem = m.problem;
  EXPECT_TRUE(fails_with(cpu::backward(g, 1), Status::kInvalidArgument,
                         "problem.seqused_k: expected NULL for the backward (the KV-cache fields are forward-only)"));
}

// problem_init leaves every KV-cache field off, so existing callers keep the dense problem.
TEST(CpuKvCacheValidation, ProblemInitLeavesTheKvCacheFieldsOff) {
  const Problem p = problem_init(64);
  EXPECT_EQ(p.seqused_k, nullptr);
  EXPECT_EQ(p.kv_batch_idx, nullptr);
  EXPECT_EQ(p.block_table, nullptr);
  EXPECT_EQ(p.block_table_stride_batch, 0);
  EXPECT_EQ(p.page_size, 0);
  EXPECT_EQ(p.kv_batch, 0);
}

TEST(CpuKvCacheValidation, AppendErrorsNameTheArgument) {
  struct Bad {
    const char* message;
    void (*change)(KvAppendArgs&, KvCache&);
  };
  static float table[64 * 4];
  const Bad bad[] = {
      {"cpu::kvcache_append: cache_seqlens[2]: expected a length that with seqlen_new (7) fits problem.seqlen_k (64, "
       "the cache's capacity), got 58",
       [](KvAppendArgs&, KvCache& c) { c.lengths[2] = 58; }},
      {"cache_seqlens[0]: expected >= 0, got -2", [](KvAppendArgs&, KvCache& c) { c.lengths[0] = -2; }},
      {"cache_seqlens: expected a non-null pointer to int32 [batch], got NULL",
       [](KvAppendArgs& a, KvCache&) { a.cache_seqlens = nullptr; }},
      {"problem.seqused_k: expected NULL for the append (cache_seqlens gives the lengths)",
       [](KvAppendArgs& a, KvCache& c) { a.problem.seqused_k = c.lengths.data(); }},
      {"seqlen_new: expected >= 0, got -1", [](KvAppendArgs& a, KvCache&) { a.seqlen_new = -1; }},
      {"problem.block_table[9] (batch 2, page 1): expected a page of k and v (0..14), got 99",
       [](KvAppendArgs&, KvCache& c) { c.table[9] = 99; }},
      {"k_cache.stride_dim: expected 1 (the head dim must be contiguous), got 3",
       [](KvAppendArgs& a, KvCache&) { a.k_cache.stride_dim = 3; }},
      {"v_new.stride_dim: expected 1 (the head dim must be contiguous), got 0",
       [](KvAppendArgs& a, KvCache&) { a.v_new.stride_dim = 0; }},
      {"problem.page_size: expected a power of two >= 16 with problem.block_table, got 48",
       [](KvAppendArgs& a, KvCache&) { a.problem.page_size = 48; }},
      {"rotary_sin: expected a non-null pointer like rotary_cos (both set: rotary; both NULL: none), got NULL",
       [](KvAppendArgs& a, KvCache&) { a.rotary_cos = table; }},
      {"rotary_dim: expected an even number in 2..head_dim (8), got 5",
       [](KvAppendArgs& a, KvCache&) { a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 5; }},
      {"rotary_stride: expected >= rotary_dim / 2 (4, a table row), got 2",
       [](KvAppendArgs& a, KvCache&) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 2, a.rotary_seqlen = 64;
       }},
      {"rotary_seqlen: expected more than 46 rows (the last position of batch 2's q and new k), got 40",
       [](KvAppendArgs& a, KvCache&) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 4, a.rotary_seqlen = 40;
       }},
      {"q_rotated.data: expected a buffer other than q.data (the rotation is not in place)",
       [](KvAppendArgs& a, KvCache& c) {
         a.rotary_cos = a.rotary_sin = table, a.rotary_dim = 8, a.rotary_stride = 4, a.rotary_seqlen = 64;
         a.q = a.q_rotated = contiguous_tensor(c.q.data(), c.sq, c.hq, c.d);
       }},
  };
  for (const Bad& b : bad) {
    KvCache c = small_paged();
    NewTokens t(c, 7, 1);
    KvAppendArgs a = append_args(c, t, 7);
    b.change(a, c);
    const Buffer k_before = c.k;
    EXPECT_TRUE(fails_with(cpu::kvcache_append(a, 1), Status::kInvalidArgument, b.message));
    EXPECT_TRUE(same_bytes(c.k, 0, k_before, k_before.size())) << b.message << ": wrote the cache before failing";
  }
  KvCache c = small_paged();
  NewTokens t(c, 7, 1);
  EXPECT_TRUE(fails_with(cpu::kvcache_append(append_args(c, t, 7), -1), Status::kInvalidArgument,
                         "cpu::kvcache_append: num_threads: expected >= 0"));
  EXPECT_TRUE(fails_with(static_cast<Status>(flash_sigmoid_cpu_kvcache_append(nullptr, 1)), Status::kInvalidArgument,
                         "cpu::kvcache_append: args: expected a non-null pointer"));
}

// The GPU path never reads the KV-cache pointers (device memory there; these point nowhere). A
// KV-cache forward goes to the decode kernel: what it does not take is Unsupported naming the field,
// before any device is asked (a device is asked only for a problem it takes).
TEST(GpuKvCacheValidation, KvCacheFieldsTheDecodeKernelDoesNotTakeAreUnsupportedNamed) {
  alignas(16) static uint16_t q[80 * 2 * 16], k[64 * 2 * 16], v[64 * 2 * 16], o[80 * 2 * 16];
  ForwardArgs a{};
  a.problem = problem_init(16);
  a.problem.dtype = FLASH_SIGMOID_BFLOAT16;
  a.problem.batch = 2, a.problem.seqlen_q = 1, a.problem.seqlen_k = 64, a.problem.heads_q = 2, a.problem.heads_kv = 2;
  a.q = contiguous_tensor(q, 1, 2, 16);
  a.k = contiguous_tensor(k, 64, 2, 16);
  a.v = contiguous_tensor(v, 64, 2, 16);
  a.out = contiguous_tensor(o, 1, 2, 16);
  const auto* nowhere = reinterpret_cast<const int32_t*>(uintptr_t{0x1000});  // never dereferenced
  ForwardArgs used = a;
  used.problem.seqused_k = nowhere;
  // 65 query rows per kv head: more than the decode kernel packs.
  used.problem.seqlen_q = 65;
  used.q = contiguous_tensor(q, 65, 2, 16);
  used.out = contiguous_tensor(o, 65, 2, 16);
  EXPECT_TRUE(fails_with(forward(used, {}, nullptr), Status::kUnsupported,
                         "forward: problem.seqlen_q: the GPU KV-cache (decode) kernel takes seqlen_q * heads_q / "
                         "heads_kv <= 64 query rows per kv head, got 65 * 1 = 65"));
  EXPECT_TRUE(fails_with(can_implement(used), Status::kUnsupported, "can_implement: problem.seqlen_q"));
  ForwardArgs mapped = a;
  mapped.problem.kv_batch_idx = nowhere;
  mapped.problem.kernel_arch = 90;
  EXPECT_TRUE(fails_with(forward(mapped, {}, nullptr), Status::kUnsupported,
                         "forward: problem.kernel_arch: the KV-cache decode kernel is sm80-family code"));
  mapped.problem.kernel_arch = 0;
  mapped.problem.kernel_variant = "ws_deep";
  EXPECT_TRUE(fails_with(forward(mapped, {}, nullptr), Status::kUnsupported,
                         "forward: problem.kernel_variant: the KV-cache decode kernel has no variants"));
  mapped.problem.kernel_variant = nullptr;
  mapped.problem.num_splits = 129;
  EXPECT_TRUE(fails_with(forward(mapped, {}, nullptr), Status::kInvalidArgument,
                         "forward: problem.num_splits: expected 0 (choose) .. 128"));
  // fp16 has no decode kernel in the CPU tier's build (bf16 only): Unsupported naming the build.
  if (std::string(build_info()).find("decode_fp16") == std::string::npos) {
    ForwardArgs half = a;
    half.problem.dtype = FLASH_SIGMOID_FLOAT16;
    half.problem.block_table = nowhere;
    half.problem.block_table_stride_batch = 4, half.problem.page_size = 16, half.problem.kv_batch = 2;
    half.k.stride_batch = half.v.stride_batch = 16 * 2 * 16;
    EXPECT_TRUE(fails_with(forward(half, {}, nullptr), Status::kUnsupported,
                           "forward: no KV-cache decode kernel for dtype fp16, head_dim 16 is built"));
    // The cheap checks still come first: a bad page size is InvalidArgument, not Unsupported.
    half.problem.page_size = 12;
    EXPECT_TRUE(fails_with(forward(half, {}, nullptr), Status::kInvalidArgument, "problem.page_size: expected a power"));
  }
  KvAppendArgs append{};
  append.problem = a.problem;
  append.cache_seqlens = nowhere;
  append.seqlen_new = 1;
  append.k_new = append.v_new = contiguous_tensor(q, 1, 2, 16);
  append.k_cache = a.k, append.v_cache = a.v;
  // The GPU append (common/kvcache_append.hpp) checks the struct like the CPU one, before any device
  // is asked: a misaligned seqused_k_out is InvalidArgument, a dtype without a decode key
  // Unsupported naming the build.
  KvAppendArgs misaligned = append;
  misaligned.seqused_k_out = reinterpret_cast<int32_t*>(uintptr_t{0x1002});
  EXPECT_TRUE(fails_with(kvcache_append(misaligned, nullptr), Status::kInvalidArgument,
                         "kvcache_append: seqused_k_out: expected NULL or a 4-byte aligned pointer"));
  EXPECT_TRUE(fails_with(static_cast<Status>(flash_sigmoid_kvcache_append(&misaligned, nullptr)),
                         Status::kInvalidArgument, "kvcache_append: seqused_k_out"));
  KvAppendArgs counts_only = append;  // nothing appended, but the key counts asked for: needs cache_seqlens
  counts_only.seqlen_new = 0, counts_only.cache_seqlens = nullptr;
  counts_only.seqused_k_out = reinterpret_cast<int32_t*>(uintptr_t{0x1000});
  EXPECT_TRUE(fails_with(kvcache_append(counts_only, nullptr), Status::kInvalidArgument,
                         "kvcache_append: cache_seqlens: expected a non-null pointer"));
  if (std::string(build_info()).find("decode_fp16") == std::string::npos) {
    KvAppendArgs half = append;
    half.problem.dtype = FLASH_SIGMOID_FLOAT16;
    EXPECT_TRUE(fails_with(kvcache_append(half, nullptr), Status::kUnsupported,
                           "kvcache_append: no KV-cache decode kernel for dtype fp16, head_dim 16 is built"));
  }
  // Nothing to do (no batch) succeeds without a device.
  KvAppendArgs empty = append;
  empty.problem.batch = 0;
  EXPECT_EQ(kvcache_append(empty, nullptr), Status::kSuccess) << last_error();
}

// The decode kernel's launch plan (common/decode_plan.hpp) reads shapes and the device's size only.
TEST(DecodePlan, SplitsFromShapesAndTheSmCount) {
  const int slots = decode_blocks_per_sm(128, 233472);  // H200: 228 KB of shared memory per SM
  EXPECT_EQ(slots, 2);
  EXPECT_EQ(decode_blocks_per_sm(64, 233472), 3);
  EXPECT_EQ(decode_blocks_per_sm(256, 233472), 1);
  // B 16, Hkv 8 (128 blocks per split) on 132 SMs x 2: 4 splits fill two waves to 97%.
  const DecodePlan decode = decode_plan(16, 1, 32, 8, 128, 8192, 0, 132, slots);
  EXPECT_EQ(decode.row_chunks, 1);
  EXPECT_EQ(decode.num_splits, 4);
  EXPECT_EQ(decode.workspace_bytes, size_t{4} * 16 * 32 * 128 * 4);
  // A short cache: at most one split per 4 key tiles (3 tiles: one split, no workspace).
  const DecodePlan short_cache = decode_plan(1, 1, 8, 8, 128, 192, 0, 132, slots);
  EXPECT_EQ(short_cache.num_splits, 1);
  EXPECT_EQ(short_cache.workspace_bytes, 0u);
  // MQA with 32 heads: two row chunks of 16; 4 tokens x 16 heads: four.
  EXPECT_EQ(decode_plan(2, 1, 32, 1, 64, 4096, 0, 132, 3).row_chunks, 2);
  EXPECT_EQ(decode_plan(2, 4, 16, 1, 64, 4096, 0, 132, 3).row_chunks, 4);
  // Asked for: taken as given within 1..128, even past the key tiles.
  EXPECT_EQ(decode_plan(2, 1, 8, 2, 128, 64, 64, 132, slots).num_splits, 64);
  EXPECT_EQ(decode_plan(2, 1, 8, 2, 128, 64, 500, 132, slots).num_splits, kDecodeMaxSplits);
  // Fixed for fixed shapes: the same answer every time (nothing but the arguments is read).
  EXPECT_EQ(decode_plan(16, 1, 32, 8, 128, 8192, 0, 132, slots).num_splits, decode.num_splits);
}

}  // namespace
}  // namespace flash_sigmoid

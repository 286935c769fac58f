/*
 * FlashSigmoid public C API: fused sigmoid self-attention,
 *
 *     out = sigmoid(scale * q @ k^T + bias - alibi) @ v       (per batch and query head)
 *
 * Layer: public API. Owns the argument structs (pointers plus strides in elements), validation,
 * workspace sizes, the forward/backward entry points for CUDA and CPU, the last-error message and
 * build info. Deliberately knows nothing of CuTe, torch, allocation, host synchronisation or
 * exceptions: every entry point returns a status, and on failure flash_sigmoid_last_error()
 * names the argument and what was expected.
 *
 * The C++ API (flash_sigmoid.hpp) uses these same structs; this header is valid C99 and C++.
 * docs/math.md states the conventions (causal alignment, window bounds, ALiBi sign).
 */
#ifndef FLASH_SIGMOID_FLASH_SIGMOID_H_
#define FLASH_SIGMOID_FLASH_SIGMOID_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FLASH_SIGMOID_EXPORT __declspec(dllexport)
#else
#define FLASH_SIGMOID_EXPORT __attribute__((visibility("default")))
#endif

/* A CUDA stream without including the CUDA headers (same type as cudaStream_t / CUstream). */
struct CUstream_st;
typedef struct CUstream_st* FlashSigmoidStream;

typedef enum FlashSigmoidStatus {
  FLASH_SIGMOID_SUCCESS = 0,
  FLASH_SIGMOID_INVALID_ARGUMENT = 1,    /* an argument is wrong; the message names it */
  FLASH_SIGMOID_UNSUPPORTED = 2,         /* valid, but no kernel for it is built or runs here */
  FLASH_SIGMOID_WORKSPACE_TOO_SMALL = 3, /* workspace_bytes below the *_workspace_size() answer */
  FLASH_SIGMOID_CUDA_ERROR = 4,          /* the CUDA runtime reported an error */
  FLASH_SIGMOID_INTERNAL_ERROR = 5
} FlashSigmoidStatus;

typedef enum FlashSigmoidDType {
  FLASH_SIGMOID_FLOAT16 = 0,
  FLASH_SIGMOID_BFLOAT16 = 1,
  FLASH_SIGMOID_FLOAT32 = 2 /* CPU implementation only */
} FlashSigmoidDType;

/* How sigmoid is evaluated on the GPU. Named by algorithm; docs/numerics.md measures both. */
typedef enum FlashSigmoidScoreFunction {
  /* rcp.approx(1 + ex2.approx(-z*log2 e)): at the accuracy floor (default) */
  FLASH_SIGMOID_SIGMOID_VIA_EXP2 = 0,
  /* 0.5 + 0.5*tanh.approx(z/2): Apple's FlashSigmoid formulation, loses accuracy for z << 0 */
  FLASH_SIGMOID_SIGMOID_VIA_TANH = 1
} FlashSigmoidScoreFunction;

/* A [batch, seqlen, heads, head_dim] tensor. Strides are in elements; stride_dim must be 1. */
typedef struct FlashSigmoidTensor {
  void* data;
  int64_t stride_batch;
  int64_t stride_seq;
  int64_t stride_head;
  int64_t stride_dim;
} FlashSigmoidTensor;

/* What is computed; shared by forward and backward. Fill it with flash_sigmoid_problem_init(). */
typedef struct FlashSigmoidProblem {
  FlashSigmoidDType dtype; /* of q, k, v, out (and dout, dq, dk, dv) */
  int64_t batch;
  int64_t seqlen_q;
  int64_t seqlen_k;
  int64_t heads_q;
  int64_t heads_kv; /* heads_q % heads_kv == 0; query head h reads kv head h / (heads_q/heads_kv) */
  int64_t head_dim; /* 1..256; the CUDA kernels need a multiple of 8 */
  float scale;      /* multiplies q.k; flash_sigmoid_problem_init sets 1/sqrt(head_dim) */
  float sigmoid_bias; /* added to every score; see sigmoid_bias_per_batch and sigmoid_bias_auto below */
  /* Mask, bottom-right aligned (offset = seqlen_k - seqlen_q): key j is visible from query i when
   *   i + offset - window_left <= j <= i + offset + window_right,   -1 meaning unbounded.
   * causal != 0 is the window (-1, 0); it needs window_right to be -1 or 0. */
  int32_t causal;
  int64_t window_left;
  int64_t window_right;
  /* ALiBi: z -= slope[b, h] * |i + offset - j|. fp32 slopes at alibi_slopes[b*alibi_stride_batch + h];
   * alibi_stride_batch == 0 means one slope per query head, shared by the batch. NULL: no ALiBi. */
  const float* alibi_slopes;
  int64_t alibi_stride_batch;
  FlashSigmoidScoreFunction score_function;
  /* Which GPU kernel family to use: 0 = the best built one for the device, 80 = the Ampere path
   * (mma.sync, cp.async; also runs on Hopper), 90 = the Hopper path (wgmma; compute capability 9.0
   * only; head dims <= 128; its backward has no deterministic mode, so 90 with deterministic = 1
   * is Unsupported, and 0 then picks the Ampere path). */
  int32_t kernel_arch;
  /* Which mainloop of the family: NULL or "" = the default one; another name (a variant built
   * beside the default, listed in flash_sigmoid_build_info()) = that one only, for A/B
   * measurement. A variant that is not built is Unsupported. */
  const char* kernel_variant;
  /* Packed variable-length sequences (docs/varlen.md). Both NULL: the dense problem above. Both
   * set: `batch` sequences packed along the seqlen dimension of q/out (and of k, v): sequence b is
   * rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 of q (cu_seqlens_k likewise for k and v), int32
   * offsets [batch + 1], 0 first, non-decreasing. seqlen_q and seqlen_k are then the total rows
   * (the last offsets), the tensors' stride_batch is ignored, and each sequence is its own problem:
   * masks bottom-right aligned with its own lengths (offset = Sk_b - Sq_b), ALiBi distances
   * likewise. A sequence without keys gives O = 0 for its rows. Host pointers for the CPU
   * implementation (read and checked there); device pointers for the GPU path, never read on the
   * host (both GPU kernel families implement packed sequences, docs/varlen.md). */
  const int32_t* cu_seqlens_q;
  const int32_t* cu_seqlens_k;
  /* The longest sequence of each (>= 0; at least the longest, which the CPU path checks). The GPU
   * kernels size their grid by them. Ignored when cu_seqlens_* are NULL. */
  int64_t max_seqlen_q;
  int64_t max_seqlen_k;
  /* Per-sequence bias: NULL = sigmoid_bias for every sequence; else fp32 [batch], sequence (or
   * batch entry) b adds sigmoid_bias_per_batch[b] (a constant: no gradient; sigmoid_bias must then be
   * 0). Host memory for the CPU implementation, device memory for the GPU kernels (read there). */
  const float* sigmoid_bias_per_batch;
  /* Nonzero: each sequence's bias is -log(its seqlen_k) (the paper's recommendation; dense: one
   * -log(seqlen_k) for all), computed where the lengths are known, so no host value is needed.
   * A sequence without keys has no scores, so its bias never matters. With it, sigmoid_bias must be
   * 0 and sigmoid_bias_per_batch NULL. */
  int32_t sigmoid_bias_auto;
  /* KV cache (docs/kvcache.md; forward only, not with cu_seqlens). All NULL / 0: the dense problem.
   * seqused_k: NULL = every batch entry attends to all seqlen_k keys; else int32 [batch], entry b
   * attends to the first seqused_k[b] (0..seqlen_k) keys of its cache row only: masks bottom-right
   * aligned to that count (offset = seqused_k[b] - seqlen_q), ALiBi distances and the "auto" bias
   * likewise; no key at or past seqused_k[b] is read. */
  const int32_t* seqused_k;
  /* kv_batch_idx: NULL = batch entry b reads row b of k/v; else int32 [batch], entry b reads row
   * kv_batch_idx[b] (0..kv_batch-1) of k/v (flash-attn's cache_batch_idx). Not with block_table. */
  const int32_t* kv_batch_idx;
  /* Paged K/V: NULL = k/v are [kv_batch, seqlen_k, heads_kv, head_dim]. Else k/v are pages
   * [kv_batch (the number of pages), page_size, heads_kv, head_dim] (stride_batch steps a page,
   * stride_seq a slot), page_size a power of two >= 16, and seqlen_k (a multiple of page_size) is
   * each row's capacity: key j of batch entry b is slot j % page_size of page
   * block_table[b * block_table_stride_batch + j / page_size]. Entries past a row's used keys are
   * never read. */
  const int32_t* block_table;
  int64_t block_table_stride_batch; /* >= seqlen_k / page_size */
  int64_t page_size;
  /* Entries of k/v's batch dimension (cache rows, or pages with block_table); 0 = batch (and
   * then 0 is an error with block_table). Only read with kv_batch_idx or block_table. */
  int64_t kv_batch;
  /* KV cache on the GPU (the decode kernel, docs/kvcache.md): splits of each row's keys, summed in
   * fp32 (flash-attn's num_splits). 0 = chosen from the shapes and the device's SM count only (a
   * fixed launch for fixed shapes); 1..128 = that many. More than one split needs forward workspace
   * (flash_sigmoid_forward_workspace_size). The CPU implementation does not split (ignored). */
  int32_t num_splits;
  /* Attention dropout (training, docs/dropout.md): each entry of P = sigma(z) is dropped with
   * probability dropout_p, rounded to a multiple of 1/256 (p < 1/512 is no dropout), and the kept
   * entries are scaled by the inverse of the rounded keep rate; the backward, given the same seed,
   * regenerates the same mask (Philox, a function of seed, offset, sequence, head, row and key).
   * 0 <= dropout_p < 1; 0 = off. Not with a KV cache.
   * dropout_seed: two uint64, {seed, offset}, 8-byte aligned, required when dropout_p > 0: device
   * memory for the GPU path (read by the kernels, so a captured CUDA graph replays with what is
   * stored there when it runs), host memory for the CPU implementation. */
  float dropout_p;
  const uint64_t* dropout_seed;
  /* ALiBi only: a shift of the query positions against the keys' in the ALiBi distance, which
   * becomes |i + offset + alibi_offset - j| (the mask keeps its offset). For a problem that is a
   * piece of a longer sequence, e.g. one shard pair of context parallelism
   * (flash_sigmoid.parallel): queries at global positions q0.., keys at k0.. give alibi_offset =
   * (q0 - k0) - (seqlen_k - seqlen_q). |alibi_offset| < 2^30; 0 = the plain distance (default).
   * Not with a KV cache. */
  int64_t alibi_offset;
} FlashSigmoidProblem;

typedef struct FlashSigmoidForwardArgs {
  FlashSigmoidProblem problem;
  FlashSigmoidTensor q;   /* [batch, seqlen_q, heads_q, head_dim] */
  FlashSigmoidTensor k;   /* [batch, seqlen_k, heads_kv, head_dim] */
  FlashSigmoidTensor v;   /* [batch, seqlen_k, heads_kv, head_dim] */
  FlashSigmoidTensor out; /* [batch, seqlen_q, heads_q, head_dim], written */
} FlashSigmoidForwardArgs;

typedef struct FlashSigmoidBackwardArgs {
  FlashSigmoidProblem problem;
  FlashSigmoidTensor q, k, v; /* as in the forward */
  FlashSigmoidTensor dout;    /* [batch, seqlen_q, heads_q, head_dim] */
  FlashSigmoidTensor dq;      /* [batch, seqlen_q, heads_q, head_dim], written */
  FlashSigmoidTensor dk;      /* [batch, seqlen_k, heads_kv, head_dim], written (summed over the group) */
  FlashSigmoidTensor dv;      /* [batch, seqlen_k, heads_kv, head_dim], written (summed over the group) */
  int32_t deterministic;      /* nonzero: bitwise-reproducible gradients */
} FlashSigmoidBackwardArgs;

/* The append step of a KV-cache call (flash-attn's flash_attn_with_kvcache with new k, v), run
 * before the forward: writes seqlen_new new tokens of each batch entry into its cache row at
 * positions cache_seqlens[b] .. cache_seqlens[b] + seqlen_new - 1 (through kv_batch_idx or
 * block_table, as the forward reads them), rotated first when rotary tables are given; and rotates
 * q into q_rotated. The forward then runs with seqused_k[b] = cache_seqlens[b] + seqlen_new. */
typedef struct FlashSigmoidKvAppendArgs {
  /* The cache as the forward sees it: dtype, batch, heads_q, heads_kv, head_dim, seqlen_k (the
   * capacity), kv_batch_idx / block_table / block_table_stride_batch / page_size / kv_batch; and
   * seqlen_q, causal, window_left/right for q's rotary positions. seqused_k must be NULL. */
  FlashSigmoidProblem problem;
  const int32_t* cache_seqlens; /* int32 [batch], tokens already in each row (>= 0) */
  int64_t seqlen_new;           /* >= 0; cache_seqlens[b] + seqlen_new <= seqlen_k */
  FlashSigmoidTensor k_new;     /* [batch, seqlen_new, heads_kv, head_dim] */
  FlashSigmoidTensor v_new;     /* [batch, seqlen_new, heads_kv, head_dim] */
  FlashSigmoidTensor k_cache;   /* written: as the forward's k (rows or pages) */
  FlashSigmoidTensor v_cache;   /* written: as the forward's v */
  /* Rotary (both NULL: none): fp32 tables [rotary_seqlen, rotary_dim / 2], row r at
   * rotary_cos + r * rotary_stride. Computed in fp32, rounded once to dtype. The new k's token i
   * is at position cache_seqlens[b] + i; q's token i at cache_seqlens[b] + i with causal or a
   * window, else at cache_seqlens[b] (flash-attn 2.5.6). Interleaved: channel pairs (2i, 2i + 1);
   * else (i, i + rotary_dim / 2). Channels >= rotary_dim are copied. */
  const float* rotary_cos;
  const float* rotary_sin;
  int64_t rotary_stride;
  int64_t rotary_seqlen;
  int64_t rotary_dim; /* even, 2..head_dim */
  int32_t rotary_interleaved;
  /* q [batch, seqlen_q, heads_q, head_dim] and q_rotated (written, same shape; may not alias q):
   * read and written only with rotary tables and q.data non-NULL. */
  FlashSigmoidTensor q;
  FlashSigmoidTensor q_rotated;
  /* NULL, or int32 [batch] (written): cache_seqlens[b] + seqlen_new, the forward's seqused_k, so a
   * GPU caller needs no separate addition. On the GPU it is clamped to 0..seqlen_k (the values are
   * not checked there). */
  int32_t* seqused_k_out;
} FlashSigmoidKvAppendArgs;

/* Defaults for a problem of this head dim: fp16, scale 1/sqrt(head_dim), bias 0, no mask, no
 * ALiBi, sigmoid via exp2, best kernel, dense (cu_seqlens NULL, max lengths 0, no per-sequence or
 * auto bias, no KV-cache field); sizes other than head_dim are 0 and must be set. */
FLASH_SIGMOID_EXPORT FlashSigmoidProblem flash_sigmoid_problem_init(int64_t head_dim);

/* A tensor view of contiguous [batch, seqlen, heads, head_dim] memory. */
FLASH_SIGMOID_EXPORT FlashSigmoidTensor flash_sigmoid_contiguous_tensor(void* data, int64_t seqlen,
                                                                        int64_t heads, int64_t head_dim);

/* GPU path. can_implement checks the arguments and that a kernel for them is built and runs on
 * the current device, touching no memory. forward/backward launch on `stream` and return without
 * synchronising; they allocate nothing: the caller passes `workspace` of at least the queried size
 * (the backward's fp32 dq accumulator; the forward's only for a KV-cache problem with more than one
 * split: the splits' fp32 partial outputs). A KV-cache forward (seqused_k, kv_batch_idx or
 * block_table set) runs the decode kernel: seqlen_q * heads_q / heads_kv <= 64 query rows per kv
 * head, any mask, ALiBi, sigmoid_bias_auto or sigmoid_bias_per_batch (device memory, like every
 * KV-cache pointer there; their values are not checked on the GPU). */
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_can_implement_forward(const FlashSigmoidForwardArgs* args);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_can_implement_backward(const FlashSigmoidBackwardArgs* args);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_forward_workspace_size(const FlashSigmoidForwardArgs* args,
                                                                             size_t* bytes);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_backward_workspace_size(const FlashSigmoidBackwardArgs* args,
                                                                              size_t* bytes);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_forward(const FlashSigmoidForwardArgs* args, void* workspace,
                                                              size_t workspace_bytes, FlashSigmoidStream stream);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_backward(const FlashSigmoidBackwardArgs* args, void* workspace,
                                                               size_t workspace_bytes, FlashSigmoidStream stream);

/* CPU implementation: host pointers, fp32 accumulation, fp32/fp16/bf16, `num_threads` workers
 * (0: one per hardware thread). Blocking. Independent of the GPU kernels' code. */
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_cpu_forward(const FlashSigmoidForwardArgs* args, int num_threads);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_cpu_backward(const FlashSigmoidBackwardArgs* args,
                                                                   int num_threads);

/* The attention-dropout keep mask (docs/dropout.md) that a call with this dropout_p and
 * {seed, offset} applies, on the host: keep[((b * heads_q + h) * seqlen_q + i) * seqlen_k + j] is 1
 * where entry (query i, key j) of query head h of batch entry batch_index + b is kept and 0 where it
 * is dropped, for b < batch, h < heads_q, i < seqlen_q, j < seqlen_k (row-major [batch, heads_q,
 * seqlen_q, seqlen_k] bytes). The mask depends on the positions only, never on the masks, ALiBi or
 * values: entries that a causal or window mask hides are reported as the generator draws them.
 * Packed sequences: sequence s is batch entry s with its own lengths (batch_index s, batch 1), as
 * the CPU and GPU paths drop it. dropout_seed: two uint64 in host memory (the GPU path's device pair
 * copied to the host gives the same mask); not read when dropout_p rounds to no dropout (every
 * entry is then 1). Blocking, single-threaded. */
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_cpu_dropout_mask(float dropout_p, const uint64_t* dropout_seed,
                                                                       int64_t batch_index, int64_t batch,
                                                                       int64_t heads_q, int64_t seqlen_q,
                                                                       int64_t seqlen_k, uint8_t* keep);

/* The append step (FlashSigmoidKvAppendArgs). The CPU one is blocking and single-threaded (it
 * touches only the new tokens; num_threads is checked and reserved) and checks the index values.
 * The GPU one launches one kernel on `stream` (every pointer device memory; needs the decode
 * kernel's dtype and a bucket >= head_dim built) and does not read the values on the host: a new
 * token whose position is past seqlen_k, or whose cache row or page is outside k_cache, is not
 * written; rotary positions past the table use its last row. */
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_cpu_kvcache_append(const FlashSigmoidKvAppendArgs* args,
                                                                         int num_threads);
FLASH_SIGMOID_EXPORT FlashSigmoidStatus flash_sigmoid_kvcache_append(const FlashSigmoidKvAppendArgs* args,
                                                                     FlashSigmoidStream stream);

/* The message of the last failed call on this thread ("" after a success). */
FLASH_SIGMOID_EXPORT const char* flash_sigmoid_last_error(void);
/* Version, CUDA version, built architectures and every compiled kernel key, one per line. */
FLASH_SIGMOID_EXPORT const char* flash_sigmoid_build_info(void);
FLASH_SIGMOID_EXPORT const char* flash_sigmoid_status_name(FlashSigmoidStatus status);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLASH_SIGMOID_FLASH_SIGMOID_H_ */

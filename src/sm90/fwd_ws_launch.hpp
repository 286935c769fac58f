// Layer: sm90. The host side of the warp-specialized Hopper forward for one compiled key (Element,
// head-dim bucket, mask kind): builds the TMA descriptors of Q, K and V from the validated
// problem, picks the kernel for the run-time choices (ALiBi on/off, score function) and launches it.
//
// Owns: whether TMA can describe the problem's tensors, and what happens when it cannot: at D 64
// and 128 the lockstep sm90 forward (fwd_launch.hpp) serves the call, with the same results; above,
// declines() tells the registry to pick another family. TMA needs a 16-byte-aligned base,
// strides that are multiples of 16 bytes below 2^40 bytes, and non-zero extents below 2^31 (an
// empty key set is served without K/V descriptors of its own). Packed (varlen) tensors are
// described whole, (total rows, head_dim, heads, 1); the lockstep fallback reads packed sequences
// too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <cuda_runtime_api.h>

#include <cute/tensor.hpp>

#include "common/launch.hpp"
#include "common/params.hpp"
#include "common/variant_dispatch.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"
#include "sm90/fwd_launch.hpp"
#include "sm90/fwd_ws_kernel.hpp"
#include "sm90/fwd_ws_traits.hpp"

namespace flash_sigmoid::sm90 {

// Whether one (seq, head_dim, head, batch) tensor of 2-byte elements can be a TMA tensor.
inline bool tma_can_describe(const StridedPtr& t, int seqlen, int heads, int batch) {
  if (seqlen <= 0 || heads <= 0 || batch <= 0) return false;
  if (reinterpret_cast<uintptr_t>(t.ptr) % 16 != 0) return false;
  const int64_t strides[3] = {t.stride_seq, t.stride_head, t.stride_batch};
  const int extents[3] = {seqlen, heads, batch};
  for (int i = 0; i < 3; ++i) {
    if (extents[i] == 1) continue;  // never stepped along (tma_stride replaces it)
    if (strides[i] <= 0 || strides[i] % 8 != 0 || strides[i] >= (int64_t(1) << 39)) return false;
  }
  return true;
}

// A stride TMA accepts for an extent of 1, whose stride is never used.
inline int64_t tma_stride(int64_t stride, int extent) { return extent == 1 ? 8 : stride; }

// Exp2Form: how the default score function (exp2) is evaluated: SigmoidViaExp2, or a form with the
// same values to rounding (SigmoidViaExp2Relu: no clamp, P packed with cvt.rn.relu and O scaled
// once at the end; SigmoidViaExp2ReluMix: part of its reciprocals by rcp.approx).
// kDropout: also built with attention dropout (the default; the other variants are measured without).
template <class Element, int kHeadDim, MaskKind kMask, WsTiles kTiles, bool kPingPong, bool kPersistent = false,
          class Exp2Form = SigmoidViaExp2, bool kDropout = false>
struct Sm90FwdWsLaunch {
  // A persistent block stages O apart from Q (its shared memory holds both up to D = 128).
  using Traits = Sm90FwdWsTraits<Element, kHeadDim, kTiles, kPersistent>;
  using Params = Sm90FwdWsParams<Traits>;

  static size_t workspace_bytes(const ForwardParams& /*params*/) { return 0; }

  // The lockstep cp.async kernel exists at D 64 and 128 only (fwd_traits.hpp).
  static constexpr bool kHasCpAsyncFallback = sm90_fwd_tile_shape(kHeadDim).head_dim == kHeadDim;

  // nullptr when this kernel serves the problem; otherwise why not (the registry then asks the
  // next family, the sm80 one).
  static const char* declines(const ForwardParams& params) {
    const ProblemParams& p = params.problem;
    if (p.batch == 0 || p.total_q == 0) return nullptr;  // nothing to do: the API never launches it
    if (tma_can_serve(params)) return nullptr;
    if (kDropout && p.dropout_threshold != 0) {
      return "TMA cannot describe q, k or v (it needs a 16-byte aligned base and strides that are positive multiples "
             "of 8 elements below 2^39) and the sm90 family's cp.async forward has no dropout";
    }
    if (kHasCpAsyncFallback) return nullptr;
    return "TMA cannot describe q, k or v (it needs a 16-byte aligned base and strides that are positive multiples "
           "of 8 elements below 2^39) and the sm90 family has no cp.async forward at this head dim";
  }

  // The batch extent TMA sees: packed tensors are one run of rows.
  static int tma_batch(const ProblemParams& p) { return is_packed(p) ? 1 : p.batch; }

  // An empty key set (total_k == 0) loads nothing: every tile stores O = 0, and K's and V's
  // descriptors, which no load uses, describe Q's memory (TMA has no zero extent).
  static bool tma_can_serve(const ForwardParams& params) {
    const ProblemParams& p = params.problem;
    const int batch = tma_batch(p);
    return tma_can_describe(params.q, p.total_q, p.heads_q, batch) &&
           (p.total_k == 0 || (tma_can_describe(params.k, p.total_k, p.heads_kv, batch) &&
                               tma_can_describe(params.v, p.total_k, p.heads_kv, batch)));
  }

  static Params make_params(const ForwardParams& params) {
    using namespace cute;
    const ProblemParams& p = params.problem;
    Params kp;
    static_cast<ForwardParams&>(kp) = params;
    const int batch = tma_batch(p);
    auto gmem = [&](const StridedPtr& t, int rows, int heads) {
      return make_tensor(make_gmem_ptr(static_cast<Element const*>(t.ptr)),
                         make_shape(int32_t(rows), int32_t(p.head_dim), int32_t(heads), int32_t(batch)),
                         make_stride(tma_stride(t.stride_seq, rows), _1{}, tma_stride(t.stride_head, heads),
                                     tma_stride(t.stride_batch, batch)));
    };
    auto q = gmem(params.q, p.total_q, p.heads_q);
    const bool no_keys = p.total_k == 0;
    auto k = no_keys ? q : gmem(params.k, p.total_k, p.heads_kv);
    auto v = no_keys ? q : gmem(params.v, p.total_k, p.heads_kv);
    kp.tma_q = make_tma_copy(SM90_TMA_LOAD{}, q, typename Traits::SmemLayoutQ{},
                             Shape<Int<Traits::kBlockM>, Int<kHeadDim>>{}, _1{});
    kp.tma_k = make_tma_copy(SM90_TMA_LOAD{}, k, take<0, 2>(typename Traits::SmemLayoutKV{}),
                             Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{}, _1{});
    kp.tma_v = make_tma_copy(SM90_TMA_LOAD{}, v, take<0, 2>(typename Traits::SmemLayoutKV{}),
                             Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{}, _1{});
    kp.shape_q = shape(q);
    kp.shape_k = shape(k);
    return kp;
  }

  static cudaError_t run(const ForwardParams& params, cudaStream_t stream) {
    if (!tma_can_serve(params)) {
      if constexpr (kHasCpAsyncFallback) {
        return Sm90Fwd<Element, kHeadDim, kMask>::run(params, stream);
      } else {
        return cudaErrorNotSupported;  // declines() said so; the registry does not pick this kernel
      }
    }
    const Params kernel_params = make_params(params);
    dim3 grid = Sm90FwdWsScheduler<Traits>::grid(params.problem);
    if constexpr (kPersistent) {
      int device = 0, num_sms = 0;
      cudaError_t err = cudaGetDevice(&device);
      if (err == cudaSuccess) err = cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device);
      if (err != cudaSuccess) return err;
      grid = Sm90FwdWsPersistentScheduler<Traits>::grid(params.problem, num_sms);
    }
    const LaunchShape shape{grid, Traits::kNThreads, Traits::kSmemBytes};
    return launch_score_variant<kMask, Exp2Form, kDropout>(params.problem, [&](auto variant) {
      return launch_kernel(&sm90_fwd_ws_kernel<Traits, decltype(variant), kPingPong, kPersistent>, shape, stream,
                           kernel_params);
    });
  }
};

// The kernel table's entry points: 128 x 128 tiles with and without ping-pong between the consumer
// warpgroups, and the wide and deep tile rows with ping-pong; the persistent grid; the clamp-free
// score function (ws_relu).
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWs = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kSquare, true, false, SigmoidViaExp2, true>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsLockstep = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kSquare, false>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsWide = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kWide, true>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsDeep = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kDeep, true>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsPersistent = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kSquare, true, true>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsRelu = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kSquare, true, false, SigmoidViaExp2Relu>;
template <class Element, int kHeadDim, MaskKind kMask>
using Sm90FwdWsMix4 = Sm90FwdWsLaunch<Element, kHeadDim, kMask, WsTiles::kSquare, true, false, SigmoidViaExp2ReluMix<4>>;

}  // namespace flash_sigmoid::sm90

// Layer: policies. ALiBi as a score modifier (DESIGN §1): z -= slope[b, h] * |q_idx + offset - k_idx|,
// with the same bottom-right offset (seqlen_k - seqlen_q) as the mask plus the problem's
// alibi_offset (0 unless the problem is a piece of a longer sequence). kEnabled is fixed at compile
// time so the unmodified kernel pays nothing. Does not own: where slopes come from in memory beyond
// (batch_idx, head_idx) indexing, or which elements a thread holds.
#pragma once

#include <cstdint>

#include "base/host_device.hpp"

namespace flash_sigmoid {

template <bool kEnabled_>
struct Alibi {
  static constexpr bool kEnabled = kEnabled_;
  float slope = 0.f;  // already multiplied by the score function's input scale where a kernel wants
  int offset = 0;     // seqlen_k - seqlen_q + alibi_offset

  FLASH_SIGMOID_HOST_DEVICE static Alibi make(const float* slopes, int64_t stride_batch, int batch_idx,
                                             int head_idx, int offset, float input_scale) {
    Alibi a;
    if constexpr (kEnabled) {
      a.slope = slopes[batch_idx * stride_batch + head_idx] * input_scale;
      a.offset = offset;
    }
    return a;
  }

  // The term added to the (scaled) score of (q_idx, k_idx).
  FLASH_SIGMOID_HOST_DEVICE float term(int q_idx, int k_idx) const {
    if constexpr (kEnabled) {
      int d = q_idx + offset - k_idx;
      return -slope * static_cast<float>(d < 0 ? -d : d);
    } else {
      return 0.f;
    }
  }
};

}  // namespace flash_sigmoid

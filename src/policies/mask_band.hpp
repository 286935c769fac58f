// Layer: policies. The mask as a band of visible keys per query row (DESIGN §1).
//
// Owns: which (q_idx, k_idx) pairs are visible, with causal and window bounds aligned to the bottom
// right (offset = seqlen_k - seqlen_q) and the seqlen tail (k_idx < seqlen_k). Whether a left or
// right bound exists is fixed at compile time (kHasLeft, kHasRight); its value is a run-time
// number. Causal is the right bound 0 without a left bound.
// Does not own: tiles, threads or fragments (see common/block_range.hpp for block ranges).
#pragma once

#include <cstdint>

#include "base/host_device.hpp"

namespace flash_sigmoid {

// The three bound-presence combinations that kernels are compiled for. A window that is bounded on
// the left only is run as kBand with right = seqlen_k (never binding).
enum class MaskKind : int { kNone = 0, kRight = 1, kBand = 2 };

template <bool kHasLeft_, bool kHasRight_>
struct MaskBand {
  static constexpr bool kHasLeft = kHasLeft_;
  static constexpr bool kHasRight = kHasRight_;
  static constexpr bool kIsMasked = kHasLeft || kHasRight;

  int seqlen_q = 0;
  int seqlen_k = 0;
  int left = 0;   // used when kHasLeft: k_idx >= q_idx + offset - left
  int right = 0;  // used when kHasRight: k_idx <= q_idx + offset + right

  FLASH_SIGMOID_HOST_DEVICE int offset() const { return seqlen_k - seqlen_q; }

  // First visible key of row q_idx (may exceed seqlen_k: then the row sees nothing).
  FLASH_SIGMOID_HOST_DEVICE int k_begin(int q_idx) const {
    if constexpr (kHasLeft) {
      int lo = q_idx + offset() - left;
      return lo > 0 ? lo : 0;
    } else {
      return 0;
    }
  }

  // One past the last visible key of row q_idx (may be <= k_begin: then the row sees nothing).
  FLASH_SIGMOID_HOST_DEVICE int k_end(int q_idx) const {
    if constexpr (kHasRight) {
      int hi = q_idx + offset() + right + 1;
      return hi < seqlen_k ? hi : seqlen_k;
    } else {
      return seqlen_k;
    }
  }

  // First query row that sees key k_idx.
  FLASH_SIGMOID_HOST_DEVICE int q_begin(int k_idx) const {
    if constexpr (kHasRight) {
      int lo = k_idx - offset() - right;
      return lo > 0 ? lo : 0;
    } else {
      return 0;
    }
  }

  // One past the last query row that sees key k_idx.
  FLASH_SIGMOID_HOST_DEVICE int q_end(int k_idx) const {
    if constexpr (kHasLeft) {
      int hi = k_idx - offset() + left + 1;
      return hi < seqlen_q ? hi : seqlen_q;
    } else {
      return seqlen_q;
    }
  }

  // Whether key k_idx is visible from query q_idx. Rows past seqlen_q and keys past seqlen_k (the
  // tails of partial tiles) are never visible.
  FLASH_SIGMOID_HOST_DEVICE bool visible(int q_idx, int k_idx) const {
    bool ok = q_idx < seqlen_q && k_idx < seqlen_k;
    if constexpr (kHasLeft) ok = ok && k_idx >= q_idx + offset() - left;
    if constexpr (kHasRight) ok = ok && k_idx <= q_idx + offset() + right;
    return ok;
  }
};

using MaskNone = MaskBand<false, false>;
using MaskRight = MaskBand<false, true>;
using MaskTwoSided = MaskBand<true, true>;

template <MaskKind kKind>
struct MaskForKind;
template <>
struct MaskForKind<MaskKind::kNone> {
  using type = MaskNone;
};
template <>
struct MaskForKind<MaskKind::kRight> {
  using type = MaskRight;
};
template <>
struct MaskForKind<MaskKind::kBand> {
  using type = MaskTwoSided;
};

// The user's (causal, window_left, window_right) reduced to the compiled bound presence and the
// run-time bound values. Bounds that can never bind (|bound| >= the other sequence's length) are
// dropped, so e.g. window (seqlen_k, -1) runs unmasked.
struct ResolvedMask {
  MaskKind kind = MaskKind::kNone;
  int left = 0;
  int right = 0;
};

// With offset o = seqlen_k - seqlen_q and rows i in [0, seqlen_q):
//  - the right bound j <= i + o + right hides a key of some row iff it hides one of row 0, i.e.
//    o + right < seqlen_k - 1, i.e. right < seqlen_q - 1;
//  - the left bound j >= i + o - left hides a key of some row iff it hides key 0 of the last row,
//    i.e. seqlen_q - 1 + o - left > 0, i.e. left < seqlen_k - 1.
// Expects validated arguments (windows >= -1, sizes within int range).
FLASH_SIGMOID_HOST_DEVICE ResolvedMask resolve_mask(bool causal, int64_t window_left, int64_t window_right,
                                                    int64_t seqlen_q, int64_t seqlen_k) {
  if (causal) window_right = 0;
  const bool has_right = window_right >= 0 && window_right < seqlen_q - 1;
  const bool has_left = window_left >= 0 && window_left < seqlen_k - 1;
  ResolvedMask r;
  if (has_left) {
    r.kind = MaskKind::kBand;
    r.left = static_cast<int>(window_left);
    // A left-only window runs as a band whose right bound (seqlen_q > seqlen_q - 1) never binds.
    r.right = static_cast<int>(has_right ? window_right : seqlen_q);
  } else if (has_right) {
    r.kind = MaskKind::kRight;
    r.right = static_cast<int>(window_right);
  }
  return r;
}

}  // namespace flash_sigmoid

// Layer: CPU implementation. Attention dropout's keep mask over a rectangle of (query, key)
// entries, and its application to the forward's and backward's tiles (docs/dropout.md).
//
// The one piece of src/policies/ the CPU implementation uses: the mask is a definition (which
// entries a (seed, offset) drops), not an arithmetic choice, and the CPU path must drop exactly
// the entries the GPU kernels drop, so both read policies/dropout.hpp (Philox4x32-7, the 16 x 32
// block layout, the keep rule). Everything else of the CPU implementation stays written from
// DESIGN §1. The tests check the mapping here against the per-entry reference dropout_keeps.
//
// Owns: how a tile's entries are filled from whole Philox calls (one call per 16 entries of a
// lane, lanes that own none of the rectangle's entries skipped), and the multiplication of kept
// entries by the rescale. Does not own: where the seed comes from (the API layer reads it from
// the problem), or which rows and keys a tile holds (the callers pass positions within the
// sequence, and the sequence's index as batch).
#pragma once

#include <cstdint>

#include "policies/dropout.hpp"

namespace flash_sigmoid::cpu_impl {

// A dense part's dropout: the policy's parameters and the batch index of the part's batch entry 0
// in the call (a packed sequence's index; 0 for a dense call), so that head h of entry b uses the
// mask of (first_batch + b) * heads_q + h.
struct CpuDropout {
  DropoutParams params;  // params.threshold 0: no dropout
  int64_t first_batch = 0;

  bool enabled() const { return params.enabled(); }
  uint32_t bh(int64_t batch_idx, int64_t heads_q, int64_t head_idx) const {
    return static_cast<uint32_t>((first_batch + batch_idx) * heads_q + head_idx);
  }
};

// keep[(i - q0) * q_stride + (j - k0) * k_stride] = 1 if entry (i, j) of head bh is kept, else 0,
// for i in [q0, q0 + rows), j in [k0, k0 + keys): one Philox call per (16-row x 32-key block,
// lane) that owns an entry of the rectangle.
inline void dropout_keep_tile(const DropoutParams& d, uint32_t bh, int64_t q0, int64_t rows, int64_t k0, int64_t keys,
                              uint8_t* keep, int64_t q_stride, int64_t k_stride) {
  if (rows <= 0 || keys <= 0) return;
  const int64_t q1 = q0 + rows, k1 = k0 + keys;
  for (int64_t rb = q0 / kDropoutBlockRows; rb * kDropoutBlockRows < q1; ++rb) {
    const int64_t r_base = rb * kDropoutBlockRows;
    for (int64_t kb = k0 / kDropoutBlockKeys; kb * kDropoutBlockKeys < k1; ++kb) {
      const int64_t c_base = kb * kDropoutBlockKeys;
      for (uint32_t lane = 0; lane < 32; ++lane) {
        // The lane owns rows lane / 4 + {0, 8} and keys 2 (lane % 4) + {0, 1} + 8 g, g = 0..3 of the
        // block (policies/dropout.hpp): skip it when none of them is in the rectangle.
        const int64_t r_lo = r_base + lane / 4, c_lo = c_base + 2 * (lane % 4);
        const bool any_row = (r_lo >= q0 && r_lo < q1) || (r_lo + 8 >= q0 && r_lo + 8 < q1);
        bool any_key = false;
        for (int64_t g = 0; g < 4 && !any_key; ++g) {
          const int64_t c = c_lo + 8 * g;  // and c + 1
          any_key = c + 1 >= k0 && c < k1;
        }
        if (!any_row || !any_key) continue;
        uint32_t bytes[4];
        dropout_block_bytes(d, bh, static_cast<uint32_t>(rb), static_cast<uint32_t>(kb), lane, bytes);
        for (uint32_t byte = 0; byte < 16; ++byte) {
          // The inverse of dropout_slot: byte (r / 8) * 8 + (c / 8) * 2 + c % 2 of lane
          // (r % 8) * 4 + (c % 8) / 2.
          const int64_t i = r_base + (byte / 8) * 8 + lane / 4;
          const int64_t j = c_base + ((byte % 8) / 2) * 8 + (lane % 4) * 2 + byte % 2;
          if (i < q0 || i >= q1 || j < k0 || j >= k1) continue;
          keep[(i - q0) * q_stride + (j - k0) * k_stride] = dropout_byte(bytes, byte) >= d.threshold ? 1 : 0;
        }
      }
    }
  }
}

// tile[(i - q0) * q_stride + (j - k0) * k_stride] *= rescale where kept, = 0 where dropped, for
// the rectangle of dropout_keep_tile; `keep` is scratch of at least rows * keys bytes. Entries that
// are 0 (masked by the attention mask) stay 0.
inline void apply_dropout(const DropoutParams& d, uint32_t bh, int64_t q0, int64_t rows, int64_t k0, int64_t keys,
                          float* tile, int64_t q_stride, int64_t k_stride, uint8_t* keep) {
  dropout_keep_tile(d, bh, q0, rows, k0, keys, keep, keys, 1);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* kr = keep + r * keys;
    float* tr = tile + r * q_stride;
    for (int64_t c = 0; c < keys; ++c) tr[c * k_stride] = kr[c] ? tr[c * k_stride] * d.rescale : 0.0f;
  }
}

// apply_dropout on two tiles of the same rectangle and layout at once (one mask).
inline void apply_dropout(const DropoutParams& d, uint32_t bh, int64_t q0, int64_t rows, int64_t k0, int64_t keys,
                          float* tile_a, float* tile_b, int64_t q_stride, int64_t k_stride, uint8_t* keep) {
  dropout_keep_tile(d, bh, q0, rows, k0, keys, keep, keys, 1);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* kr = keep + r * keys;
    float* ar = tile_a + r * q_stride;
    float* br = tile_b + r * q_stride;
    for (int64_t c = 0; c < keys; ++c) {
      ar[c * k_stride] = kr[c] ? ar[c * k_stride] * d.rescale : 0.0f;
      br[c * k_stride] = kr[c] ? br[c * k_stride] * d.rescale : 0.0f;
    }
  }
}

// The mask of flash_sigmoid_cpu_dropout_mask (validated by the API layer): keep[((b * heads_q + h) *
// seqlen_q + i) * seqlen_k + j] for batch entries first_batch + b, b < batch.
void dropout_mask(const DropoutParams& d, int64_t first_batch, int64_t batch, int64_t heads_q, int64_t seqlen_q,
                  int64_t seqlen_k, uint8_t* keep);

}  // namespace flash_sigmoid::cpu_impl

// Layer: policies. Attention dropout's mask (issue 20, docs/dropout.md): which (query, key) entries
// of P = sigma(Z) a call keeps, as a pure function of (seed, offset, batch * heads_q + head, query
// row, key column), so that every kernel family, the CPU implementation and the backward regenerate
// the same mask without storing it.
//
// Owns: the generator (Philox4x32, Salmon et al. 2011, the counter-based generator cuRAND and
// PyTorch's CUDA generator use), the counter layout, the keep rule and the rescale. Does not own:
// where seed and offset come from (the API: a caller's value, or torch's generator), or which
// elements a thread holds (each kernel maps its accumulator onto the layout below).
//
// Layout. The scores of one (batch, head) are cut into blocks of 16 query rows x 32 keys. One
// Philox call, counter (key block, row block, batch * heads_q + head, lane | offset << 5), gives
// 16 bytes to lane 0..31 of a block; entry (r, c) of the block (r = row % 16, c = key % 32) is byte
//   (r / 8) * 8 + (c / 8) * 2 + c % 2   of lane   (r % 8) * 4 + (c % 8) / 2.
// That is the m16n8 accumulator's ownership (mma.sync, and every warp's 16 rows of a wgmma
// accumulator): lane l holds rows l / 4 and l / 4 + 8, columns 2 (l % 4) + {0, 1} of each 8-column
// group, so a kernel whose scores are (queries x keys) calls Philox once per 16 of its scores and
// uses all 16 bytes. Kernels holding S^T (keys x queries) need two calls per 16 scores.
//
// Keep rule. p is rounded to a multiple of 1/256 (threshold = round(256 p)); an entry is dropped
// when its byte is below the threshold, so exactly threshold / 256 of the byte values drop, and
// kept entries are scaled by 256 / (256 - threshold), the inverse of the true keep rate: the
// expectation of the dropped P is P exactly (flash-attn rounds p to 8 bits as well).
#pragma once

#include <cstdint>

#include "base/host_device.hpp"

namespace flash_sigmoid {

// Philox4x32-R: `rounds` rounds of the Philox S-box on a 128-bit counter under a 64-bit key.
// Random123's Philox4x32-10 is rounds = 10 (its known-answer vectors are tested); dropout uses 7,
// the fewest rounds that Salmon et al. report passing BigCrush (10 adds a safety margin that a
// dropout mask does not need: three rounds fewer per 16 scores).
template <int kRounds>
FLASH_SIGMOID_HOST_DEVICE void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  FLASH_SIGMOID_UNROLL
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

inline constexpr int kDropoutRounds = 7;
inline constexpr int kDropoutBlockRows = 16;
inline constexpr int kDropoutBlockKeys = 32;

// A call's dropout: seed and offset (PyTorch's generator state for the call), and p as the byte
// threshold. threshold 0 is no dropout.
struct DropoutParams {
  uint64_t seed = 0;
  uint64_t offset = 0;
  uint32_t threshold = 0;  // 0 .. 255: entries whose byte is below it are dropped
  float rescale = 1.f;     // 256 / (256 - threshold)

  FLASH_SIGMOID_HOST_DEVICE bool enabled() const { return threshold != 0; }
};

// p in [0, 1) as the keep rule uses it: threshold = round(256 p), at most 255 (p >= 254.5 / 256), so
// at least 1/256 of the entries is kept.
FLASH_SIGMOID_HOST_DEVICE DropoutParams make_dropout(float p, uint64_t seed, uint64_t offset) {
  DropoutParams d;
  d.seed = seed;
  d.offset = offset;
  const float scaled = p * 256.f + 0.5f;
  d.threshold = scaled <= 0.f ? 0u : (scaled >= 255.f ? 255u : static_cast<uint32_t>(scaled));
  d.rescale = 256.f / static_cast<float>(256u - d.threshold);
  return d;
}

// The 16 bytes of `lane` in block (row_block, key_block) of head `bh` (= batch * heads_q + head).
FLASH_SIGMOID_HOST_DEVICE void dropout_block_bytes(const DropoutParams& d, uint32_t bh, uint32_t row_block,
                                                   uint32_t key_block, uint32_t lane, uint32_t out[4]) {
  const uint32_t counter[4] = {key_block, row_block, bh, lane | (static_cast<uint32_t>(d.offset) << 5)};
  // The offset's bits that do not fit beside the lane go into the key.
  const uint32_t key[2] = {static_cast<uint32_t>(d.seed),
                           static_cast<uint32_t>(d.seed >> 32) ^ static_cast<uint32_t>(d.offset >> 27)};
  philox4x32<kDropoutRounds>(counter, key, out);
}

// The keep test's constants for threshold t (1..255): (256 - t) in every byte, and its low 7 bits.
// t = 0 (no dropout) must not reach it (256 does not fit a byte): the kernels that use it are
// launched only when dropout is enabled.
struct DropoutComplement {
  uint32_t bytes, low;
  FLASH_SIGMOID_HOST_DEVICE explicit DropoutComplement(const DropoutParams& dropout)
      : bytes((256u - dropout.threshold) * 0x01010101u), low(bytes & 0x7F7F7F7Fu) {}
};

// Bit 7 of each byte of the result: whether that byte of w is kept (>= the threshold), four at once
// (common/dropout_fragment.hpp explains the carry). Other bits are unspecified.
FLASH_SIGMOID_HOST_DEVICE uint32_t dropout_keep_flags(uint32_t w, DropoutComplement const& c) {
  const uint32_t carry_in = (w & 0x7F7F7F7Fu) + c.low;           // bit 7: the carry into bit 7
  return (w & c.bytes) | (w & carry_in) | (c.bytes & carry_in);  // majority: the carry out of bit 7
}

// Where entry (row, key) of a head lives in the layout: lane and byte of its block.
struct DropoutSlot {
  uint32_t row_block, key_block, lane, byte;
};
FLASH_SIGMOID_HOST_DEVICE DropoutSlot dropout_slot(int64_t row, int64_t key) {
  const uint32_t r = static_cast<uint32_t>(row % kDropoutBlockRows);
  const uint32_t c = static_cast<uint32_t>(key % kDropoutBlockKeys);
  return DropoutSlot{static_cast<uint32_t>(row / kDropoutBlockRows), static_cast<uint32_t>(key / kDropoutBlockKeys),
                     (r % 8) * 4 + (c % 8) / 2, (r / 8) * 8 + (c / 8) * 2 + c % 2};
}

// Byte `byte` (0..15) of a lane's 16 bytes.
FLASH_SIGMOID_HOST_DEVICE uint32_t dropout_byte(const uint32_t bytes[4], uint32_t byte) {
  return (bytes[byte / 4] >> (8 * (byte % 4))) & 0xFFu;
}

// Whether entry (row, key) of head bh is kept: one Philox call (a reference; kernels share each
// call among the 16 entries of a lane).
FLASH_SIGMOID_HOST_DEVICE bool dropout_keeps(const DropoutParams& d, uint32_t bh, int64_t row, int64_t key) {
  const DropoutSlot s = dropout_slot(row, key);
  uint32_t bytes[4];
  dropout_block_bytes(d, bh, s.row_block, s.key_block, s.lane, bytes);
  return dropout_byte(bytes, s.byte) >= d.threshold;
}

}  // namespace flash_sigmoid

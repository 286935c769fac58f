// Layer: CPU implementation. The append step of a KV-cache call (docs/kvcache.md): new k/v tokens
// written into the cache rows or pages at cache_seqlens, the new k and q rotated (rotary) first.
//
// Owns the cache addressing for writes and the rotary arithmetic. Does not own validation (the
// API layer has run validate() and check_host_append(): lengths, rows, pages and rotary table
// rows are in range) nor the attention itself (the forward reads the cache through the same
// addressing: cpu_sequences.hpp, cpu_tiles.hpp).
#pragma once

#include "flash_sigmoid/flash_sigmoid.h"

namespace flash_sigmoid::cpu_impl {

// Writes k_new/v_new into k_cache/v_cache and, with rotary tables and q.data set, q_rotated.
// Single-threaded: it touches only batch * (seqlen_new + seqlen_q) token rows, a vanishing share
// of the attention that follows. Rotation: x1' = x1 c - x2 s, x2' = x2 c + x1 s in fp32 (each
// product rounded, no fused multiply-add: what torch's elementwise ops compute), rounded once to
// the dtype. Returns false only if host scratch could not be allocated; no exception escapes.
bool kvcache_append(const FlashSigmoidKvAppendArgs& args) noexcept;

}  // namespace flash_sigmoid::cpu_impl

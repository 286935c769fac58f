// Layer: sm90. Where the Hopper backward's dK and dV leave the registers: the dK/dV epilogue common
// to both families (common/dkdv_epilogue.hpp) — dK = scale * acc_dk and dV = acc_dv (both times
// dropout's inverse keep rate) rounded to Element, staged in K's and V's buffers (here
// 128-byte-swizzled) in the accumulator's partition (here the warpgroup MMA's), stored as 16-byte
// vectors predicated on rows < seqlen_k and columns < head_dim. dQ goes through the common fp32
// workspace (common/dq_accum.hpp: the paired reductions, the convert kernel).
//
// Owns: nothing of its own; kept so that the sm90 folder mirrors sm80's file names.
#pragma once

#include "common/dkdv_epilogue.hpp"
#include "sm90/bwd_traits.hpp"

namespace flash_sigmoid::sm90 {

template <class Traits>
using Sm90BwdDkDvEpilogue = DkDvEpilogue<Traits>;

}  // namespace flash_sigmoid::sm90

// The CPU implementation's test grid, shared by test_cpu_forward.cpp and test_cpu_backward.cpp:
// shapes and features that cover every convention of DESIGN §1 at odd sizes, each run in fp32,
// fp16 and bf16. The backward passes smaller sizes for its most expensive cases (GridSizes).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "oracle.hpp"

namespace flash_sigmoid::oracle {

struct GridSizes {
  int64_t wide_head_dim;         // head dim of the (65, 129) case
  int64_t many_blocks_seqlen_q;  // Sq of the many-blocks causal ALiBi case
  int64_t many_blocks_batch;
  uint64_t seed_base;
};

// A (Sq, Sk, head_dim) problem with `edit` applied (one MHA head, batch 1, fp32 unless edited).
inline Spec make(int64_t sq, int64_t sk, int64_t d, const std::function<void(Spec&)>& edit = nullptr) {
  Spec s;
  s.seqlen_q = sq;
  s.seqlen_k = sk;
  s.head_dim = d;
  if (edit) edit(s);
  return s;
}

// Shapes and features; every one runs in fp32, fp16 and bf16.
inline std::vector<Spec> scenarios(const GridSizes& g) {
  std::vector<Spec> out;
  auto add = [&](const Spec& s) { out.push_back(s); };
  add(make(1, 1, 8));
  add(make(17, 17, 24, [](Spec& s) {
    s.causal = true;
    s.layout = Layout::kPadded;
  }));
  add(make(13, 40, 59, [](Spec& s) {
    s.causal = true;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.bias = Bias::kNegLogSk;
  }));
  // Sq > Sk causal: the top rows see no key.
  add(make(40, 13, 64, [](Spec& s) {
    s.causal = true;
    s.heads_q = 3;
    s.bias = Bias::kRandom;
    s.layout = Layout::kHeadMajor;
  }));
  add(make(0, 5, 8));
  add(make(5, 0, 8));
  add(make(17, 17, 32, [](Spec& s) {
    s.window_left = 3;
    s.window_right = 2;
    s.alibi = Alibi::kPerHead;
    s.heads_q = s.heads_kv = 2;
  }));
  add(make(13, 40, 16, [](Spec& s) {
    s.window_left = s.window_right = 0;
    s.alibi = Alibi::kPerBatch;
    s.batch = 2;
    s.heads_q = 2;
    s.layout = Layout::kPadded;
  }));
  add(make(40, 13, 8, [](Spec& s) {
    s.window_left = 5;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.bias = Bias::kRandom;
  }));
  add(make(17, 33, 24, [](Spec& s) {
    s.window_right = 4;
    s.scale = 0.3f;
    s.layout = Layout::kHeadMajor;
  }));
  add(make(21, 21, 8, [](Spec& s) {
    s.causal = true;
    s.window_left = 5;
    s.bias = Bias::kNegLogSk;
  }));  // causal + left
  // Head dim 256; keys over two tiles.
  add(make(9, 70, 256, [](Spec& s) {
    s.alibi = Alibi::kPerHead;
    s.bias = Bias::kNegLogSk;
    s.layout = Layout::kHeadMajor;
  }));
  add(make(65, 129, g.wide_head_dim, [](Spec& s) {
    s.scale = 2.0f;
    s.bias = Bias::kRandom;
    s.layout = Layout::kPadded;
  }));
  // Many query blocks and key tiles.
  add(make(150, 130, 16, [](Spec& s) {
    s.batch = 2;
    s.heads_q = 4;
    s.heads_kv = 2;
    s.causal = true;
    s.window_left = 40;
    s.alibi = Alibi::kPerBatch;
    s.bias = Bias::kNegLogSk;
    s.layout = Layout::kPadded;
  }));
  add(make(g.many_blocks_seqlen_q, 100, 64, [&](Spec& s) {
    s.batch = g.many_blocks_batch;
    s.heads_q = 4;
    s.causal = true;
    s.alibi = Alibi::kPerHead;
    s.bias = Bias::kRandom;
  }));
  // Windows wider than the sequences: the same as unbounded.
  add(make(7, 9, 40, [](Spec& s) {
    s.window_left = s.window_right = int64_t{1} << 40;
    s.heads_q = 2;
  }));
  add(make(12, 5, 1, [](Spec& s) {
    s.window_left = 2;
    s.window_right = 1;
    s.bias = Bias::kRandom;
  }));  // head dim 1
  add(make(3, 80, 72, [](Spec& s) {
    s.causal = true;
    s.window_left = 20;
    s.scale = -0.5f;
    s.alibi = Alibi::kPerHead;
  }));

  for (size_t i = 0; i < out.size(); ++i) out[i].seed = g.seed_base + i;
  return out;
}

inline std::vector<Spec> grid(const GridSizes& g) {
  std::vector<Spec> out;
  for (FlashSigmoidDType dtype : {FLASH_SIGMOID_FLOAT32, FLASH_SIGMOID_FLOAT16, FLASH_SIGMOID_BFLOAT16}) {
    for (Spec s : scenarios(g)) {
      s.dtype = dtype;
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace flash_sigmoid::oracle

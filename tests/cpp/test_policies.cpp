// Tests of the policies (mask band, ALiBi, sigmoid, the dropout mask) and of the block ranges derived from the mask,
// exhaustively at small sizes against a dense mask built straight from DESIGN §1.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "common/block_range.hpp"
#include "common/dq_semaphore.hpp"
#include "common/persistent_scheduler.hpp"
#include "base/math.hpp"
#include "policies/alibi.hpp"
#include "policies/dropout.hpp"
#include "policies/mask_band.hpp"
#include "policies/sigmoid.hpp"

namespace flash_sigmoid {
namespace {

// DESIGN §1, written independently of mask_band.hpp: causal is bottom-right, j <= i + Sk - Sq;
// window (left, right): i + Sk - Sq - left <= j <= i + Sk - Sq + right, -1 unbounded.
bool dense_visible(int i, int j, int sq, int sk, bool causal, int left, int right) {
  if (i < 0 || i >= sq || j < 0 || j >= sk) return false;
  const int diag = i + sk - sq;
  if (causal && j > diag) return false;
  if (left >= 0 && j < diag - left) return false;
  if (right >= 0 && j > diag + right) return false;
  return true;
}

// Calls f(mask) with the MaskBand type that resolve_mask picks.
void with_mask(const ResolvedMask& r, int sq, int sk, const std::function<void(const MaskNone&)>& f0,
               const std::function<void(const MaskRight&)>& f1, const std::function<void(const MaskTwoSided&)>& f2) {
  switch (r.kind) {
    case MaskKind::kNone: f0(MaskNone{sq, sk, r.left, r.right}); break;
    case MaskKind::kRight: f1(MaskRight{sq, sk, r.left, r.right}); break;
    case MaskKind::kBand: f2(MaskTwoSided{sq, sk, r.left, r.right}); break;
  }
}

struct Case {
  int sq, sk;
  bool causal;
  int left, right;
};

// Every combination of small sizes and bounds, the bounds straddling the interesting values.
std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (int sq = 0; sq <= 9; ++sq)
    for (int sk = 0; sk <= 9; ++sk)
      for (int causal = 0; causal <= 1; ++causal)
        for (int left = -1; left <= 11; ++left)
          for (int right = -1; right <= 11; ++right) {
            if (causal && right > 0) continue;  // rejected by validation
            cases.push_back({sq, sk, causal != 0, left, right});
          }
  return cases;
}

template <class Mask>
void check_band(const Case& c, const Mask& m) {
  for (int i = 0; i < c.sq + 2; ++i) {
    for (int j = -1; j < c.sk + 2; ++j) {
      const bool expect = dense_visible(i, j, c.sq, c.sk, c.causal, c.left, c.right);
      if (j >= 0) {
        ASSERT_EQ(m.visible(i, j), expect)
            << "sq " << c.sq << " sk " << c.sk << " causal " << c.causal << " window (" << c.left << ", " << c.right
            << ") at (" << i << ", " << j << ")";
      }
      if (i < c.sq && j >= 0 && j < c.sk) {
        const bool in_row = j >= m.k_begin(i) && j < m.k_end(i);
        ASSERT_EQ(in_row, expect) << "k_begin/k_end of row " << i;
        const bool in_col = i >= m.q_begin(j) && i < m.q_end(j);
        ASSERT_EQ(in_col, expect) << "q_begin/q_end of key " << j;
      }
    }
  }
}

TEST(MaskBand, MatchesDenseMaskForEverySmallCase) {
  for (const Case& c : all_cases()) {
    const ResolvedMask r = resolve_mask(c.causal, c.left, c.right, c.sq, c.sk);
    with_mask(
        r, c.sq, c.sk, [&](const MaskNone& m) { check_band(c, m); }, [&](const MaskRight& m) { check_band(c, m); },
        [&](const MaskTwoSided& m) { check_band(c, m); });
    if (HasFatalFailure()) return;
  }
}

TEST(MaskBand, CausalIsBottomRightAligned) {
  // Sq = 2, Sk = 5: row 0 sees keys 0..3, row 1 sees keys 0..4 (flash-attn >= 2.1 convention).
  const ResolvedMask r = resolve_mask(true, -1, -1, 2, 5);
  ASSERT_EQ(r.kind, MaskKind::kRight);
  MaskRight m{2, 5, r.left, r.right};
  EXPECT_TRUE(m.visible(0, 3));
  EXPECT_FALSE(m.visible(0, 4));
  EXPECT_TRUE(m.visible(1, 4));
  // Sq > Sk: the first rows see nothing.
  const ResolvedMask r2 = resolve_mask(true, -1, -1, 5, 2);
  MaskRight m2{5, 2, r2.left, r2.right};
  EXPECT_FALSE(m2.visible(2, 0));
  EXPECT_TRUE(m2.visible(3, 0));
  EXPECT_FALSE(m2.visible(3, 1));
}

TEST(MaskBand, ResolveDropsBoundsThatNeverBind) {
  EXPECT_EQ(resolve_mask(false, -1, -1, 7, 9).kind, MaskKind::kNone);
  EXPECT_EQ(resolve_mask(false, 8, -1, 7, 9).kind, MaskKind::kNone);   // left >= Sk - 1
  EXPECT_EQ(resolve_mask(false, 7, -1, 7, 9).kind, MaskKind::kBand);   // left = Sk - 2 binds
  EXPECT_EQ(resolve_mask(false, -1, 6, 7, 9).kind, MaskKind::kNone);   // right >= Sq - 1
  EXPECT_EQ(resolve_mask(false, -1, 5, 7, 9).kind, MaskKind::kRight);
  EXPECT_EQ(resolve_mask(true, -1, -1, 1, 9).kind, MaskKind::kNone);   // causal with one query row
  EXPECT_EQ(resolve_mask(true, 3, -1, 7, 9).kind, MaskKind::kBand);
}

// Checks one tile range against the dense mask. `rows` and `cols` are the tiled dimension's
// extents: for the forward, tiles of keys seen by a query tile; for the backward the transpose.
template <int kBlockOuter, int kBlockInner>
void check_range(const BlockRange& r, int outer_block, int outer_len, int inner_len,
                 const std::function<bool(int, int)>& vis, const char* what) {
  const int outer_begin = outer_block * kBlockOuter;
  const int outer_end = outer_begin + kBlockOuter;  // the tail past outer_len counts as hidden
  (void)outer_len;
  const int inner_blocks = (inner_len + kBlockInner - 1) / kBlockInner;
  ASSERT_LE(r.begin, r.interior_begin) << what;
  ASSERT_LE(r.interior_begin, r.interior_end) << what;
  ASSERT_LE(r.interior_end, r.end) << what;
  ASSERT_GE(r.begin, 0) << what;
  ASSERT_LE(r.end, inner_blocks) << what;
  for (int b = 0; b < inner_blocks + 1; ++b) {
    int visible = 0, hidden = 0;
    for (int o = outer_begin; o < outer_end; ++o) {
      for (int x = b * kBlockInner; x < (b + 1) * kBlockInner; ++x) (vis(o, x) ? visible : hidden)++;
    }
    const bool in_range = b >= r.begin && b < r.end;
    const bool interior = b >= r.interior_begin && b < r.interior_end;
    // Exact: a tile is in the range iff it holds a visible pair, interior iff it hides none.
    ASSERT_EQ(in_range, visible > 0) << what << ": tile " << b << " of outer tile " << outer_block;
    if (in_range) {
      ASSERT_EQ(interior, hidden == 0) << what << ": interior tile " << b;
    }
  }
}

template <int kBlockM, int kBlockN>
void check_block_ranges() {
  for (const Case& c : all_cases()) {
    const ResolvedMask r = resolve_mask(c.causal, c.left, c.right, c.sq, c.sk);
    auto fwd = [&](int i, int j) { return dense_visible(i, j, c.sq, c.sk, c.causal, c.left, c.right); };
    auto bwd = [&](int j, int i) { return dense_visible(i, j, c.sq, c.sk, c.causal, c.left, c.right); };
    auto check = [&](const auto& m) {
      for (int mb = 0; mb * kBlockM < c.sq; ++mb) {
        check_range<kBlockM, kBlockN>(key_block_range<kBlockM, kBlockN>(m, mb), mb, c.sq, c.sk, fwd, "forward");
      }
      for (int nb = 0; nb * kBlockN < c.sk; ++nb) {
        check_range<kBlockN, kBlockM>(query_block_range<kBlockM, kBlockN>(m, nb), nb, c.sk, c.sq, bwd, "backward");
      }
    };
    with_mask(
        r, c.sq, c.sk, [&](const MaskNone& m) { check(m); }, [&](const MaskRight& m) { check(m); },
        [&](const MaskTwoSided& m) { check(m); });
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "case sq " << c.sq << " sk " << c.sk << " causal " << c.causal << " window (" << c.left << ", "
                    << c.right << ") tiles " << kBlockM << "x" << kBlockN;
      return;
    }
  }
}

TEST(BlockRange, ExactTiles1x1) { check_block_ranges<1, 1>(); }
TEST(BlockRange, ExactTiles2x3) { check_block_ranges<2, 3>(); }
TEST(BlockRange, ExactTiles3x2) { check_block_ranges<3, 2>(); }
TEST(BlockRange, ExactTiles4x4) { check_block_ranges<4, 4>(); }
TEST(BlockRange, ExactTiles8x4) { check_block_ranges<8, 4>(); }
TEST(BlockRange, ExactTiles4x16) { check_block_ranges<4, 16>(); }

TEST(BlockRange, EmptyWhenNothingIsVisible) {
  MaskRight m{4, 0, 0, 0};  // no keys
  EXPECT_TRUE((key_block_range<2, 2>(m, 0).empty()));
  MaskRight causal_tall{8, 2, 0, 0};  // Sq > Sk causal: the first 6 rows see nothing
  EXPECT_TRUE((key_block_range<2, 2>(causal_tall, 0).empty()));
  EXPECT_FALSE((key_block_range<2, 2>(causal_tall, 3).empty()));
}

// The backward's (query head, query tile) order for one key tile: every head of the kv head's
// group once, in order; within a head every tile of the range exactly once, starting at
// begin + n_block % num_m and wrapping; key tiles of one head start at different tiles.
TEST(QueryTileOrder, VisitsEveryTileOfEveryGroupHeadOnceRotatedPerKeyTile) {
  for (int begin : {0, 3}) {
    for (int num_m : {1, 2, 5}) {
      for (int group : {1, 3}) {
        const BlockRange range{begin, begin, begin + num_m, begin + num_m};  // all interior
        for (int kv_head : {0, 2}) {
          for (int n_block = 0; n_block < 7; ++n_block) {
            const QueryTileOrder order(range, n_block, group, kv_head);
            ASSERT_EQ(order.num_steps, group * num_m);
            std::vector<std::vector<int>> seen(group);
            QueryTileOrder::Tile tile = order.first();
            for (int step = 0; step < order.num_steps; ++step) {
              const int h = tile.head_idx - kv_head * group;
              ASSERT_EQ(h, step / num_m) << "heads in order, num_m tiles each";
              ASSERT_GE(tile.m_block, range.begin);
              ASSERT_LT(tile.m_block, range.end);
              seen[h].push_back(tile.m_block);
              tile = order.next(tile);
            }
            for (int h = 0; h < group; ++h) {
              ASSERT_EQ(seen[h].front(), begin + n_block % num_m);
              std::vector<int> sorted = seen[h];
              std::sort(sorted.begin(), sorted.end());
              for (int i = 0; i < num_m; ++i) ASSERT_EQ(sorted[i], begin + i) << "each tile once";
              for (int i = 1; i < num_m; ++i) {
                ASSERT_EQ(seen[h][i], seen[h][i - 1] + 1 == range.end ? begin : seen[h][i - 1] + 1);
              }
            }
          }
        }
      }
    }
  }
}

TEST(Alibi, TermIsMinusSlopeTimesBottomRightDistance) {
  const float slopes[6] = {0.5f, 0.25f, 0.125f, 1.f, 2.f, 4.f};  // [batch 2, heads 3]
  for (int b = 0; b < 2; ++b) {
    for (int h = 0; h < 3; ++h) {
      const int sq = 3, sk = 7;
      const Alibi<true> a = Alibi<true>::make(slopes, 3, b, h, sk - sq, 1.0f);
      for (int i = 0; i < sq; ++i) {
        for (int j = 0; j < sk; ++j) {
          EXPECT_FLOAT_EQ(a.term(i, j), -slopes[b * 3 + h] * std::abs(i + sk - sq - j));
        }
      }
      const Alibi<true> shared = Alibi<true>::make(slopes, 0, b, h, sk - sq, 2.0f);  // [heads] slopes
      EXPECT_FLOAT_EQ(shared.term(0, 0), -slopes[h] * 2.0f * (sk - sq));
    }
  }
  EXPECT_EQ(Alibi<false>{}.term(3, 100), 0.f);
}

double exact_sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The backward's evaluation of SigmoidViaExp2 (quartic reciprocal), one value.
float sigmoid_for_derivative(float z) {
  float x[1] = {z * SigmoidViaExp2::kInputScale};
  SigmoidViaExp2::values_prescaled_for_derivative(x);
  return x[0];
}

template <RcpRefinement kRefinement>
double worst_reciprocal_error() {
  // d = 1 + 2^-x for x in [-125, 30]: every input the sigmoid gives it.
  double worst = 0;
  for (double x = -125; x <= 30; x += 1.0 / 1024) {
    const float d = 1.0f + std::exp2(static_cast<float>(-x));
    const double r = rcp_fma_f32<kRefinement>(d);
    worst = std::max(worst, std::abs(r * static_cast<double>(d) - 1.0));
  }
  return worst;
}

TEST(Sigmoid, FmaReciprocalIsAccurateOverTheWholeRange) {
  const double cubic = worst_reciprocal_error<RcpRefinement::kCubic>();
  const double quartic = worst_reciprocal_error<RcpRefinement::kQuartic>();
  EXPECT_LT(cubic, 1.35e-4);
  EXPECT_GT(cubic, 1e-4);  // the bound is tight: e^3 of the 5.1e-2 estimate
  EXPECT_LT(quartic, 7e-6);
}

TEST(Sigmoid, ViaExp2IsRelativelyAccurateWhereBiasMinusLogNPutsScores) {
  double worst = 0, worst_for_derivative = 0;
  for (double z = -85; z <= 20; z += 1.0 / 512) {
    const double ref = exact_sigmoid(static_cast<float>(z));
    worst = std::max(worst, std::abs(SigmoidViaExp2::value(static_cast<float>(z)) - ref) / ref);
    worst_for_derivative = std::max(worst_for_derivative, std::abs(sigmoid_for_derivative(static_cast<float>(z)) - ref) / ref);
  }
  EXPECT_LT(worst, 1.4e-4);  // below half an fp16 ulp (2.4e-4 relative at least)
  EXPECT_LT(worst_for_derivative, 1e-5);
}

// Kernels evaluate eight elements at a time; each must equal its one-element evaluation bit for bit.
template <class ScoreFunction, bool kForDerivative>
void expect_eight_at_a_time_equals_one_at_a_time() {
  for (float base = -90.f; base <= 30.f; base += 1.37f) {
    float x[8], one[8];
    for (int j = 0; j < 8; ++j) x[j] = one[j] = base + 0.61f * j * (j % 2 ? -1.f : 1.f);
    x[5] = one[5] = std::nanf("");
    if constexpr (kForDerivative) {
      ScoreFunction::values_prescaled_for_derivative(x);
    } else {
      ScoreFunction::values_prescaled(x);
    }
    for (int j = 0; j < 8; ++j) {
      float v[1] = {one[j]};
      if constexpr (kForDerivative) {
        ScoreFunction::values_prescaled_for_derivative(v);
      } else {
        ScoreFunction::values_prescaled(v);
      }
      EXPECT_EQ(float_bits(x[j]), float_bits(v[0])) << "element " << j << " at base " << base;
    }
  }
}

TEST(Sigmoid, EightAtATimeEqualsOneAtATime) {
  expect_eight_at_a_time_equals_one_at_a_time<SigmoidViaExp2, false>();
  expect_eight_at_a_time_equals_one_at_a_time<SigmoidViaExp2, true>();
  expect_eight_at_a_time_equals_one_at_a_time<SigmoidViaTanh, false>();
  expect_eight_at_a_time_equals_one_at_a_time<SigmoidViaExp2Rcp, false>();
  expect_eight_at_a_time_equals_one_at_a_time<SigmoidViaExp2Relu, false>();
}

// The clamp-free forward form: as accurate as SigmoidViaExp2 where sigma is a normal float, and for
// every finite score either a positive value or -inf (packed as 0), never NaN: the bit-trick
// estimate of 1/d stays normal because d = c (1 + 2^-x) < 2^124 for every finite 2^-x.
TEST(Sigmoid, ViaExp2ReluIsAccurateAndNeverNaNForFiniteScores) {
  double worst = 0;
  for (double z = -87; z <= 20; z += 1.0 / 512) {
    const double ref = exact_sigmoid(static_cast<float>(z));
    worst = std::max(worst, std::abs(SigmoidViaExp2Relu::value(static_cast<float>(z)) - ref) / ref);
  }
  EXPECT_LT(worst, 1.4e-4);
  int negative_infinities = 0;
  for (double z = -200; z <= 60; z += 1.0 / 256) {
    float x[1] = {static_cast<float>(z) * SigmoidViaExp2Relu::kInputScale};
    SigmoidViaExp2Relu::values_prescaled(x);
    ASSERT_FALSE(std::isnan(x[0])) << "z = " << z;
    if (std::isinf(x[0])) {
      ASSERT_LT(x[0], 0.f) << "z = " << z;
      ASSERT_LT(z, -88.0) << "only where sigma < 2^-128";
      ++negative_infinities;
    } else {
      ASSERT_GT(x[0], 0.f) << "z = " << z;
    }
    const float p = SigmoidViaExp2Relu::value(static_cast<float>(z));
    ASSERT_GE(p, 0.f);
    ASSERT_LE(std::abs(static_cast<double>(p) - exact_sigmoid(static_cast<float>(z))),
              1.4e-4 * exact_sigmoid(static_cast<float>(z)) + 1e-38)
        << "z = " << z;
  }
  EXPECT_GT(negative_infinities, 0);  // the range below sigma = 2^-128 was reached
  EXPECT_TRUE(std::isnan(SigmoidViaExp2Relu::value(std::nanf(""))));
  EXPECT_NEAR(SigmoidViaExp2Relu::value(100.f), 1.0f, 1.35e-4);
}

// The mixed form: positions j % 4 == 0 of an 8-value call take the division (rcp.approx on the
// GPU), the others are SigmoidViaExp2Relu's values bit for bit; all are as accurate, and the
// overflow (sigma < 2^-128) gives 0 or -inf, both packed as 0.
TEST(Sigmoid, ViaExp2ReluMixSplitsByPosition) {
  using Mix = SigmoidViaExp2ReluMix<4>;
  double worst = 0;
  for (double z0 = -87; z0 <= 20; z0 += 8.0 / 512) {
    float x[8], relu[8];
    for (int j = 0; j < 8; ++j) {
      relu[j] = x[j] = static_cast<float>(z0 + j / 512.0) * Mix::kInputScale;
    }
    Mix::values_prescaled(x);
    SigmoidViaExp2Relu::values_prescaled(relu);
    for (int j = 0; j < 8; ++j) {
      const float z = static_cast<float>(z0 + j / 512.0);
      const double ref = exact_sigmoid(z);
      worst = std::max(worst, std::abs(x[j] * static_cast<double>(Mix::kOutputScale) - ref) / ref);
      if (j % 4 != 0) ASSERT_EQ(float_bits(x[j]), float_bits(relu[j])) << "z = " << z;
    }
  }
  EXPECT_LT(worst, 1.4e-4);
  float big[8];
  for (float& b : big) b = -200.0f * Mix::kInputScale;  // sigma(-200) < 2^-128: ex2 overflows
  Mix::values_prescaled(big);
  for (int j = 0; j < 8; ++j) EXPECT_LE(big[j], 0.0f) << j;
  EXPECT_TRUE(std::isnan(Mix::value(std::nanf(""))));
  EXPECT_NEAR(Mix::value(100.f), 1.0f, 1e-6);
}

TEST(Sigmoid, ViaExp2LimitsAndNaN) {
  // The reciprocal leaves 1 - 1.29e-4 at d = 1 (the forward's), 1 - 6.5e-6 (the backward's).
  EXPECT_NEAR(SigmoidViaExp2::value(100.f), 1.0f, 1.35e-4);
  EXPECT_NEAR(sigmoid_for_derivative(100.f), 1.0f, 7e-6);
  EXPECT_GE(SigmoidViaExp2::value(-1000.f), 0.0f);
  EXPECT_LT(SigmoidViaExp2::value(-1000.f), 1e-37f);
  EXPECT_TRUE(std::isnan(SigmoidViaExp2::value(std::nanf(""))));
}

TEST(Sigmoid, PrescaledInputMatchesPlainInput) {
  for (float z = -20.f; z <= 20.f; z += 0.37f) {
    EXPECT_NEAR(SigmoidViaExp2::value_prescaled(z * SigmoidViaExp2::kInputScale), exact_sigmoid(z), 1.35e-4);
    EXPECT_NEAR(SigmoidViaTanh::value_prescaled(z * SigmoidViaTanh::kInputScale), exact_sigmoid(z), 1e-6);
    EXPECT_NEAR(SigmoidViaExp2Rcp::value_prescaled(z * SigmoidViaExp2Rcp::kInputScale), exact_sigmoid(z), 1e-6);
  }
}

TEST(Sigmoid, DerivativeFromValueIsTheDerivative) {
  for (double z = -12; z <= 12; z += 0.25) {
    const double h = 1e-4;
    const double fd = (exact_sigmoid(z + h) - exact_sigmoid(z - h)) / (2 * h);
    const float p = sigmoid_for_derivative(static_cast<float>(z));
    // p carries up to 6.5e-6 absolute error near 1 (quartic reciprocal), so 1 - p does too.
    EXPECT_NEAR(SigmoidViaExp2::derivative_from_value(p), fd, 1e-5);
    const double exact_p = exact_sigmoid(z);
    EXPECT_NEAR(SigmoidViaTanh::derivative_from_value(static_cast<float>(exact_p)), fd, 1e-6);
  }
}

// Random123's published known-answer vectors for Philox4x32-10 (its tests/kat_vectors): the
// generator is Philox itself; dropout runs it with 7 rounds.
TEST(Dropout, PhiloxMatchesRandom123KnownAnswers) {
  struct Kat {
    uint32_t counter[4], key[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const Kat& k : kats) {
    uint32_t out[4];
    philox4x32<10>(k.counter, k.key, out);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], k.out[i]) << "word " << i;
  }
}

// Every entry of a 16 x 32 block has its own (lane, byte), and a lane's entries are exactly the
// m16n8 accumulator's: rows l / 4 and l / 4 + 8, columns 2 (l % 4) + {0, 1} of each 8-key group.
TEST(Dropout, BlockLayoutIsTheMmaAccumulators) {
  std::vector<int> seen(32 * 16, 0);
  for (int r = 0; r < 16; ++r) {
    for (int c = 0; c < 32; ++c) {
      const DropoutSlot s = dropout_slot(16 * 5 + r, 32 * 7 + c);
      EXPECT_EQ(s.row_block, 5u);
      EXPECT_EQ(s.key_block, 7u);
      ASSERT_LT(s.lane, 32u);
      ASSERT_LT(s.byte, 16u);
      ++seen[s.lane * 16 + s.byte];
      const int l = static_cast<int>(s.lane);
      EXPECT_TRUE(r == l / 4 || r == l / 4 + 8) << r << " " << c;
      EXPECT_EQ((c % 8) / 2, l % 4) << r << " " << c;
    }
  }
  for (int n : seen) EXPECT_EQ(n, 1);
}

// p rounds to a multiple of 1/256 and the rescale is the exact inverse of the keep rate.
TEST(Dropout, ThresholdAndRescale) {
  EXPECT_FALSE(make_dropout(0.f, 1, 0).enabled());
  EXPECT_FALSE(make_dropout(0.0019f, 1, 0).enabled());  // below half a step: no dropout
  const DropoutParams d = make_dropout(0.1f, 1, 0);
  EXPECT_EQ(d.threshold, 26u);  // round(25.6)
  EXPECT_FLOAT_EQ(d.rescale, 256.f / 230.f);
  EXPECT_EQ(make_dropout(0.5f, 1, 0).threshold, 128u);
  EXPECT_EQ(make_dropout(0.999f, 1, 0).threshold, 255u);
  EXPECT_EQ(make_dropout(-1.f, 1, 0).threshold, 0u);
}

// The kernels' four-bytes-at-once keep test (dropout_keep_flags) agrees with byte >= threshold for
// every threshold and byte value, in every byte position, whatever the neighbouring bytes hold.
TEST(Dropout, PackedKeepFlagsEqualTheByteCompare) {
  for (uint32_t t = 1; t < 256; ++t) {
    DropoutParams d;
    d.threshold = t;
    const DropoutComplement c(d);
    for (uint32_t b = 0; b < 256; ++b) {
      // b in each position, the other bytes 0x00, 0xFF and mixed values (a carry must not leak).
      for (uint32_t others : {0x00000000u, 0xFFFFFFFFu, 0x7F80FF01u}) {
        for (int pos = 0; pos < 4; ++pos) {
          const uint32_t w = (others & ~(0xFFu << (8 * pos))) | (b << (8 * pos));
          const uint32_t flags = dropout_keep_flags(w, c);
          for (int k = 0; k < 4; ++k) {
            const uint32_t byte = (w >> (8 * k)) & 0xFFu;
            ASSERT_EQ(((flags >> (8 * k + 7)) & 1u) != 0, byte >= t) << "t " << t << " w " << w << " byte " << k;
          }
        }
      }
    }
  }
}

// The kept fraction over a head's 1024 x 1024 entries is the keep rate within 5 binomial standard
// deviations, for several p; masks differ between heads, offsets and seeds, and are a function of
// (seed, offset, head, row, key) only.
TEST(Dropout, KeptFractionAndIndependenceOfTheCounter) {
  for (const float p : {0.1f, 0.5f, 0.9f}) {
    const DropoutParams d = make_dropout(p, 0x123456789abcdefull, 3);
    const double keep = 1.0 - d.threshold / 256.0;
    const int n = 1024;
    int64_t kept = 0;
    for (int row = 0; row < n; ++row)
      for (int key = 0; key < n; ++key) kept += dropout_keeps(d, 7, row, key) ? 1 : 0;
    const double total = static_cast<double>(n) * n;
    const double sigma = std::sqrt(total * keep * (1.0 - keep));
    EXPECT_LE(std::abs(static_cast<double>(kept) - total * keep), 5.0 * sigma) << "p " << p;
  }
  const DropoutParams a = make_dropout(0.5f, 42, 0);
  auto differs = [&](const DropoutParams& x, uint32_t bh_a, uint32_t bh_b) {
    int diff = 0;
    for (int row = 0; row < 64; ++row)
      for (int key = 0; key < 64; ++key) diff += dropout_keeps(a, bh_a, row, key) != dropout_keeps(x, bh_b, row, key);
    return diff;
  };
  EXPECT_EQ(differs(a, 3, 3), 0);
  EXPECT_GT(differs(a, 3, 4), 64 * 64 / 4);                        // another head
  EXPECT_GT(differs(make_dropout(0.5f, 42, 1), 3, 3), 64 * 64 / 4);  // another offset (the next call)
  EXPECT_GT(differs(make_dropout(0.5f, 42, uint64_t{1} << 40), 3, 3), 64 * 64 / 4);  // offset bits in the key
  EXPECT_GT(differs(make_dropout(0.5f, 43, 0), 3, 3), 64 * 64 / 4);  // another seed
}

// The persistent forward's schedule: every (query tile, head, batch) exactly once over the blocks'
// turns, for grids smaller and larger than the tile count, odd and even tile counts per head;
// under a right bound with two tiles per block or more, the blocks take pairs of equal work (the
// last and first tile of a head, ...), the long one first, so no block's key tiles exceed the mean
// by more than the last round's remainder.
TEST(PersistentScheduler, EveryTileOnceAndCausalPairsBalanced) {
  using Scheduler = flash_sigmoid::PersistentQueryTileScheduler<128>;
  for (const bool causal : {false, true}) {
    for (const int seqlen : {197, 1000, 1025, 16384}) {
      for (const int blocks : {1, 7, 132, 1000}) {
        flash_sigmoid::ProblemParams p;
        p.batch = seqlen < 16384 ? 3 : 1;
        p.heads_q = 16;
        p.heads_kv = 4;
        p.group_size = 4;
        p.head_dim = 128;
        p.seqlen_q = p.seqlen_k = seqlen;
        p.mask.kind = causal ? flash_sigmoid::MaskKind::kRight : flash_sigmoid::MaskKind::kNone;
        const int m_blocks = (seqlen + 127) / 128;
        const int64_t tiles = Scheduler::num_tiles(p);
        ASSERT_EQ(tiles, int64_t(m_blocks) * p.heads_q * p.batch);
        const bool paired = Scheduler::paired(p, blocks);
        ASSERT_EQ(paired, causal && tiles >= 2 * blocks);
        std::vector<int> seen(tiles, 0);
        std::vector<int64_t> work(blocks, 0);
        for (int b = 0; b < blocks; ++b) {
          int previous_m = -1;
          int64_t round = 0;
          for (int64_t t = Scheduler::next_tile(p, round, b, blocks); t >= 0; ++round, t = Scheduler::next_tile(p, round, b, blocks)) {
            const flash_sigmoid::QueryTileWork w = Scheduler::decode(p, t, blocks);
            ASSERT_GE(w.m_block, 0);
            ASSERT_LT(w.m_block, m_blocks);
            ASSERT_EQ(w.kv_head_idx, w.head_idx / 4);
            ++seen[(int64_t(w.batch_idx) * p.heads_q + w.head_idx) * m_blocks + w.m_block];
            work[b] += causal ? w.m_block + 1 : m_blocks;
            if (paired && (round & 1)) {
              ASSERT_EQ(w.m_block + previous_m, m_blocks - 1) << "a pair is a head's m-th and (m_blocks - 1 - m)-th tile";
              ASSERT_LT(w.m_block, previous_m) << "the long tile first";
            }
            previous_m = w.m_block;
          }
        }
        for (int64_t t = 0; t < tiles; ++t) ASSERT_EQ(seen[t], 1) << "tile " << t;
        if (paired && m_blocks % 2 == 0) {
          int64_t total = 0, most = 0;
          for (const int64_t w : work) {
            ASSERT_EQ(w % (m_blocks + 1), 0) << "whole pairs of m_blocks + 1 key tiles";
            total += w;
            most = std::max(most, w);
          }
          const int64_t pairs = total / (m_blocks + 1);
          EXPECT_EQ(most, (pairs + blocks - 1) / blocks * (m_blocks + 1)) << "pairs spread evenly";
        }
      }
    }
  }
}

// The deterministic backward's order (DescendingQueryTileOrder) with its ordered dQ additions
// (common/dq_semaphore.hpp): every (group head, query tile) of the range once, the tiles from the
// last down and at each the group's heads in order; for every query tile the key tiles that see it
// are a contiguous run, and key tile n - 1 reaches each (head, tile) at a step no later than key
// tile n (so no key tile waits more than about one step in all), for every small mask and for
// groups of 1 and 3 query heads (with the heads as the outer loop, the causal GQA cases fail this).
TEST(DescendingQueryTileOrder, VisitsEveryTileOnceAndKeepsTheKeyTilesInStep) {
  constexpr int kBlockM = 2, kBlockN = 3;
  for (const Case& c : all_cases()) {
    const ResolvedMask r = resolve_mask(c.causal, c.left, c.right, c.sq, c.sk);
    auto check = [&](const auto& mask) {
      const int num_n = (c.sk + kBlockN - 1) / kBlockN, num_m = (c.sq + kBlockM - 1) / kBlockM;
      for (const int group : {1, 3}) {
        // step_of[n][h * num_m + m]: the step at which key tile n adds into (head h, tile m).
        std::vector<std::vector<int>> step_of(num_n, std::vector<int>(group * num_m, -1));
        for (int n = 0; n < num_n; ++n) {
          const BlockRange range = query_block_range<kBlockM, kBlockN>(mask, n);
          if (range.empty()) continue;
          const int count = range.end - range.begin;
          const DescendingQueryTileOrder order(range, n, group, 1);
          ASSERT_EQ(order.num_steps, group * count);
          QueryTileOrder::Tile tile = order.first();
          for (int step = 0; step < order.num_steps; ++step) {
            const int h = tile.head_idx - group;
            ASSERT_EQ(h, step % group) << "the group's heads in order at each tile";
            ASSERT_EQ(tile.m_block, range.end - 1 - step / group) << "the tiles from the last down";
            step_of[n][h * num_m + tile.m_block] = step;
            tile = order.next(tile);
          }
        }
        for (int m = 0; m < num_m; ++m) {
          const BlockRange keys = key_block_range<kBlockM, kBlockN>(mask, m);
          for (int h = 0; h < group; ++h) {
            for (int n = 0; n < num_n; ++n) {
              const int step = step_of[n][h * num_m + m];
              ASSERT_EQ(step >= 0, n >= keys.begin && n < keys.end) << "the key tiles of query tile " << m << " are a run";
              if (step >= 0 && n > keys.begin) {
                ASSERT_LE(step_of[n - 1][h * num_m + m], step)
                    << "key tile " << n - 1 << " reaches head " << h << " tile " << m << " first (group " << group << ")";
              }
            }
          }
        }
      }
    };
    with_mask(
        r, c.sq, c.sk, [&](const MaskNone& m) { check(m); }, [&](const MaskRight& m) { check(m); },
        [&](const MaskTwoSided& m) { check(m); });
    if (::testing::Test::HasFatalFailure()) {
      ADD_FAILURE() << "case sq " << c.sq << " sk " << c.sk << " causal " << c.causal << " window (" << c.left << ", "
                    << c.right << ")";
      return;
    }
  }
}

// The deterministic backward's counters (common/dq_semaphore.hpp): one per (sequence, query head,
// query tile), all distinct and inside count(), dense and packed, the packed ones from each
// sequence's own offset (so even an understated max_seqlen_q keeps them apart); they start
// 256-byte aligned after an accumulator of DqAccumLayout::bytes.
template <int kBlockM>
void check_counters(const std::vector<int>& lengths, bool packed, int heads) {
  ProblemParams p;
  p.batch = static_cast<int>(lengths.size());
  p.heads_q = heads;
  p.head_dim = 72;
  std::vector<int32_t> offsets(lengths.size() + 1, 0);
  for (size_t b = 0; b < lengths.size(); ++b) offsets[b + 1] = offsets[b] + lengths[b];
  const int longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  if (packed) {
    p.cu_seqlens_q = p.cu_seqlens_k = offsets.data();
    p.total_q = offsets.back();
    p.seqlen_q = longest / 2;  // understated on purpose: the counters must not depend on it
  } else {
    p.seqlen_q = p.total_q = longest;
  }
  using Semaphores = DqTileSemaphores<kBlockM>;
  ASSERT_EQ(Semaphores::accumulator_bytes(p) % 256, 0u);
  ASSERT_GE(Semaphores::accumulator_bytes(p), DqAccumLayout::bytes(p));
  ASSERT_LT(Semaphores::accumulator_bytes(p), DqAccumLayout::bytes(p) + 256);
  std::vector<int> seen(Semaphores::count(p), 0);
  for (int b = 0; b < p.batch; ++b) {
    const int rows = packed ? lengths[b] : p.seqlen_q;
    for (int h = 0; h < heads; ++h) {
      for (int m = 0; m * kBlockM < rows; ++m) {
        const int64_t i = Semaphores::index(p, b, packed ? offsets[b] : 0, h, m);
        ASSERT_GE(i, 0);
        ASSERT_LT(i, static_cast<int64_t>(seen.size())) << "sequence " << b << " head " << h << " tile " << m;
        ASSERT_EQ(++seen[static_cast<size_t>(i)], 1) << "counter " << i << " shared";
      }
    }
  }
}

TEST(DqTileSemaphores, OneCounterPerSequenceHeadAndTileInsideTheWorkspace) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int> lengths(1 + rng() % 9);
    for (int& n : lengths) n = rng() % 4 == 0 ? 0 : static_cast<int>(rng() % 700);
    for (const bool packed : {false, true}) {
      check_counters<64>(lengths, packed, 1 + static_cast<int>(rng() % 5));
      check_counters<128>(lengths, packed, 3);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

}  // namespace
}  // namespace flash_sigmoid

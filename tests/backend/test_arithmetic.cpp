// The samplers' elementwise arithmetic, the reductions and the embedding lookup (backend/ops.h)
// against their definitions: each product and sum rounded once, in float32, as written.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

TEST(Arithmetic, AxpbyRoundsEachProductThenTheSum) {
  const Tensor x = random_tensor({5, 7}, 11), y = random_tensor({5, 7}, 12);
  const float a = 0.3f, b = -1.7f;
  const Tensor got = ops::axpby(a, x, b, y);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const volatile float ax = a * x.ptr()[i], by = b * y.ptr()[i];  // volatile: no fused multiply-add here
    EXPECT_EQ(bits(got.ptr()[i]), bits(ax + by)) << i;
  }
  // a = 1, b = −1 is the exact difference; a = b = ½ is the exact half sum.
  const Tensor diff = ops::axpby(1.0f, x, -1.0f, y), half = ops::axpby(0.5f, x, 0.5f, y);
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_EQ(diff.ptr()[i], x.ptr()[i] - y.ptr()[i]);
    EXPECT_EQ(half.ptr()[i], (x.ptr()[i] + y.ptr()[i]) / 2);
  }
  EXPECT_THROW(ops::axpby(1, x, 1, random_tensor({7, 5}, 1)), Error);
}

TEST(Arithmetic, AffineKeepsNegativeZeroWithoutAnOffset) {
  Tensor x({4}, {-0.0f, 1.5f, -2.0f, 3.0f});
  ops::affine(x, 2.0f, 0.0f);
  EXPECT_TRUE(std::signbit(x.ptr()[0])) << "a·(−0) must stay −0 when b is 0";
  EXPECT_EQ(x.to_vector(), (std::vector<float>{-0.0f, 3.0f, -4.0f, 6.0f}));
  ops::affine(x, 0.5f, 1.0f);
  EXPECT_EQ(x.to_vector(), (std::vector<float>{1.0f, 2.5f, -1.0f, 4.0f}));
}

TEST(Arithmetic, DivideIsADivisionNotAReciprocalProduct) {
  // 0.625 / 0.3611 (the Flux VAE's scale factor) and 0.625 · (1/0.3611) round differently in
  // float32: 1.73082256 against 1.73082244. divide must give the quotient.
  const volatile float d = 0.3611f, x0 = 0.625f;
  const volatile float reciprocal = 1.0f / d;
  const float quotient = x0 / d, by_reciprocal = x0 * reciprocal;
  ASSERT_NE(quotient, by_reciprocal);
  Tensor x({2}, {0.625f, -0.0f});
  ops::divide(x, d);
  EXPECT_EQ(x.ptr()[0], quotient);
  EXPECT_TRUE(std::signbit(x.ptr()[1]));
}

TEST(Arithmetic, RoundBf16IsNearestEven) {
  // 1 + 2^-8 is halfway between two bf16 values (1 and 1 + 2^-7): ties go to the even one, 1.
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even one, 1 + 2^-6.
  Tensor x({4}, {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -INFINITY});
  ops::round_bf16(x);
  EXPECT_EQ(x.to_vector(), (std::vector<float>{1.0f, 1.0f + 0x1p-6f, 1.0f + 0x1p-7f, -INFINITY}));
}

TEST(Arithmetic, MaskBlendBroadcastsTheMaskOverChannels) {
  Tensor x({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor y({2, 3}, {10, 20, 30, 40, 50, 60}), mask({3}, {1.0f, 0.0f, 0.25f});
  ops::mask_blend(x, y, mask);
  // m·x + (1 − m)·y per value, the mask's entry i for column i of every channel
  EXPECT_EQ(x.to_vector(), (std::vector<float>{1, 20, 0.25f * 3 + 0.75f * 30, 4, 50, 0.25f * 6 + 0.75f * 60}));
  Tensor z({2, 3});
  EXPECT_THROW(ops::mask_blend(z, y, Tensor({4})), Error);
}

TEST(Arithmetic, ReductionsInDoublePrecision) {
  const Tensor x({3}, {1e8f, 1.0f, -1e8f}), y({3}, {0.0f, 0.5f, 0.0f});
  EXPECT_EQ(ops::sum_abs(x), 2e8 + 1.0);  // float32 sums would lose the 1
  EXPECT_EQ(ops::sum_abs_diff(x, y), 2e8 + 0.5);
  EXPECT_TRUE(ops::all_finite(x));
  EXPECT_FALSE(ops::all_finite(Tensor({2}, {1.0f, NAN})));
  EXPECT_FALSE(ops::all_finite(Tensor({2}, {INFINITY, 1.0f})));
  EXPECT_THROW(ops::sum_abs_diff(x, Tensor({2})), Error);
}

TEST(Arithmetic, GatherRowsWidensTheStoredRows) {
  const StoredWeight table = random_weight(DType::BF16, {5, 8}, 21);
  const std::vector<int64_t> ids = {4, 0, 4};
  const Tensor got = ops::gather_rows(table.view, ids);
  ASSERT_EQ(shape_str(got.shape), "[3, 8]");
  for (size_t r = 0; r < ids.size(); ++r)
    for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(got.ptr()[int64_t(r) * 8 + c], table.values.ptr()[ids[r] * 8 + c]);
  const std::vector<int64_t> bad = {5};
  const std::string error = error_of([&] { ops::gather_rows(table.view, bad); });
  EXPECT_NE(error.find("row 5 is outside"), std::string::npos) << error;
}

}  // namespace
}  // namespace chroma::test

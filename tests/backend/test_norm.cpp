// layer_norm, rms_norm, group_norm and group_norm_silu against the double reference.
#include <gtest/gtest.h>

#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

TEST(LayerNorm, MatchesReference) {
  for (int64_t C : {1, 7, 33, 3072}) {
    // An offset of 5 checks the variance is taken about the mean (a one-pass E[x²]−E[x]² would lose it).
    const Tensor x = random_tensor({5, C}, uint32_t(C), 4, 6);
    expect_close("layer_norm C" + std::to_string(C), ops::layer_norm(x, 1e-6f), ref_layer_norm(x, 1e-6), kSumTol);
  }
}

TEST(RmsNorm, AllScaleDtypes) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3})
    for (int64_t C : {1, 31, 128}) {
      const Tensor x = random_tensor({7, C}, uint32_t(C));
      const StoredWeight s = random_weight(dtype, {C}, 3, "norm.scale");
      expect_close(std::string("rms_norm ") + dtype_name(dtype), ops::rms_norm(x, s.view, 1e-6f),
                   ref_rms_norm(x, s.values, 1e-6), kSumTol);
    }
}

TEST(RmsNorm, WrongScaleThrows) {
  const StoredWeight s = random_weight(DType::BF16, {7}, 3, "norm.scale");
  EXPECT_THROW(ops::rms_norm(random_tensor({2, 8}, 1), s.view, 1e-6f), Error);
}

TEST(GroupNorm, MatchesReference) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    const StoredWeight w = random_weight(dtype, {12}, 1, "norm.weight"), b = random_weight(dtype, {12}, 2, "norm.bias");
    for (int groups : {1, 3, 12}) {
      const Tensor x = random_tensor({12, 7, 9}, uint32_t(groups), 2, 4);
      expect_close("group_norm G" + std::to_string(groups), ops::group_norm(x, groups, w.view, b.view, 1e-6f),
                   ref_group_norm(x, groups, &w.values, &b.values, 1e-6), kSumTol);
    }
  }
  const Tensor x = random_tensor({4, 3, 3}, 9);
  expect_close("group_norm no affine", ops::group_norm(x, 2, {}, {}, 1e-6f), ref_group_norm(x, 2, nullptr, nullptr, 1e-6),
               kSumTol);
}

// One group of 2²⁰ values with a large offset: float32 running sums would be off by ~1e-3 here.
TEST(GroupNorm, LargeGroupStaysAccurate) {
  const Tensor x = random_tensor({4, 512, 512}, 5, 99, 101);
  const StoredWeight w = random_weight(DType::F32, {4}, 1), b = random_weight(DType::F32, {4}, 2);
  expect_close("group_norm 1M", ops::group_norm(x, 1, w.view, b.view, 1e-6f),
               ref_group_norm(x, 1, &w.values, &b.values, 1e-6), kSumTol);
}

// silu(GroupNorm(x)) in double, as the fused op's reference.
Tensor ref_group_norm_silu(const Tensor& x, int G, const Tensor* w, const Tensor* b, double eps) {
  Tensor y = ref_group_norm(x, G, w, b, eps);
  for (float& v : y.data) v = float(double(v) / (1.0 + std::exp(-double(v))));
  return y;
}

TEST(GroupNormSilu, MatchesReference) {
  for (DType dtype : {DType::F32, DType::BF16}) {
    const StoredWeight w = random_weight(dtype, {12}, 1, "norm.weight"), b = random_weight(dtype, {12}, 2, "norm.bias");
    for (int groups : {1, 3, 12}) {
      // Normalised values times weights in (−1, 1) plus biases: SiLU sees both signs.
      const Tensor x = random_tensor({12, 7, 9}, uint32_t(groups), 2, 4);
      expect_close("group_norm_silu G" + std::to_string(groups),
                   ops::group_norm_silu(x, groups, w.view, b.view, 1e-6f),
                   ref_group_norm_silu(x, groups, &w.values, &b.values, 1e-6), kSumTol);
    }
  }
  const Tensor x = random_tensor({4, 3, 3}, 9);
  expect_close("group_norm_silu no affine", ops::group_norm_silu(x, 2, {}, {}, 1e-6f),
               ref_group_norm_silu(x, 2, nullptr, nullptr, 1e-6), kSumTol);
}

// The fused op is the two ops in sequence (the same float32 formulas, so only rounding-level noise).
TEST(GroupNormSilu, EqualsGroupNormThenSilu) {
  const Tensor x = random_tensor({64, 33, 17}, 4, -3, 5);
  const StoredWeight w = random_weight(DType::BF16, {64}, 5), b = random_weight(DType::BF16, {64}, 6);
  expect_close("group_norm_silu vs group_norm + silu", ops::group_norm_silu(x, 32, w.view, b.view, 1e-6f),
               ops::silu(ops::group_norm(x, 32, w.view, b.view, 1e-6f)), kElementwiseTol);
}

// In place on an rvalue (no new image); an lvalue argument is left as it was.
TEST(GroupNormSilu, InPlaceOnRvalue) {
  const Tensor x0 = random_tensor({8, 5, 6}, 7);
  const StoredWeight w = random_weight(DType::F32, {8}, 1), b = random_weight(DType::F32, {8}, 2);
  const Tensor want = ref_group_norm_silu(x0, 4, &w.values, &b.values, 1e-6);
  Tensor x = x0;
  const Tensor copy = ops::group_norm_silu(x, 4, w.view, b.view, 1e-6f);
  EXPECT_EQ(x.data, x0.data);
  const float* buffer = x.ptr();
  const Tensor y = ops::group_norm_silu(std::move(x), 4, w.view, b.view, 1e-6f);
  EXPECT_EQ(y.ptr(), buffer);
  expect_close("group_norm_silu lvalue", copy, want, kSumTol);
  expect_close("group_norm_silu rvalue", y, want, kSumTol);
}

// A large offset over a group of 2²⁰ values, as for group_norm: the single statistics pass must not
// lose the variance to cancellation.
TEST(GroupNormSilu, LargeGroupStaysAccurate) {
  const Tensor x = random_tensor({4, 512, 512}, 5, 99, 101);
  const StoredWeight w = random_weight(DType::F32, {4}, 1), b = random_weight(DType::F32, {4}, 2);
  expect_close("group_norm_silu 1M", ops::group_norm_silu(x, 1, w.view, b.view, 1e-6f),
               ref_group_norm_silu(x, 1, &w.values, &b.values, 1e-6), kSumTol);
}

TEST(GroupNorm, BadArgumentsThrow) {
  const StoredWeight w = random_weight(DType::F32, {12}, 1, "norm.weight");
  EXPECT_THROW(ops::group_norm(random_tensor({12, 2, 2}, 1), 5, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm(random_tensor({8, 2, 2}, 1), 4, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm(random_tensor({12, 4}, 1), 4, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm_silu(random_tensor({12, 2, 2}, 1), 5, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm_silu(random_tensor({8, 2, 2}, 1), 4, w.view, w.view, 1e-6f), Error);
}

}  // namespace
}  // namespace chroma::test

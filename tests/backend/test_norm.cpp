// layer_norm, rms_norm and group_norm against the double reference.
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

TEST(GroupNorm, BadArgumentsThrow) {
  const StoredWeight w = random_weight(DType::F32, {12}, 1, "norm.weight");
  EXPECT_THROW(ops::group_norm(random_tensor({12, 2, 2}, 1), 5, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm(random_tensor({8, 2, 2}, 1), 4, w.view, w.view, 1e-6f), Error);
  EXPECT_THROW(ops::group_norm(random_tensor({12, 4}, 1), 4, w.view, w.view, 1e-6f), Error);
}

}  // namespace
}  // namespace chroma::test

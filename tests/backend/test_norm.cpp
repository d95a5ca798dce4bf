// layer_norm, rms_norm, group_norm, and the fused layer_norm_modulate, rms_norm_rope and
// group_norm_silu against the double reference and against the unfused ops.
#include <gtest/gtest.h>

#include <array>
#include <utility>
#include <vector>

#include "backend/backend.h"
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

// ---- layer_norm_modulate ------------------------------------------------------------------------

// (1 + scale)·LayerNorm(x) + shift with the normalised value taken from the double reference.
Tensor ref_layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, double eps) {
  Tensor y = ref_layer_norm(x, eps);
  const int64_t C = x.dim(-1);
  for (int64_t i = 0; i < y.numel(); ++i) {
    const size_t c = size_t(i % C);
    y.values()[size_t(i)] = float((1.0 + scale.values()[c]) * y.values()[size_t(i)] + shift.values()[c]);
  }
  return y;
}

TEST(LayerNormModulate, MatchesReference) {
  for (int64_t C : {1, 7, 33, 3072}) {
    const Tensor x = random_tensor({5, C}, uint32_t(C), 4, 6);  // offset 5: the variance is about the mean
    const Tensor shift = random_tensor({C}, 2), scale = random_tensor({C}, 3);
    expect_close("layer_norm_modulate C" + std::to_string(C), ops::layer_norm_modulate(x, shift, scale, 1e-6f),
                 ref_layer_norm_modulate(x, shift, scale, 1e-6), kSumTol);
  }
}

// The fused op is layer_norm then modulate: the same statistics and formulas, so at most a rounding
// of the product (1 + scale)·y apart (a contracted multiply-add in one of them).
TEST(LayerNormModulate, EqualsLayerNormThenModulate) {
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{3, 1}, {13, 37}, {7, 3072}, {2, 3075}}) {
    const Tensor x = random_tensor({rows, C}, uint32_t(C + rows), -3, 5);
    const Tensor shift = random_tensor({C}, 4), scale = random_tensor({C}, 5);
    const std::string name = "layer_norm_modulate [" + std::to_string(rows) + ", " + std::to_string(C) + "]";
    const Tensor want = ops::modulate(ops::layer_norm(x, 1e-6f), shift, scale);
    expect_close(name, ops::layer_norm_modulate(x, shift, scale, 1e-6f), want, kElementwiseTol);
    expect_close(name + " backend default", active_backend().Backend::layer_norm_modulate(x, shift, scale, 1e-6f),
                 want, kElementwiseTol);
  }
}

TEST(LayerNormModulate, BadArgumentsThrow) {
  const Tensor x = random_tensor({2, 8}, 1), v8 = random_tensor({8}, 2), v7 = random_tensor({7}, 3);
  EXPECT_THROW(ops::layer_norm_modulate(x, v7, v8, 1e-6f), Error);
  EXPECT_THROW(ops::layer_norm_modulate(x, v8, v7, 1e-6f), Error);
}

// ---- rms_norm_rope ------------------------------------------------------------------------------

// A RoPE table [L, D/2, 2] of (cos θ, sin θ) with random angles.
Tensor random_rope_table(int64_t L, int64_t D, uint32_t seed) {
  const Tensor theta = random_tensor({L, D / 2}, seed, -3, 3);
  Tensor table({L, D / 2, 2});
  for (int64_t i = 0; i < L * D / 2; ++i) {
    table.values()[size_t(2 * i)] = std::cos(theta.values()[size_t(i)]);
    table.values()[size_t(2 * i + 1)] = std::sin(theta.values()[size_t(i)]);
  }
  return table;
}

// RMSNorm of each head's D values, then the rotation of each pair, all in double.
Tensor ref_rms_norm_rope(const Tensor& x, const Tensor& scale, double eps, int H, const Tensor& table) {
  const int64_t L = x.dim(0), D = x.dim(1) / H;
  Tensor y(x.shape);
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h) {
      const float* xh = x.ptr() + (l * H + h) * D;
      double ms = 0;
      for (int64_t i = 0; i < D; ++i) ms += double(xh[i]) * xh[i];
      const double inv = 1.0 / std::sqrt(ms / double(D) + eps);
      for (int64_t p = 0; p < D / 2; ++p) {
        const double x0 = xh[2 * p] * inv * scale.values()[size_t(2 * p)];
        const double x1 = xh[2 * p + 1] * inv * scale.values()[size_t(2 * p + 1)];
        const double c = table.values()[size_t((l * D / 2 + p) * 2)], s = table.values()[size_t((l * D / 2 + p) * 2 + 1)];
        y.values()[size_t((l * H + h) * D + 2 * p)] = float(c * x0 - s * x1);
        y.values()[size_t((l * H + h) * D + 2 * p + 1)] = float(s * x0 + c * x1);
      }
    }
  return y;
}

// Shapes: [L, H, D] with odd token and head counts, D = 2 (one pair) and the DiT's 128.
const std::vector<std::array<int64_t, 3>> kRopeShapes = {{1, 1, 2}, {5, 3, 6}, {7, 5, 34}, {9, 3, 128}};

TEST(RmsNormRope, MatchesReference) {
  for (DType dtype : {DType::F32, DType::BF16})
    for (auto [L, H, D] : kRopeShapes) {
      const Tensor x = random_tensor({L, H * D}, uint32_t(L * D), -2, 3);
      const StoredWeight s = random_weight(dtype, {D}, uint32_t(D), "query_norm.scale");
      const Tensor table = random_rope_table(L, D, uint32_t(H));
      Tensor got = x;
      ops::rms_norm_rope(got, s.view, 1e-6f, int(H), table);
      expect_close(std::string("rms_norm_rope ") + dtype_name(dtype) + " D" + std::to_string(D), got,
                   ref_rms_norm_rope(x, s.values, 1e-6, int(H), table), kSumTol);
    }
}

// The fused op is rms_norm over [L·H, D] then rope: the same float32 formulas in the same order.
TEST(RmsNormRope, EqualsRmsNormThenRope) {
  for (auto [L, H, D] : kRopeShapes) {
    const Tensor x = random_tensor({L, H * D}, uint32_t(L + D), -2, 3);
    const StoredWeight s = random_weight(DType::BF16, {D}, 7, "key_norm.scale");
    const Tensor table = random_rope_table(L, D, 8);
    Tensor want = ops::rms_norm(x.reshaped({L * H, D}), s.view, 1e-6f);
    want.reshape({L, H * D});
    ops::rope(want, int(H), table);
    const std::string name = "rms_norm_rope [" + std::to_string(L) + ", " + std::to_string(H) + "·" +
                             std::to_string(D) + "]";
    Tensor got = x, by_default = x;
    ops::rms_norm_rope(got, s.view, 1e-6f, int(H), table);
    active_backend().Backend::rms_norm_rope(by_default, s.view, 1e-6f, int(H), table);
    expect_close(name, got, want, kElementwiseTol);
    expect_close(name + " backend default", by_default, want, kElementwiseTol);
  }
}

TEST(RmsNormRope, BadArgumentsThrow) {
  Tensor x = random_tensor({4, 3 * 8}, 1);
  const StoredWeight s8 = random_weight(DType::F32, {8}, 2), s6 = random_weight(DType::F32, {6}, 3);
  const Tensor table = random_rope_table(4, 8, 4);
  EXPECT_THROW(ops::rms_norm_rope(x, s6.view, 1e-6f, 3, table), Error);                       // scale not [D]
  EXPECT_THROW(ops::rms_norm_rope(x, s8.view, 1e-6f, 5, table), Error);                       // 24 ≠ 5 heads · D
  EXPECT_THROW(ops::rms_norm_rope(x, s8.view, 1e-6f, 3, random_rope_table(5, 8, 4)), Error);  // table rows ≠ L
  Tensor odd = random_tensor({4, 3 * 7}, 5);
  const StoredWeight s7 = random_weight(DType::F32, {7}, 6);
  EXPECT_THROW(ops::rms_norm_rope(odd, s7.view, 1e-6f, 3, table), Error);  // D = 7 has no pairs
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
  for (float& v : y.values()) v = float(double(v) / (1.0 + std::exp(-double(v))));
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
  EXPECT_EQ(x.to_vector(), x0.to_vector());
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

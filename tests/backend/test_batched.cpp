// The ops added for Chroma1-Radiance's per-patch head, against their definitions (ops.h) written as
// double-precision loops: batched_matmul, normalize_columns, mul, downsample_nearest2x, and the
// patch pixel rows (PyTorch's unfold / fold with kernel = stride = p).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/ops.h"
#include "reference_ops.h"

namespace chroma {
namespace {

using test::random_tensor;

TEST(BatchedMatmul, MatchesTheDefinition) {
  for (const auto& [B, M, K, N] : {std::tuple{3, 5, 7, 4}, std::tuple{2, 256, 64, 256}, std::tuple{1, 1, 1, 1}}) {
    const Tensor a = random_tensor({B, M, K}, 1), b = random_tensor({B, K, N}, 2);
    const Tensor y = ops::batched_matmul(a, b);
    ASSERT_EQ(shape_str(y.shape), shape_str({B, M, N}));
    double worst = 0;
    for (int64_t i = 0; i < B; ++i)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += double(a.values()[size_t((i * M + m) * K + k)]) * b.values()[size_t((i * K + k) * N + n)];
          worst = std::max(worst, std::fabs(acc - y.values()[size_t((i * M + m) * N + n)]));
        }
    EXPECT_LE(worst, 1e-5 * K) << B << "×" << M << "×" << K << "×" << N;
  }
  EXPECT_THROW(ops::batched_matmul(Tensor({2, 3, 4}), Tensor({2, 5, 6})), Error);
  EXPECT_THROW(ops::batched_matmul(Tensor({2, 3, 4}), Tensor({3, 4, 6})), Error);
}

TEST(NormalizeColumns, UnitColumnsAsFNormalizeDimMinus2) {
  Tensor x = random_tensor({3, 6, 5}, 3);
  for (int64_t k = 0; k < 6; ++k) x.values()[size_t((1 * 6 + k) * 5 + 2)] = 0.0f;  // a zero column stays zero (eps)
  const Tensor before = x;
  ops::normalize_columns(x, 1e-12f);
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t n = 0; n < 5; ++n) {
      double norm = 0;
      for (int64_t k = 0; k < 6; ++k) norm += std::pow(double(before.values()[size_t((b * 6 + k) * 5 + n)]), 2);
      norm = std::max(std::sqrt(norm), 1e-12);
      for (int64_t k = 0; k < 6; ++k) {
        const size_t i = size_t((b * 6 + k) * 5 + n);
        EXPECT_NEAR(x.values()[i], before.values()[i] / norm, 1e-6) << b << " " << k << " " << n;
      }
    }
}

TEST(Mul, Elementwise) {
  Tensor x = random_tensor({4, 9}, 4);
  const Tensor y = random_tensor({4, 9}, 5), x0 = x;
  ops::mul(x, y);
  for (size_t i = 0; i < x.values().size(); ++i) EXPECT_EQ(x.values()[i], x0.values()[i] * y.values()[i]);
  EXPECT_THROW(ops::mul(x, Tensor({9, 4})), Error);
}

TEST(DownsampleNearest2x, PicksEvenPixels) {
  const Tensor x = random_tensor({2, 6, 8}, 6);
  const Tensor y = ops::downsample_nearest2x(x);
  ASSERT_EQ(shape_str(y.shape), shape_str({2, 3, 4}));
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) EXPECT_EQ(y.values()[size_t((c * 3 + i) * 4 + j)], x.values()[size_t((c * 6 + 2 * i) * 8 + 2 * j)]);
  EXPECT_THROW(ops::downsample_nearest2x(Tensor({2, 5, 8})), Error);
}

// unfold(kernel p, stride p) gives [C·p·p, L] with row c·p² + dy·p + dx; the op is its transpose
// reshaped to [L·p², C]. fold of all patches is the inverse.
TEST(PatchPixels, UnfoldOrderAndFoldInverse) {
  const int64_t C = 3, H = 8, W = 12, p = 4, gw = W / p, L = (H / p) * gw;
  const Tensor x = random_tensor({C, H, W}, 7);
  const Tensor rows = ops::image_to_patch_pixels(x, int(p));
  ASSERT_EQ(shape_str(rows.shape), shape_str({L * p * p, C}));
  for (int64_t t = 0; t < L; ++t)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t dy = 0; dy < p; ++dy)
        for (int64_t dx = 0; dx < p; ++dx)
          EXPECT_EQ(rows.values()[size_t((t * p * p + dy * p + dx) * C + c)],
                    x.values()[size_t((c * H + (t / gw) * p + dy) * W + (t % gw) * p + dx)]);
  Tensor back({C, H, W});
  ops::patch_pixels_to_image(rows.rows(0, 2 * p * p), 0, int(p), back);  // in two runs of patches
  ops::patch_pixels_to_image(rows.rows(2 * p * p, L * p * p), 2, int(p), back);
  EXPECT_EQ(back.to_vector(), x.to_vector());
  EXPECT_THROW(ops::image_to_patch_pixels(Tensor({3, 8, 10}), 4), Error);
  EXPECT_THROW(ops::patch_pixels_to_image(rows, 1, int(p), back), Error);  // one patch too many
}

}  // namespace
}  // namespace chroma

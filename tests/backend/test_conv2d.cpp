// conv2d against the direct double loops: 3×3 with padding (Winograd), strided with asymmetric
// padding, 1×1, and images large enough to need several im2col or Winograd bands.
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/cpu/kernels.h"
#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

void check_conv(DType dtype, int64_t C, int64_t O, int64_t H, int64_t W, int64_t k, int stride, ops::Padding pad,
                bool with_bias, uint32_t seed) {
  const Tensor x = random_tensor({C, H, W}, seed);
  const StoredWeight w = random_weight(dtype, {O, C, k, k}, seed + 1, "conv.weight");
  const StoredWeight b = random_weight(dtype, {O}, seed + 2, "conv.bias");
  const Tensor got = ops::conv2d(x, w.view, with_bias ? b.view : TensorView{}, stride, pad);
  const Tensor ref = ref_conv2d(x, w.values, with_bias ? &b.values : nullptr, stride, pad);
  expect_close("conv2d " + std::string(dtype_name(dtype)) + " " + shape_str(w.view.shape) + " s" +
                   std::to_string(stride),
               got, ref, kSumTol);
}

TEST(Conv2d, SmallCases) {
  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    check_conv(dtype, 3, 5, 7, 9, 3, 1, {1, 1, 1, 1}, true, 1);
    check_conv(dtype, 3, 5, 7, 9, 3, 1, {1, 1, 1, 1}, false, 2);
    check_conv(dtype, 4, 2, 8, 7, 3, 2, {0, 0, 1, 1}, true, 3);   // downsample: pad right/bottom only
    check_conv(dtype, 6, 3, 5, 4, 1, 1, {}, true, 4);             // 1×1
    check_conv(dtype, 2, 3, 1, 1, 3, 1, {1, 1, 1, 1}, true, 5);   // 1×1 image
    check_conv(dtype, 2, 2, 6, 6, 1, 2, {}, false, 6);            // strided 1×1 (general path)
  }
}

// 64 channels × 3×3 at 96×96: one band holds 4 MB / (576·96·4 B) = 18 output rows, so six bands.
TEST(Conv2d, SeveralBands) { check_conv(DType::BF16, 64, 4, 96, 96, 3, 1, {1, 1, 1, 1}, true, 9); }

// ---- Winograd (3×3, stride 1, padding 1) -------------------------------------------------------
// F(m×m, 3×3) computes in a transformed domain whose matrices have entries up to 8 (Aᵀ) for m = 4,
// so float32 roundings there reach the output amplified, beyond the √K·2⁻²⁴ of a direct sum
// (kSumTol). Measured at 256 channels (WinogradErrorBothTiles), relative to max |y|: F(4×4) 4.3e-6,
// F(2×2) 7e-7, the direct float32 conv 4e-7. The error grows like √C: the bound leaves room for
// 512 channels and still catches a wrong transform entry (errors of order 1).
constexpr Tolerance kWinogradTol{2e-5};

// x [C, H, W] zero-padded by one pixel on every side: a 3×3 conv of it without padding is the direct
// (im2col) float32 conv of x with padding 1.
Tensor pad1(const Tensor& x) {
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
  Tensor p({C, H + 2, W + 2});
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h)
      std::copy_n(x.ptr() + (c * H + h) * W, W, p.ptr() + (c * (H + 2) + h + 1) * (W + 2) + 1);
  return p;
}

void check_winograd(int64_t C, int64_t O, int64_t H, int64_t W, bool with_bias, uint32_t seed) {
  const Tensor x = random_tensor({C, H, W}, seed);
  const StoredWeight w = random_weight(DType::BF16, {O, C, 3, 3}, seed + 1, "conv.weight");
  const StoredWeight b = random_weight(DType::F32, {O}, seed + 2, "conv.bias");
  const Tensor ref = ref_conv2d(x, w.values, with_bias ? &b.values : nullptr, 1, {1, 1, 1, 1});
  const std::string name = "winograd C" + std::to_string(C) + " O" + std::to_string(O) + " " + std::to_string(H) +
                           "×" + std::to_string(W) + (with_bias ? " bias" : "");
  for (int tile : {2, 4})
    expect_close(name + " F(" + std::to_string(tile) + ")",
                 cpu::conv3x3_winograd(x, w.values, with_bias ? b.values.ptr() : nullptr, tile), ref, kWinogradTol);
  // ops::conv2d takes this path for 3×3 / stride 1 / padding 1.
  expect_close(name + " ops::conv2d", ops::conv2d(x, w.view, with_bias ? b.view : TensorView{}, 1, {1, 1, 1, 1}),
               ref, kWinogradTol);
}

// Sizes that are and are not multiples of the tiles (edges with partial tiles), channel counts that
// are not multiples of a vector width, images smaller than one tile, bias and none.
TEST(Conv2dWinograd, MatchesReference) {
  check_winograd(3, 5, 7, 9, true, 11);
  check_winograd(3, 5, 7, 9, false, 12);
  check_winograd(13, 7, 8, 8, true, 13);
  check_winograd(17, 19, 5, 11, true, 14);
  check_winograd(8, 16, 1, 1, true, 15);
  check_winograd(2, 3, 2, 3, false, 16);
  check_winograd(6, 4, 1, 13, true, 17);
  check_winograd(5, 9, 14, 2, true, 18);
}

// Many bands, and tile rows split between bands: 128 channels use bands of 61 tiles (the small
// sgemm regime), 40 channels in → 300 out bands of a different size; 50 × 70 has 13 × 18 tiles.
TEST(Conv2dWinograd, SeveralBands) {
  check_winograd(128, 128, 50, 70, true, 21);
  check_winograd(40, 300, 37, 29, true, 22);
}

// The error of both tile sizes and of the direct float32 conv against the double reference, at a
// VAE-like channel count (printed: the figures kWinogradTol is based on).
TEST(Conv2dWinograd, WinogradErrorBothTiles) {
  const int64_t C = 256, O = 256, S = 24;
  const Tensor x = random_tensor({C, S, S}, 31);
  const StoredWeight w = random_weight(DType::BF16, {O, C, 3, 3}, 32, "conv.weight");
  const StoredWeight b = random_weight(DType::F32, {O}, 33, "conv.bias");
  const Tensor ref = ref_conv2d(x, w.values, &b.values, 1, {1, 1, 1, 1});
  auto rel = [&](const Tensor& got) {
    const Diff d = diff(got, ref);
    return d.max_abs / std::max(1.0, d.ref_max);
  };
  const double direct = rel(ops::conv2d(pad1(x), w.view, b.view, 1, {}));
  const double f2 = rel(cpu::conv3x3_winograd(x, w.values, b.values.ptr(), 2));
  const double f4 = rel(cpu::conv3x3_winograd(x, w.values, b.values.ptr(), 4));
  std::printf("  max error relative to max |y| (%lld channels): direct %.2e, F(2x2) %.2e, F(4x4) %.2e\n",
              static_cast<long long>(C), direct, f2, f4);
  EXPECT_LE(direct, kSumTol.rel);
  EXPECT_LE(f2, kWinogradTol.rel);
  EXPECT_LE(f4, kWinogradTol.rel);
}

TEST(Conv2d, BadShapesThrow) {
  const StoredWeight w = random_weight(DType::F32, {4, 3, 3, 3}, 1, "conv.weight");
  const StoredWeight b = random_weight(DType::F32, {5}, 2, "conv.bias");
  try {
    ops::conv2d(random_tensor({2, 5, 5}, 1), w.view, {}, 1, {1, 1, 1, 1});
    FAIL() << "expected chroma::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv.weight"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ops::conv2d(random_tensor({3, 5, 5}, 1), w.view, b.view, 1, {}), Error);
  EXPECT_THROW(ops::conv2d(random_tensor({3, 2, 2}, 1), w.view, {}, 1, {}), Error);
  EXPECT_THROW(ops::conv2d(random_tensor({3, 5, 5}, 1), w.view, {}, 0, {}), Error);
}

}  // namespace
}  // namespace chroma::test

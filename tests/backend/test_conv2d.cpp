// conv2d against the direct double loops: 3×3 with padding, strided with asymmetric padding, 1×1,
// and an image large enough to need several im2col bands.
#include <gtest/gtest.h>

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

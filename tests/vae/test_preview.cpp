// The latent preview (vae/preview.h) against its defining formula on latents whose result is known by
// hand: the bias alone, the first row of ComfyUI's Flux table, clamping, and the layout.
#include <gtest/gtest.h>

#include "models/vae/preview.h"
#include "tensor/error.h"

namespace chroma::vae {
namespace {

TEST(LatentPreview, IsTheLinearMapThenEightBits) {
  Tensor z({1, 16, 2, 3});  // zeros
  // Pixel (0, 1): channel 0 = 1, so rgb = bias + row 0 = (−0.0329 − 0.0346, −0.0718 + 0.0244, −0.0851 + 0.0681).
  z.values()[1] = 1.0f;
  // Pixel (1, 2): every channel 100 → far above 1 in every colour (each column sums to a positive number).
  for (int k = 0; k < 16; ++k) z.values()[size_t(k * 6 + 5)] = k == 12 || k == 4 || k == 6 ? 100.0f : 0.0f;
  const io::Image img = latent_preview(z);
  ASSERT_EQ(img.width, 3);
  ASSERT_EQ(img.height, 2);
  auto px = [&](int y, int x, int c) { return int(img.rgb[size_t((y * 3 + x) * 3 + c)]); };
  // Zero latent: (bias + 1)/2 · 255 = 123.31, 118.35, 116.65.
  EXPECT_EQ(px(0, 0, 0), 123);
  EXPECT_EQ(px(0, 0, 1), 118);
  EXPECT_EQ(px(0, 0, 2), 117);
  // Channel 0: (1 − 0.0675)/2 · 255 = 118.89, (1 − 0.0474)/2 · 255 = 121.46, (1 − 0.0170)/2 · 255 = 125.33.
  EXPECT_EQ(px(0, 1, 0), 119);
  EXPECT_EQ(px(0, 1, 1), 121);
  EXPECT_EQ(px(0, 1, 2), 125);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(px(1, 2, c), 255) << "clamped";
  EXPECT_THROW(latent_preview(Tensor({1, 4, 2, 2})), Error);
}

}  // namespace
}  // namespace chroma::vae

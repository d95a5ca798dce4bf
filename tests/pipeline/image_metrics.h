// Image comparison for the lossy end-to-end tests (test_model_files.cpp, test_gguf_end_to_end.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::test {

// PSNR in dB of 8-bit images; `want` is the reference's NCHW image_u8, `rgb` our interleaved bytes.
inline double psnr_u8(const std::vector<uint8_t>& rgb, const TensorView& want_u8) {
  const auto* want = static_cast<const uint8_t*>(want_u8.data);
  const int64_t plane = want_u8.numel() / 3;
  double se = 0;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      const double d = double(rgb[size_t(i * 3 + c)]) - double(want[c * plane + i]);
      se += d * d;
    }
  const double mse = se / double(3 * plane);
  return mse == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 / mse);
}

}  // namespace chroma::test

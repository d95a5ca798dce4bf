#include "pipeline/image_input.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace chroma::pipeline {
namespace {

// Resamples `n_in` samples (stride `stride` apart in `in`) to `n_out` samples, output i centred at
// input position (i + 0.5)·n_in/n_out + offset − 0.5 (offset: the crop's start, in input pixels).
// Linear interpolation; when shrinking, the triangle kernel is widened by the scale (a box-like
// average of the pixels each output covers).
void resample_line(const float* in, int64_t n_in, int64_t stride, float* out, int64_t n_out, int64_t out_stride,
                   double scale, double offset) {
  const double support = std::max(1.0, 1.0 / scale);  // kernel half-width in input pixels
  for (int64_t i = 0; i < n_out; ++i) {
    const double center = (double(i) + 0.5) / scale + offset;
    const int64_t lo = std::max<int64_t>(0, int64_t(std::floor(center - support)));
    const int64_t hi = std::min<int64_t>(n_in - 1, int64_t(std::ceil(center + support)));
    double sum = 0, weight = 0;
    for (int64_t j = lo; j <= hi; ++j) {
      const double w = std::max(0.0, 1.0 - std::abs((double(j) + 0.5 - center) / support));
      sum += w * double(in[j * stride]);
      weight += w;
    }
    out[i * out_stride] = float(weight > 0 ? sum / weight : in[std::clamp<int64_t>(int64_t(center), 0, n_in - 1) * stride]);
  }
}

}  // namespace

io::Image fit_image(const io::Image& image, int width, int height) {
  if (image.width == width && image.height == height) return image;
  const int64_t W = image.width, H = image.height;
  // Cover: the larger of the two scales, so the scaled image is at least width × height.
  const double scale = std::max(double(width) / double(W), double(height) / double(H));
  const double x0 = (double(W) - double(width) / scale) / 2, y0 = (double(H) - double(height) / scale) / 2;
  // Rows first (W → width), then columns (H → height), per channel in float.
  std::vector<float> src(size_t(W * H * 3)), mid(size_t(int64_t(width) * H * 3)), dst(size_t(int64_t(width) * height * 3));
  for (size_t i = 0; i < src.size(); ++i) src[i] = image.rgb[i];
  for (int64_t y = 0; y < H; ++y)
    for (int64_t c = 0; c < 3; ++c)
      resample_line(&src[size_t(y * W * 3 + c)], W, 3, &mid[size_t(y * width * 3 + c)], width, 3, scale, x0);
  for (int64_t x = 0; x < width; ++x)
    for (int64_t c = 0; c < 3; ++c)
      resample_line(&mid[size_t(x * 3 + c)], H, int64_t(width) * 3, &dst[size_t(x * 3 + c)], height,
                    int64_t(width) * 3, scale, y0);
  io::Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(dst.size());
  for (size_t i = 0; i < dst.size(); ++i) out.rgb[i] = uint8_t(std::clamp(std::lround(dst[i]), 0L, 255L));
  return out;
}

Tensor image_to_tensor(const io::Image& image) {
  const int64_t H = image.height, W = image.width, plane = H * W;
  Tensor t({1, 3, H, W});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) t.values()[size_t(c * plane + i)] = float(image.rgb[size_t(i * 3 + c)]) / 127.5f - 1.0f;
  return t;
}

Tensor mask_weights(const io::Image& mask, int blur) {
  const int64_t H = mask.height, W = mask.width;
  Tensor m({H, W});
  for (int64_t i = 0; i < H * W; ++i)
    m.values()[size_t(i)] = (float(mask.rgb[size_t(i * 3)]) + float(mask.rgb[size_t(i * 3 + 1)]) +
                         float(mask.rgb[size_t(i * 3 + 2)])) / (3.0f * 255.0f);
  if (blur <= 0) return m;
  std::vector<float> kernel(size_t(2 * blur + 1));
  const double sigma = blur / 2.0;
  double total = 0;
  for (int k = -blur; k <= blur; ++k) total += kernel[size_t(k + blur)] = float(std::exp(-0.5 * k * k / (sigma * sigma)));
  for (float& k : kernel) k = float(k / total);
  // Separable, edges clamped (a mask reaching the border stays full there).
  auto pass = [&](const Tensor& in, bool along_rows) {
    Tensor out({H, W});
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        float s = 0;
        for (int k = -blur; k <= blur; ++k) {
          const int64_t yy = along_rows ? y : std::clamp<int64_t>(y + k, 0, H - 1);
          const int64_t xx = along_rows ? std::clamp<int64_t>(x + k, 0, W - 1) : x;
          s += kernel[size_t(k + blur)] * in.values()[size_t(yy * W + xx)];
        }
        out.values()[size_t(y * W + x)] = s;
      }
    return out;
  };
  return pass(pass(m, true), false);
}

Tensor latent_mask(const Tensor& pixel_mask) {
  const int64_t H = pixel_mask.dim(0), W = pixel_mask.dim(1), h = H / 8, w = W / 8;
  Tensor m({1, 1, h, w});
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      float s = 0;
      for (int64_t dy = 0; dy < 8; ++dy)
        for (int64_t dx = 0; dx < 8; ++dx) s += pixel_mask.values()[size_t((y * 8 + dy) * W + x * 8 + dx)];
      m.values()[size_t(y * w + x)] = s / 64.0f;
    }
  return m;
}

std::vector<uint8_t> paste_back(const std::vector<uint8_t>& generated, const std::vector<uint8_t>& original,
                                const Tensor& pixel_mask) {
  if (generated.size() != original.size() || size_t(pixel_mask.numel()) * 3 != generated.size())
    throw Error("paste_back: image and mask sizes differ");
  std::vector<uint8_t> out(generated.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float m = pixel_mask.values()[i / 3];
    out[i] = uint8_t(std::lround(m * float(generated[i]) + (1.0f - m) * float(original[i])));
  }
  return out;
}

}  // namespace chroma::pipeline

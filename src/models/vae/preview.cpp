#include "models/vae/preview.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace chroma::vae {
namespace {

// ComfyUI comfy/latent_formats.py Flux: [channel][r, g, b], and the bias per colour.
constexpr float kFactors[16][3] = {
    {-0.0346f, 0.0244f, 0.0681f},  {0.0034f, 0.0210f, 0.0687f},   {0.0275f, -0.0668f, -0.0433f},
    {-0.0174f, 0.0160f, 0.0617f},  {0.0859f, 0.0721f, 0.0329f},   {0.0004f, 0.0383f, 0.0115f},
    {0.0405f, 0.0861f, 0.0915f},   {-0.0236f, -0.0185f, -0.0259f}, {-0.0245f, 0.0250f, 0.1180f},
    {0.1008f, 0.0755f, -0.0421f},  {-0.0515f, 0.0201f, 0.0011f},  {0.0428f, -0.0012f, -0.0036f},
    {0.0817f, 0.0765f, 0.0749f},   {-0.1264f, -0.0522f, -0.1103f}, {-0.0280f, -0.0881f, -0.0499f},
    {-0.1262f, -0.0982f, -0.0778f},
};
constexpr float kBias[3] = {-0.0329f, -0.0718f, -0.0851f};

}  // namespace

io::Image latent_preview(const Tensor& latent) {
  if (latent.rank() != 4 || latent.dim(0) != 1 || latent.dim(1) != 16)
    throw Error("latent preview: expected a latent [1, 16, h, w], got " + shape_str(latent.shape));
  const int64_t h = latent.dim(2), w = latent.dim(3), plane = h * w;
  Tensor copy;  // a preview is for the host: the latent comes over
  const float* values = host_readable(latent, copy).ptr();
  io::Image img;
  img.width = int(w);
  img.height = int(h);
  img.rgb.resize(size_t(plane) * 3);
  for (int64_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) {
      float v = kBias[c];
      for (int k = 0; k < 16; ++k) v += kFactors[k][c] * values[k * plane + i];
      const float unit = std::clamp((v + 1.0f) * 0.5f, 0.0f, 1.0f);
      img.rgb[size_t(i) * 3 + size_t(c)] = uint8_t(std::lround(unit * 255.0f));
    }
  return img;
}

}  // namespace chroma::vae

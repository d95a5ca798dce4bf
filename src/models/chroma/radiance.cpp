// Chroma1-Radiance's pixel path (docs/radiance.md), after flow `model_dct.py` Chroma._forward and
// `module/layers.py` NerfEmbedder, NerfGLUBlock, NerfFinalLayerConv. Sizes as in radiance.h.
#include "models/chroma/radiance.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "backend/ops.h"
#include "tensor/trace.h"

namespace chroma::dit::radiance {

namespace {

// torch.linspace(0, 1, n) in float32 by the scalar rule (step = 1/(n − 1); the first half counts up
// from 0, the second half down from 1). The author computes these on a GPU; the values agree with
// the exact k/(n − 1) to float32 rounding.
std::vector<float> unit_linspace(int n) {
  std::vector<float> u(size_t(n), 0.0f);
  if (n < 2) return u;
  const float step = 1.0f / float(n - 1);
  for (int i = 0; i < n; ++i) u[size_t(i)] = i < n / 2 ? step * float(i) : 1.0f - step * float(n - 1 - i);
  return u;
}

}  // namespace

Tensor dct_features(int patch, int max_freqs) {
  const int p = patch, F = max_freqs;
  const std::vector<float> u = unit_linspace(p);
  const float pi = std::numbers::pi_v<float>;
  Tensor dct({int64_t(p) * p, int64_t(F) * F});
  for (int dy = 0; dy < p; ++dy)
    for (int dx = 0; dx < p; ++dx) {
      float* row = dct.ptr() + (int64_t(dy) * p + dx) * F * F;
      for (int fx = 0; fx < F; ++fx)
        for (int fy = 0; fy < F; ++fy) {
          // flow: cos(pos_x·freqs_x·π) · cos(pos_y·freqs_y·π) · (1 + freqs_x·freqs_y)^−1, float32
          const float cx = std::cos(u[size_t(dx)] * float(fx) * pi);
          const float cy = std::cos(u[size_t(dy)] * float(fy) * pi);
          row[fx * F + fy] = cx * cy * (1.0f / (1.0f + float(fx) * float(fy)));
        }
    }
  return dct;
}

Tensor embed_pixels(const Tensor& image, const RadianceWeights& w, const ChromaConfig& c) {
  const RadianceConfig& r = c.radiance;
  Tensor x = image.reshaped({image.dim(1), image.dim(2), image.dim(3)});  // [Ci, H, W]
  if (r.patch32) x = ops::downsample_nearest2x(x);                         // F.interpolate(size=(H/2, W/2))
  Tensor grid = ops::conv2d(x, w.patch_weight, w.patch_bias, r.conv_patch, {});  // [C, H/p, W/p]
  const int64_t tokens = grid.dim(1) * grid.dim(2);
  grid.reshape({grid.dim(0), tokens});
  return ops::transpose(grid);  // [Li, C]: flatten(2).transpose(1, 2)
}

Tensor embed_patch_pixels(const Tensor& pixels, const Tensor& dct, const LinearWeights& embedder) {
  const int64_t per_patch = dct.dim(0), features = dct.dim(1);
  if (pixels.rank() != 2 || pixels.dim(0) % per_patch)
    throw Error("Radiance head: pixel rows " + shape_str(pixels.shape) + " are not whole patches of " +
                std::to_string(per_patch) + " pixels");
  const int64_t n = pixels.dim(0) / per_patch;
  Tensor positions({n * per_patch, features});  // the DCT table (host) repeated for every patch
  for (int64_t k = 0; k < n; ++k) std::copy_n(dct.ptr(), dct.numel(), positions.ptr() + k * dct.numel());
  positions = ops::to_backend(std::move(positions));
  // torch.cat([pixels, dct], dim=-1) then the Linear, without building the concatenation
  return ops::linear_concat(pixels, positions, embedder.weight, embedder.bias);
}

GeneratedMlp generate_mlp(const Tensor& tokens, const NerfBlockWeights& w, const ChromaConfig& c) {
  const int64_t n = tokens.dim(0), h = c.radiance.nerf_hidden, m = c.radiance.mlp_hidden();
  const Tensor params = ops::linear(tokens, w.param_generator.weight, w.param_generator.bias);  // [n, 3·h·m]
  // mlp_params.chunk(3, dim=-1) → fc1_gate, fc1_value, fc2, each viewed as a matrix per patch and
  // F.normalize(dim=-2)'d: every column (one output unit's weights) gets unit L2 norm.
  auto part = [&](int64_t index, int64_t rows, int64_t cols) {
    Tensor t = ops::slice_cols(params, index * h * m, (index + 1) * h * m);
    t.reshape({n, rows, cols});
    ops::normalize_columns(t, kNormalizeEps);
    return t;
  };
  return {part(0, h, m), part(1, h, m), part(2, m, h)};
}

void glu_block(Tensor& x, const GeneratedMlp& mlp, const NerfBlockWeights& w) {
  const int64_t n = mlp.gate.dim(0), h = mlp.gate.dim(1);
  if (x.rank() != 2 || x.dim(1) != h || x.dim(0) % n)
    throw Error("Radiance head: features " + shape_str(x.shape) + " do not fit " + std::to_string(n) + " patches of width " +
                std::to_string(h));
  const int64_t pixels = x.dim(0) / n;
  const Tensor normed = ops::rms_norm(x, w.norm, kRmsEps).reshaped({n, pixels, h});
  Tensor gate = ops::silu(ops::batched_matmul(normed, mlp.gate));  // [n, p², m]
  ops::mul(gate, ops::batched_matmul(normed, mlp.value));
  ops::add(x, ops::batched_matmul(gate, mlp.out).reshaped(x.shape));  // residual
}

Tensor decode(const Tensor& tokens, const Tensor& image, const RadianceWeights& w, const ChromaConfig& c,
              int64_t tile_patches) {
  const RadianceConfig& r = c.radiance;
  const int64_t p = r.pixel_patch(), pp = p * p, Ci = image.dim(1), H = image.dim(2), W = image.dim(3);
  const int64_t L = tokens.dim(0);
  if (L != (H / p) * (W / p)) throw Error("Radiance head: " + std::to_string(L) + " tokens for a " + std::to_string(W) + "×" +
                                          std::to_string(H) + " image in " + std::to_string(p) + "-pixel patches");
  const Tensor pixels = ops::image_to_patch_pixels(image.reshaped({Ci, H, W}), int(p));  // [L·p², Ci] (unfold)
  const Tensor dct = dct_features(int(p), r.max_freqs);                                  // [p², F²]
  Tensor features = ops::zeros({int64_t(r.nerf_hidden), H, W});  // the folded head output before the conv
  const int64_t tile = std::max<int64_t>(1, tile_patches);
  for (int64_t first = 0; first < L; first += tile) {
    const int64_t end = std::min(L, first + tile);
    const Tensor tile_tokens = tokens.rows(first, end);  // [n, C]
    Tensor x = embed_patch_pixels(pixels.rows(first * pp, end * pp), dct, w.embedder);  // [n·p², h]
    for (const NerfBlockWeights& block : w.blocks) glu_block(x, generate_mlp(tile_tokens, block, c), block);
    // nerf_final_layer_conv.norm per pixel, then fold into the image
    ops::patch_pixels_to_image(ops::rms_norm(x, w.final_norm, kRmsEps), first, int(p), features);
  }
  trace("nerf_features", features);
  Tensor out = ops::conv2d(features, w.conv_weight, w.conv_bias, 1, {1, 1, 1, 1});  // [Ci, H, W]
  out.reshape({1, Ci, H, W});
  return out;
}

Tensor velocity_from_x0(const Tensor& x_t, const Tensor& x0, float t) {
  if (!(t > 0.0f)) throw Error("Chroma1-Radiance (x0): the velocity (x_t − x0)/t needs t > 0, got t = " + std::to_string(t));
  if (x_t.shape != x0.shape)
    throw Error("velocity_from_x0: shapes differ: " + shape_str(x_t.shape) + " vs " + shape_str(x0.shape));
  Tensor v = ops::axpby(1.0f, x_t, -1.0f, x0);
  ops::divide(v, t);
  return v;
}

}  // namespace chroma::dit::radiance

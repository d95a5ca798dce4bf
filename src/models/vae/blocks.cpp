// Flux VAE building blocks — chroma-spec.md §5, bfl `src/flux/modules/autoencoder.py`.
#include "models/vae/blocks.h"

#include <cmath>
#include <span>
#include <utility>

#include "backend/ops.h"
#include "models/vae/vae.h"

namespace chroma::vae {

// ---- loaders -------------------------------------------------------------------------------

GroupNormWeights load_group_norm(const io::WeightStore& ws, const std::string& prefix, int channels,
                                 const VaeConfig& cfg) {
  if (channels % cfg.groups != 0)
    throw Error(ws.path() + ": tensor '" + prefix + ".weight' has " + std::to_string(channels) +
                " channels, not a multiple of the " + std::to_string(cfg.groups) + " GroupNorm groups");
  return {ws.require(prefix + ".weight", {channels}), ws.require(prefix + ".bias", {channels})};
}

ConvWeights load_conv(const io::WeightStore& ws, const std::string& prefix, int c_in, int c_out, int kernel) {
  return {ws.require(prefix + ".weight", {c_out, c_in, kernel, kernel}), ws.require(prefix + ".bias", {c_out})};
}

ResnetBlockWeights load_resnet_block(const io::WeightStore& ws, const std::string& prefix, int c_in, int c_out,
                                     const VaeConfig& cfg) {
  ResnetBlockWeights w;
  w.norm1 = load_group_norm(ws, prefix + ".norm1", c_in, cfg);
  w.conv1 = load_conv(ws, prefix + ".conv1", c_in, c_out, 3);
  w.norm2 = load_group_norm(ws, prefix + ".norm2", c_out, cfg);
  w.conv2 = load_conv(ws, prefix + ".conv2", c_out, c_out, 3);
  // bfl creates the shortcut conv only when the width changes.
  if (c_in != c_out) w.nin_shortcut = load_conv(ws, prefix + ".nin_shortcut", c_in, c_out, 1);
  return w;
}

MidWeights load_mid(const io::WeightStore& ws, const std::string& prefix, int channels, const VaeConfig& cfg) {
  MidWeights w;
  w.block_1 = load_resnet_block(ws, prefix + ".block_1", channels, channels, cfg);
  const std::string attn = prefix + ".attn_1";
  w.attn_1.norm = load_group_norm(ws, attn + ".norm", channels, cfg);
  w.attn_1.q = load_conv(ws, attn + ".q", channels, channels, 1);
  w.attn_1.k = load_conv(ws, attn + ".k", channels, channels, 1);
  w.attn_1.v = load_conv(ws, attn + ".v", channels, channels, 1);
  w.attn_1.proj_out = load_conv(ws, attn + ".proj_out", channels, channels, 1);
  w.block_2 = load_resnet_block(ws, prefix + ".block_2", channels, channels, cfg);
  return w;
}

// ---- forward -------------------------------------------------------------------------------

namespace {

constexpr ops::Padding kSame3x3{1, 1, 1, 1};  // 3×3 conv, stride 1, zero padding 1: size kept

Tensor group_norm(const Tensor& x, const GroupNormWeights& n, const VaeConfig& cfg) {
  return ops::group_norm(x, cfg.groups, n.weight, n.bias, cfg.eps);
}

Tensor conv1x1(const Tensor& x, const ConvWeights& w) { return ops::conv2d(x, w.weight, w.bias, 1, {}); }

// GroupNorm → SiLU (the spec's `nonlinearity(norm(x))`), one fused op working in place on x: pass an
// rvalue where the input is not needed afterwards, and no new image is allocated.
Tensor norm_silu(Tensor x, const GroupNormWeights& n, const VaeConfig& cfg) {
  return ops::group_norm_silu(std::move(x), cfg.groups, n.weight, n.bias, cfg.eps);
}

}  // namespace

Tensor unbatch(const Tensor& x, int channels, const std::string& what) {
  if (x.rank() != 4 || x.dim(0) != 1 || x.dim(1) != channels || x.dim(2) < 1 || x.dim(3) < 1)
    throw Error(what + " has shape " + shape_str(x.shape) + ", expected [1, " + std::to_string(channels) +
                ", H, W]");
  return x.reshaped({x.dim(1), x.dim(2), x.dim(3)});
}

Tensor conv3x3(const Tensor& x, const ConvWeights& w) { return ops::conv2d(x, w.weight, w.bias, 1, kSame3x3); }

// bfl ResnetBlock.forward: h = conv1(SiLU(GN1(x))); h = conv2(SiLU(GN2(h))); out = shortcut(x) + h.
// (Dropout is 0 at inference; there is no timestep embedding in the Flux VAE.)
Tensor resnet_block(Tensor x, const ResnetBlockWeights& w, const VaeConfig& cfg) {
  Tensor h = conv3x3(norm_silu(x, w.norm1, cfg), w.conv1);            // [C_out, H, W]; x kept
  if (w.nin_shortcut) x = conv1x1(x, w.nin_shortcut);                   // [C_out, H, W]
  h = conv3x3(norm_silu(std::move(h), w.norm2, cfg), w.conv2);          // [C_out, H, W]
  ops::add(x, h);
  return x;
}

// bfl AttnBlock.forward: single-head self-attention over all H·W positions, width C, scale 1/√C,
// then x + proj_out(·).
Tensor attn_block(Tensor x, const AttnBlockWeights& w, const VaeConfig& cfg) {
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
  const int64_t L = H * W;
  Tensor h = group_norm(x, w.norm, cfg);  // [C, H, W]
  // q, k, v are 1×1 convs on the image; attention wants token rows: [C, H·W] → [H·W, C].
  auto tokens = [&](const ConvWeights& c) {
    Tensor t = conv1x1(h, c);
    t.reshape({C, L});
    return ops::transpose(t);
  };
  Tensor q = tokens(w.q), k = tokens(w.k), v = tokens(w.v);  // [L, C] each
  h = Tensor();
  Tensor a = ops::attention(q, k, v, /*heads=*/1, std::span<const int64_t>(&L, 1),
                            1.0f / std::sqrt(float(C)));  // [L, C]
  q = Tensor();
  k = Tensor();
  v = Tensor();
  Tensor o = ops::transpose(a);  // [C, L]
  a = Tensor();
  o.reshape({C, H, W});
  ops::add(x, conv1x1(o, w.proj_out));
  return x;
}

// bfl Encoder/Decoder `mid`: block_1 → attn_1 → block_2 at constant width.
Tensor mid_block(Tensor x, const MidWeights& w, const VaeConfig& cfg) {
  x = resnet_block(std::move(x), w.block_1, cfg);
  x = attn_block(std::move(x), w.attn_1, cfg);
  return resnet_block(std::move(x), w.block_2, cfg);
}

// bfl Upsample: nearest-neighbour ×2, then conv 3×3 pad 1.
Tensor upsample(Tensor x, const ConvWeights& conv) {
  Tensor up = ops::upsample_nearest2x(x);  // [C, 2H, 2W]
  x = Tensor();                            // the ¼-size input is no longer needed
  return conv3x3(up, conv);
}

// bfl Downsample: zero-pad right and bottom by 1 (F.pad(x, (0, 1, 0, 1))), then conv 3×3 stride 2
// with no padding — asymmetric, unlike a "same" conv.
Tensor downsample(Tensor x, const ConvWeights& conv) {
  return ops::conv2d(x, conv.weight, conv.bias, 2, ops::Padding{.top = 0, .left = 0, .bottom = 1, .right = 1});
}

Tensor norm_silu_conv_out(Tensor x, const GroupNormWeights& norm, const ConvWeights& conv_out,
                          const VaeConfig& cfg) {
  return conv3x3(norm_silu(std::move(x), norm, cfg), conv_out);
}

}  // namespace chroma::vae

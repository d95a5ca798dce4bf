// Flux VAE encoder — chroma-spec.md §5 (bfl `autoencoder.py` Encoder; posterior mean as in
// DiagonalGaussian(sample=False) and flow's `encode_for_train`, then the sampler-space scaling).
#include <string>
#include <utility>

#include "backend/ops.h"
#include "models/vae/vae.h"
#include "tensor/trace.h"

namespace chroma::vae {
namespace {

// Every "encoder.*" tensor, shapes from the config. Width runs from ch up to the last level's.
EncoderWeights load_encoder(const io::WeightStore& ws, const VaeConfig& cfg) {
  EncoderWeights w;
  int c = cfg.ch;
  w.conv_in = load_conv(ws, "encoder.conv_in", cfg.in_channels, c, 3);
  w.down.resize(size_t(cfg.levels()));
  for (int l = 0; l < cfg.levels(); ++l) {
    const std::string prefix = "encoder.down." + std::to_string(l);
    EncoderLevelWeights& level = w.down[size_t(l)];
    for (int i = 0; i < cfg.num_res_blocks; ++i) {
      level.block.push_back(
          load_resnet_block(ws, prefix + ".block." + std::to_string(i), c, cfg.level_channels(l), cfg));
      c = cfg.level_channels(l);
    }
    if (l != cfg.levels() - 1) level.downsample = load_conv(ws, prefix + ".downsample.conv", c, c, 3);
  }
  w.mid = load_mid(ws, "encoder.mid", c, cfg);
  w.norm_out = load_group_norm(ws, "encoder.norm_out", c, cfg);
  w.conv_out = load_conv(ws, "encoder.conv_out", c, 2 * cfg.z_channels, 3);
  return w;
}

}  // namespace

Encoder::Encoder(const io::WeightStore& weights)
    : config_(VaeConfig::from_weights(weights)), w_(load_encoder(weights, config_)) {}

Tensor Encoder::encode(const Tensor& image) const {
  const VaeConfig& cfg = config_;
  Tensor x = unbatch(image, cfg.in_channels, "vae encode: image");  // [in, H, W]
  const int64_t scale = cfg.downscale();
  // Each downsample floors odd sizes; the latent would then not decode back to the image size.
  if (x.dim(1) % scale != 0 || x.dim(2) % scale != 0)
    throw Error("vae encode: image is " + std::to_string(x.dim(2)) + "x" + std::to_string(x.dim(1)) +
                " pixels; width and height must be multiples of " + std::to_string(scale));
  const int64_t h = x.dim(1) / scale, w = x.dim(2) / scale;

  x = conv3x3(x, w_.conv_in);  // [ch, H, W]
  trace("encode.conv_in", x);
  // Levels 0..last; each but the last ends with a stride-2 downsample.
  for (int l = 0; l < cfg.levels(); ++l) {
    const EncoderLevelWeights& level = w_.down[size_t(l)];
    for (const ResnetBlockWeights& block : level.block) x = resnet_block(std::move(x), block, cfg);
    if (level.downsample) x = downsample(std::move(x), level.downsample);
    trace("encode.down." + std::to_string(l), x);  // [C_l, ·, ·]
  }
  x = mid_block(std::move(x), w_.mid, cfg);
  trace("encode.mid", x);

  Tensor moments = norm_silu_conv_out(std::move(x), w_.norm_out, w_.conv_out, cfg);  // [2z, h, w]
  trace("encode.moments", moments);
  // Posterior mean = the first z channels (the other z are logvar, unused without sampling).
  Tensor latent = moments.rows(0, cfg.z_channels);  // [z, h, w]
  trace("encode.mean", latent);

  // Into sampler space (bfl AutoEncoder.encode): scale_factor · (mean − shift_factor).
  ops::affine(latent, 1.0f, -cfg.shift_factor);  // mean − shift_factor
  ops::affine(latent, cfg.scale_factor, 0.0f);   // scale_factor · (…)
  latent.reshape({1, cfg.z_channels, h, w});
  return latent;
}

}  // namespace chroma::vae

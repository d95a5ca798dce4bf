// Flux VAE decoder — chroma-spec.md §5 (bfl `autoencoder.py` Decoder, AutoEncoder.decode).
#include <string>
#include <utility>

#include "backend/ops.h"
#include "models/vae/vae.h"
#include "tensor/trace.h"

namespace chroma::vae {
namespace {

// Every "decoder.*" tensor, shapes from the config. Width runs from the last level's down to ch.
DecoderWeights load_decoder(const io::WeightStore& ws, const VaeConfig& cfg) {
  DecoderWeights w;
  const int last = cfg.levels() - 1;
  int c = cfg.level_channels(last);
  w.conv_in = load_conv(ws, "decoder.conv_in", cfg.z_channels, c, 3);
  w.mid = load_mid(ws, "decoder.mid", c, cfg);
  w.up.resize(size_t(cfg.levels()));
  for (int l = last; l >= 0; --l) {
    const std::string prefix = "decoder.up." + std::to_string(l);
    DecoderLevelWeights& level = w.up[size_t(l)];
    for (int i = 0; i < cfg.num_res_blocks + 1; ++i) {
      level.block.push_back(
          load_resnet_block(ws, prefix + ".block." + std::to_string(i), c, cfg.level_channels(l), cfg));
      c = cfg.level_channels(l);
    }
    if (l != 0) level.upsample = load_conv(ws, prefix + ".upsample.conv", c, c, 3);
  }
  w.norm_out = load_group_norm(ws, "decoder.norm_out", c, cfg);
  w.conv_out = load_conv(ws, "decoder.conv_out", c, cfg.out_channels, 3);
  return w;
}

}  // namespace

Decoder::Decoder(const io::WeightStore& weights)
    : config_(VaeConfig::from_weights(weights)), w_(load_decoder(weights, config_)) {}

Tensor Decoder::decode(const Tensor& latent) const {
  const VaeConfig& cfg = config_;
  Tensor x = unbatch(latent, cfg.z_channels, "vae decode: latent");  // [z, h, w]
  const int64_t h = x.dim(1), w = x.dim(2);

  // Undo the sampler-space scaling (bfl AutoEncoder.decode: z / scale_factor + shift_factor).
  ops::divide(x, cfg.scale_factor);
  ops::affine(x, 1.0f, cfg.shift_factor);  // + shift_factor
  trace("decode.z_in", x);

  x = conv3x3(x, w_.conv_in);  // [C_last, h, w]
  trace("decode.conv_in", x);
  x = mid_block(std::move(x), w_.mid, cfg);
  trace("decode.mid", x);

  // Levels from the deepest to 0; each ends with ×2 upsampling except level 0.
  for (int l = cfg.levels() - 1; l >= 0; --l) {
    const DecoderLevelWeights& level = w_.up[size_t(l)];
    for (const ResnetBlockWeights& block : level.block) x = resnet_block(std::move(x), block, cfg);
    if (level.upsample) x = upsample(std::move(x), level.upsample);
    trace("decode.up." + std::to_string(l), x);  // [C_l, ·, ·]
  }

  x = norm_silu_conv_out(std::move(x), w_.norm_out, w_.conv_out, cfg);  // [out, H, W]
  const int64_t scale = cfg.downscale();
  x.reshape({1, cfg.out_channels, h * scale, w * scale});
  return x;
}

}  // namespace chroma::vae

// VaeConfig::from_weights — sizes of a Flux-family VAE read off its tensors (chroma-spec.md §1.4;
// reference README §4 "ae-mini" lists which values are inferable). scale/shift, GroupNorm groups
// and eps are not in the file and keep their Flux values.
#include <string>

#include "models/vae/vae.h"

namespace chroma::vae {
namespace {

// A conv weight [C_out, C_in, k, k]; anything else is reported by name.
const TensorView& conv_weight(const io::WeightStore& ws, const std::string& name) {
  const TensorView& v = ws.require(name);
  if (v.shape.size() != 4)
    throw Error(v.file + ": tensor '" + name + "' has shape " + shape_str(v.shape) +
                ", expected a conv weight [C_out, C_in, k, k]");
  return v;
}

// Per-level widths and block count of one half. `stack` is "encoder.down." or "decoder.up.";
// level l's width is the output width of its first ResnetBlock.
struct Levels {
  std::vector<int> channels;
  int blocks = 0;
};

Levels read_levels(const io::WeightStore& ws, const std::string& stack) {
  Levels out;
  const int n = ws.count_indexed(stack);
  if (n == 0) throw Error(ws.path() + ": no '" + stack + "N' tensors (not a Flux VAE file?)");
  for (int l = 0; l < n; ++l)
    out.channels.push_back(int(conv_weight(ws, stack + std::to_string(l) + ".block.0.conv1.weight").dim(0)));
  out.blocks = ws.count_indexed(stack + "0.block.");
  return out;
}

// Splits per-level widths into ch · ch_mult. The decoder alone cannot tell ch from ch_mult[0]
// (only products appear in shapes); ch = level-0 width, i.e. ch_mult[0] = 1, as in every Flux VAE.
void set_channels(VaeConfig& cfg, const std::vector<int>& widths, int ch, const std::string& where) {
  cfg.ch = ch;
  cfg.ch_mult.clear();
  for (size_t l = 0; l < widths.size(); ++l) {
    if (ch <= 0 || widths[l] % ch != 0)
      throw Error(where + ": level " + std::to_string(l) + " has " + std::to_string(widths[l]) +
                  " channels, not a multiple of ch = " + std::to_string(ch));
    cfg.ch_mult.push_back(widths[l] / ch);
  }
}

}  // namespace

VaeConfig VaeConfig::from_weights(const io::WeightStore& ws) {
  const bool has_encoder = ws.has("encoder.conv_in.weight");
  const bool has_decoder = ws.has("decoder.conv_in.weight");
  if (!has_encoder && !has_decoder)
    throw Error(ws.path() + ": neither 'encoder.conv_in.weight' nor 'decoder.conv_in.weight' found "
                "(not a Flux VAE file, or its names carry a prefix)");
  VaeConfig cfg;
  if (has_encoder) {
    const TensorView& conv_in = conv_weight(ws, "encoder.conv_in.weight");  // [ch, in, 3, 3]
    const Levels down = read_levels(ws, "encoder.down.");
    set_channels(cfg, down.channels, int(conv_in.dim(0)), ws.path() + " (encoder.down)");
    cfg.in_channels = cfg.out_channels = int(conv_in.dim(1));
    cfg.num_res_blocks = down.blocks;
    const TensorView& conv_out = conv_weight(ws, "encoder.conv_out.weight");  // [2·z, C_last, 3, 3]
    if (conv_out.dim(0) % 2 != 0)
      throw Error(conv_out.file + ": tensor 'encoder.conv_out.weight' has " + std::to_string(conv_out.dim(0)) +
                  " output channels, expected 2·z_channels (mean and logvar)");
    cfg.z_channels = int(conv_out.dim(0) / 2);
  }
  if (has_decoder) {
    const Levels up = read_levels(ws, "decoder.up.");
    const int z = int(conv_weight(ws, "decoder.conv_in.weight").dim(1));      // [C_last, z, 3, 3]
    const int out = int(conv_weight(ws, "decoder.conv_out.weight").dim(0));   // [out, ch, 3, 3]
    if (!has_encoder) {
      set_channels(cfg, up.channels, up.channels[0], ws.path() + " (decoder.up)");
      cfg.num_res_blocks = up.blocks - 1;  // the decoder has one block more per level
      cfg.z_channels = z;
      cfg.in_channels = out;
    } else {
      // Both halves: they must describe the same autoencoder.
      std::vector<int> enc_widths;
      for (int l = 0; l < cfg.levels(); ++l) enc_widths.push_back(cfg.level_channels(l));
      if (up.channels != enc_widths || up.blocks != cfg.num_res_blocks + 1 || z != cfg.z_channels)
        throw Error(ws.path() + ": the encoder.* and decoder.* tensors describe different autoencoders "
                    "(level widths, block counts or z_channels differ)");
    }
    cfg.out_channels = out;
  }
  if (cfg.num_res_blocks < 1)
    throw Error(ws.path() + ": too few ResnetBlocks under '" +
                std::string(has_encoder ? "encoder.down.0.block." : "decoder.up.0.block.") + "N'");
  return cfg;
}

}  // namespace chroma::vae

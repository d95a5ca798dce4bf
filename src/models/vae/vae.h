// The Flux VAE (chroma-spec.md §1.4, §5): a latent [1, 16, h, w] decodes to an image [1, 3, 8h, 8w]
// and an image encodes to its posterior mean latent. BFL `ae.safetensors` tensor names
// ("encoder.*", "decoder.*"); the sizes come from the weights (VaeConfig::from_weights).
//
// Size legend: C channels, H×W image size, h×w latent size (h = H / 8 for the Flux VAE),
// z = z_channels (16). Images and latents at this API are NCHW with batch 1, like the reference
// files; inside, activations are [C, H, W] (backend/ops.h).
//
// Precision: float32 activations; weights stay in their stored dtype (bf16 or f32) and are widened
// inside the kernels (§6.9: fp32 decoding as mlx does).
#pragma once
#include <vector>

#include "io/safetensors.h"
#include "models/vae/blocks.h"
#include "tensor/tensor.h"

namespace chroma::vae {

struct VaeConfig {
  int ch = 128;                           // channels of level 0 (encoder.conv_in rows)
  std::vector<int> ch_mult = {1, 2, 4, 4};  // level l has ch · ch_mult[l] channels
  int num_res_blocks = 2;                 // ResnetBlocks per encoder level (the decoder has one more)
  int z_channels = 16;                    // latent channels (the encoder outputs 2·z: mean and logvar)
  int in_channels = 3;                    // image channels fed to the encoder
  int out_channels = 3;                   // image channels the decoder produces
  // Not stored in the checkpoint (bfl `util.py` ae_params; the same for every Flux-family VAE).
  float scale_factor = 0.3611f;
  float shift_factor = 0.1159f;
  int groups = 32;     // GroupNorm groups
  float eps = 1e-6f;   // GroupNorm eps

  int levels() const { return int(ch_mult.size()); }
  int level_channels(int l) const { return ch * ch_mult[size_t(l)]; }
  // Spatial factor between image and latent: one ×2 per level boundary (8 for the Flux VAE).
  int downscale() const { return 1 << (levels() - 1); }

  // Sizes inferred from tensor names and shapes. Works with either half alone (a decoder-only file
  // is valid); the missing half's in/out channel count is taken from the half that is present.
  // Throws chroma::Error naming the tensor when neither half is there or a shape is inconsistent.
  static VaeConfig from_weights(const io::WeightStore& weights);
};

// Latent → image. Needs only the "decoder.*" tensors, all checked (names and shapes) when the
// Decoder is built. The WeightStore must outlive the Decoder (weights are borrowed views).
class Decoder {
 public:
  explicit Decoder(const io::WeightStore& weights);
  const VaeConfig& config() const { return config_; }
  // latent [1, z, h, w] (as the sampler produces it, i.e. scaled) → image [1, out, 8h, 8w],
  // roughly in [−1, 1] but not clamped. Applies z / scale_factor + shift_factor first.
  // Traces decode.z_in, decode.conv_in, decode.mid, decode.up.{levels-1..0}.
  Tensor decode(const Tensor& latent) const;

 private:
  VaeConfig config_;
  DecoderWeights w_;
};

// Image → latent (posterior mean; no sampling). Needs only the "encoder.*" tensors.
class Encoder {
 public:
  explicit Encoder(const io::WeightStore& weights);
  const VaeConfig& config() const { return config_; }
  // image [1, in, H, W] in [−1, 1], H and W multiples of 8 → latent [1, z, H/8, W/8]
  // = scale_factor · (mean − shift_factor), ready for the sampler (img2img).
  // Traces encode.conv_in, encode.down.{0..levels-1}, encode.mid, encode.moments, encode.mean.
  Tensor encode(const Tensor& image) const;

 private:
  VaeConfig config_;
  EncoderWeights w_;
};

}  // namespace chroma::vae

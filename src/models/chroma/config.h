// Chroma DiT sizes (chroma-spec.md §3 constants, reference README §4 "chroma-mini").
// Everything a checkpoint shows through its tensor names and shapes is read from it; the few
// values it cannot show (RoPE axes and theta, eps, patch size) are the fixed Chroma values.
#pragma once
#include <array>
#include <string>

#include "io/safetensors.h"

namespace chroma::dit {

// Tensor names are looked up under this prefix when a file carries it (sd.cpp and some merged
// checkpoints store "model.diffusion_model.img_in.weight"; flow stores bare "img_in.weight").
inline constexpr const char* kComfyPrefix = "model.diffusion_model.";
// "" or kComfyPrefix, whichever the file's img_in.weight uses (spec §1.1).
std::string weight_prefix(const io::WeightStore& weights);
// Whether the checkpoint is Chroma1-Radiance: it has img_in_patch.weight or nerf_final_layer_conv.*
// tensors (with or without kComfyPrefix).
bool is_radiance(const io::WeightStore& weights);

// Which architecture: the latent models (Chroma1-HD, -Base, -Flash: img_in and final_layer on Flux VAE
// latents) or Chroma1-Radiance (pixel space: img_in_patch and a per-patch decoder, docs/radiance.md).
enum class Architecture { Latent, Radiance };

// The sizes of Chroma1-Radiance's pixel path (docs/radiance.md §1), from its tensors.
struct RadianceConfig {
  int conv_patch = 0;      // img_in_patch kernel = stride (16)
  int nerf_hidden = 0;     // h: nerf_image_embedder.embedder.0.weight rows (64)
  int max_freqs = 0;       // F: DCT frequencies per axis; embedder columns = channels + F² (3 + 64)
  int nerf_depth = 0;      // number of nerf_blocks.N (4)
  int mlp_ratio = 0;       // param_generator rows = 3·h·(ratio·h) (49152 = 3·64·256)
  bool x0 = false;         // "__x0__" present: the network predicts x0, the velocity is (x_t − x0)/t
  bool patch32 = false;    // "__32x32__" present: ×2 nearest downsampling before img_in_patch, 32-pixel patches
  // Pixels per token side: the head's patch (conv_patch, or twice it with __32x32__).
  int pixel_patch() const { return patch32 ? 2 * conv_patch : conv_patch; }
  int mlp_hidden() const { return mlp_ratio * nerf_hidden; }  // 256
};

struct ChromaConfig {
  Architecture architecture = Architecture::Latent;
  RadianceConfig radiance;  // Architecture::Radiance only
  int hidden = 0;         // C: img_in.weight rows (3072)
  int heads = 0;          // H: hidden / head_dim (24)
  int head_dim = 0;       // D: length of *.query_norm.scale (128)
  int mlp_hidden = 0;     // M: double_blocks.0.img_mlp.0.weight rows (12288)
  int double_blocks = 0;  // number of double_blocks.N (19)
  int single_blocks = 0;  // number of single_blocks.N (38)
  int in_channels = 0;    // packed patch width: img_in.weight columns (64 = 16 latent channels · 2 · 2);
                          // Radiance: image channels, img_in_patch.weight dim 1 (3)
  int context_dim = 0;    // T5 width: txt_in.weight columns (4096)
  int approx_in = 0;      // approximator input width: in_proj.weight columns (64 = 16 + 16 + 32, spec §3.4)
  int approx_hidden = 0;  // approximator width: in_proj.weight rows (5120)
  int approx_layers = 0;  // number of distilled_guidance_layer.layers.N (5)
  int mod_rows = 0;       // modulation vectors: 3·S + 12·D + 2 (344, spec §3.4/§3.5)

  // Not visible in the weights (reference README §4: "inferable: no").
  std::array<int, 3> axes_dim = {16, 56, 56};  // RoPE dims per position axis; sum == head_dim
  double theta = 10000.0;                       // RoPE base
  int patch = 2;                                // 2×2 latent pixels per token
  float eps = 1e-6f;                            // LayerNorm and RMSNorm eps everywhere (spec §6.4)

  // Channels of the model's input and output: latent channels (16) or, for Radiance, RGB (3).
  int latent_channels() const { return architecture == Architecture::Radiance ? in_channels : in_channels / (patch * patch); }
  // Input pixels (latent or image) per token side: 2, or Radiance's pixel_patch() (16).
  int token_patch() const { return architecture == Architecture::Radiance ? radiance.pixel_patch() : patch; }
  // "Chroma1-Radiance" or "Chroma (latent)", for `chromacpp info` and -v.
  std::string architecture_name() const;
  int temb_dim() const { return approx_in / 4; }   // timestep and guidance embeddings (16 each)
  int index_dim() const { return approx_in / 2; }  // modulation-index embedding (32)

  // Every size from tensor names and shapes (with or without kComfyPrefix). Throws chroma::Error
  // naming the tensor when one is missing or the shapes disagree with each other.
  static ChromaConfig from_weights(const io::WeightStore& weights);
};

}  // namespace chroma::dit

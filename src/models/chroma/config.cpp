// ChromaConfig::from_weights — sizes from tensor names and shapes (reference README §4).
#include "models/chroma/config.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace chroma::dit {

std::string weight_prefix(const io::WeightStore& weights) {
  for (const char* first : {"img_in.weight", "img_in_patch.weight"}) {
    if (weights.has(first)) return "";
    if (weights.has(std::string(kComfyPrefix) + first)) return kComfyPrefix;
  }
  return "";
}

bool is_radiance(const io::WeightStore& weights) {
  const std::string p = weight_prefix(weights);
  if (weights.has(p + "img_in_patch.weight")) return true;
  const std::string head = p + "nerf_final_layer_conv.";
  const auto it = weights.tensors().lower_bound(head);
  return it != weights.tensors().end() && it->first.starts_with(head);
}

std::string ChromaConfig::architecture_name() const {
  return architecture == Architecture::Radiance ? "Chroma1-Radiance" : "Chroma (latent)";
}

namespace {

// The named tensor's shape, checked to have `rank` dims.
const Shape& shape_of(const io::WeightStore& weights, const std::string& name, size_t rank) {
  const TensorView& v = weights.require(name);
  if (v.shape.size() != rank)
    throw Error(v.file + ": tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " +
                std::to_string(rank) + " dims");
  return v.shape;
}

void check(bool ok, const io::WeightStore& weights, const std::string& what) {
  if (!ok) throw Error(weights.path() + ": not a Chroma DiT checkpoint: " + what);
}

}  // namespace

ChromaConfig ChromaConfig::from_weights(const io::WeightStore& weights) {
  const std::string p = weight_prefix(weights);
  ChromaConfig c;
  if (is_radiance(weights)) {
    // Chroma1-Radiance (docs/radiance.md §1): a patch conv instead of img_in, a per-patch decoder
    // (nerf_*) instead of final_layer and the VAE.
    c.architecture = Architecture::Radiance;
    RadianceConfig& r = c.radiance;
    const Shape& conv = shape_of(weights, p + "img_in_patch.weight", 4);  // [C, 3, 16, 16]
    c.hidden = int(conv[0]);
    c.in_channels = int(conv[1]);
    check(conv[2] == conv[3] && conv[2] > 0, weights,
          "img_in_patch.weight has shape " + shape_str(conv) + ", expected a square kernel [C, 3, p, p]");
    r.conv_patch = int(conv[2]);
    const Shape& emb = shape_of(weights, p + "nerf_image_embedder.embedder.0.weight", 2);  // [64, 3 + 64]
    r.nerf_hidden = int(emb[0]);
    const int64_t freqs2 = emb[1] - c.in_channels;
    r.max_freqs = int(std::lround(std::sqrt(double(std::max<int64_t>(freqs2, 0)))));
    check(freqs2 > 0 && int64_t(r.max_freqs) * r.max_freqs == freqs2, weights,
          "nerf_image_embedder.embedder.0.weight has " + std::to_string(emb[1]) + " columns, expected " +
              std::to_string(c.in_channels) + " + a square number of DCT features");
    r.nerf_depth = weights.count_indexed(p + "nerf_blocks.");
    check(r.nerf_depth > 0, weights, "no nerf_blocks.N tensors");
    const int64_t gen = shape_of(weights, p + "nerf_blocks.0.param_generator.weight", 2)[0];  // [3·h·rh, C]
    const int64_t per_ratio = 3 * int64_t(r.nerf_hidden) * r.nerf_hidden;
    check(r.nerf_hidden > 0 && gen > 0 && gen % per_ratio == 0, weights,
          "nerf_blocks.0.param_generator.weight has " + std::to_string(gen) + " rows, not a multiple of 3·" +
              std::to_string(r.nerf_hidden) + "²");
    r.mlp_ratio = int(gen / per_ratio);
    r.x0 = weights.has(p + "__x0__");
    r.patch32 = weights.has(p + "__32x32__");
  } else {
    const Shape& img_in = shape_of(weights, p + "img_in.weight", 2);  // [C, 64]
    c.hidden = int(img_in[0]);
    c.in_channels = int(img_in[1]);
  }
  c.context_dim = int(shape_of(weights, p + "txt_in.weight", 2)[1]);  // [C, 4096]

  c.double_blocks = weights.count_indexed(p + "double_blocks.");
  c.single_blocks = weights.count_indexed(p + "single_blocks.");
  check(c.double_blocks + c.single_blocks > 0, weights, "no double_blocks.N or single_blocks.N tensors");

  // Head dim and MLP width from the first block of either kind (real checkpoints have both).
  if (c.double_blocks > 0) {
    c.head_dim = int(shape_of(weights, p + "double_blocks.0.img_attn.norm.query_norm.scale", 1)[0]);
    c.mlp_hidden = int(shape_of(weights, p + "double_blocks.0.img_mlp.0.weight", 2)[0]);
  } else {
    c.head_dim = int(shape_of(weights, p + "single_blocks.0.norm.query_norm.scale", 1)[0]);
    // linear1 rows = 3·C (qkv) + M (MLP fc1), spec §1.1
    c.mlp_hidden = int(shape_of(weights, p + "single_blocks.0.linear1.weight", 2)[0]) - 3 * c.hidden;
  }
  check(c.head_dim > 0 && c.hidden % c.head_dim == 0, weights,
        "hidden size " + std::to_string(c.hidden) + " is not a multiple of the head dim " + std::to_string(c.head_dim));
  c.heads = c.hidden / c.head_dim;
  check(c.mlp_hidden > 0, weights, "MLP width " + std::to_string(c.mlp_hidden) + " is not positive");

  const Shape& in_proj = shape_of(weights, p + "distilled_guidance_layer.in_proj.weight", 2);  // [5120, 64]
  c.approx_hidden = int(in_proj[0]);
  c.approx_in = int(in_proj[1]);
  c.approx_layers = weights.count_indexed(p + "distilled_guidance_layer.layers.");
  c.mod_rows = 3 * c.single_blocks + 12 * c.double_blocks + 2;

  // The fixed values must fit the inferred ones.
  const int axes_sum = std::accumulate(c.axes_dim.begin(), c.axes_dim.end(), 0);
  check(axes_sum == c.head_dim, weights,
        "head dim " + std::to_string(c.head_dim) + " differs from the RoPE axes sum " + std::to_string(axes_sum));
  check(c.architecture == Architecture::Radiance || (c.in_channels > 0 && c.in_channels % (c.patch * c.patch) == 0), weights,
        "img_in.weight has " + std::to_string(c.in_channels) + " columns, not a multiple of 4 (2x2 patches)");
  check(c.approx_in > 0 && c.approx_in % 4 == 0, weights,
        "approximator input width " + std::to_string(c.approx_in) + " is not a multiple of 4 (16 + 16 + 32 split)");
  return c;
}

}  // namespace chroma::dit

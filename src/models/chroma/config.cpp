// ChromaConfig::from_weights — sizes from tensor names and shapes (reference README §4).
#include "models/chroma/config.h"

#include <numeric>

namespace chroma::dit {

std::string weight_prefix(const io::WeightStore& weights) {
  if (!weights.has("img_in.weight") && weights.has(std::string(kComfyPrefix) + "img_in.weight")) return kComfyPrefix;
  return "";
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
  // Chroma1-Radiance works in pixel space (a patch conv img_in_patch instead of img_in, a per-patch
  // decoder nerf_* instead of the VAE): recognised by those tensors and named, not run.
  if (weights.has(p + "nerf_final_layer_conv.weight") || weights.has(p + "img_in_patch.weight"))
    throw Error(weights.path() + ": a Chroma1-Radiance checkpoint (pixel space: img_in_patch and nerf_* tensors); "
                "chroma.cpp runs the latent Chroma models (Chroma1-HD, Chroma1-Base, Chroma1-Flash) so far");
  ChromaConfig c;

  const Shape& img_in = shape_of(weights, p + "img_in.weight", 2);  // [C, 64]
  c.hidden = int(img_in[0]);
  c.in_channels = int(img_in[1]);
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
  check(c.in_channels > 0 && c.in_channels % (c.patch * c.patch) == 0, weights,
        "img_in.weight has " + std::to_string(c.in_channels) + " columns, not a multiple of 4 (2x2 patches)");
  check(c.approx_in > 0 && c.approx_in % 4 == 0, weights,
        "approximator input width " + std::to_string(c.approx_in) + " is not a multiple of 4 (16 + 16 + 32 split)");
  return c;
}

}  // namespace chroma::dit

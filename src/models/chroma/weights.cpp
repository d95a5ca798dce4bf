// Loading and checking the Chroma DiT tensors (chroma-spec.md §1.1 name table).
#include "models/chroma/weights.h"

#include <tuple>

namespace chroma::dit {

namespace {

// Every lookup goes through one place, so every tensor is checked for presence, shape and dtype.
struct Loader {
  const io::WeightStore& store;
  std::string prefix;

  TensorView tensor(const std::string& name, const Shape& shape) const { return store.require(prefix + name, shape); }
  LinearWeights linear(const std::string& name, int64_t out, int64_t in) const {
    return {tensor(name + ".weight", {out, in}), tensor(name + ".bias", {out})};
  }
};

// Row block [begin, end) of a linear layer: a sub-layer packed into a larger matrix.
LinearWeights row_block(const LinearWeights& l, int64_t begin, int64_t end) {
  return {l.weight.rows(begin, end), l.bias.rows(begin, end)};
}

// Q | K | V row blocks of a packed projection `packed` ([≥3C, C]) plus the QK-norm scales under `norm`.
QkvWeights load_qkv(const Loader& ld, const LinearWeights& packed, const std::string& norm, const ChromaConfig& c) {
  const int64_t C = c.hidden;
  return {.q = row_block(packed, 0, C),
          .k = row_block(packed, C, 2 * C),
          .v = row_block(packed, 2 * C, 3 * C),
          .query_norm = ld.tensor(norm + ".query_norm.scale", {c.head_dim}),
          .key_norm = ld.tensor(norm + ".key_norm.scale", {c.head_dim})};
}

AttentionWeights load_attention(const Loader& ld, const std::string& name, const ChromaConfig& c) {
  const int64_t C = c.hidden;
  return {.qkv = load_qkv(ld, ld.linear(name + ".qkv", 3 * C, C), name + ".norm", c),
          .proj = ld.linear(name + ".proj", C, C)};
}

MlpWeights load_mlp(const Loader& ld, const std::string& name, const ChromaConfig& c) {
  return {.fc1 = ld.linear(name + ".0", c.mlp_hidden, c.hidden), .fc2 = ld.linear(name + ".2", c.hidden, c.mlp_hidden)};
}

}  // namespace

ChromaWeights load_weights(const io::WeightStore& store, const ChromaConfig& c) {
  const Loader ld{store, weight_prefix(store)};
  const int64_t C = c.hidden, M = c.mlp_hidden, X = c.approx_hidden;
  ChromaWeights w;
  if (c.architecture == Architecture::Radiance) {
    const RadianceConfig& r = c.radiance;
    const int64_t h = r.nerf_hidden, Ci = c.in_channels;
    w.radiance.patch_weight = ld.tensor("img_in_patch.weight", {C, Ci, r.conv_patch, r.conv_patch});
    w.radiance.patch_bias = ld.tensor("img_in_patch.bias", {C});
    w.radiance.embedder = ld.linear("nerf_image_embedder.embedder.0", h, Ci + int64_t(r.max_freqs) * r.max_freqs);
    for (int i = 0; i < r.nerf_depth; ++i) {
      const std::string b = "nerf_blocks." + std::to_string(i) + ".";
      w.radiance.blocks.push_back({.param_generator = ld.linear(b + "param_generator", 3 * h * r.mlp_hidden(), C),
                                   .norm = ld.tensor(b + "norm.scale", {h})});
    }
    w.radiance.final_norm = ld.tensor("nerf_final_layer_conv.norm.scale", {h});
    w.radiance.conv_weight = ld.tensor("nerf_final_layer_conv.conv.weight", {Ci, h, 3, 3});
    w.radiance.conv_bias = ld.tensor("nerf_final_layer_conv.conv.bias", {Ci});
  } else {
    w.img_in = ld.linear("img_in", C, c.in_channels);
  }
  w.txt_in = ld.linear("txt_in", C, c.context_dim);

  const std::string ag = "distilled_guidance_layer.";
  w.approximator.in_proj = ld.linear(ag + "in_proj", X, c.approx_in);
  for (int i = 0; i < c.approx_layers; ++i) {
    const std::string n = std::to_string(i);
    w.approximator.layers.push_back({.norm = ld.tensor(ag + "norms." + n + ".scale", {X}),
                                     .in_layer = ld.linear(ag + "layers." + n + ".in_layer", X, X),
                                     .out_layer = ld.linear(ag + "layers." + n + ".out_layer", X, X)});
  }
  w.approximator.out_proj = ld.linear(ag + "out_proj", C, X);

  for (int i = 0; i < c.double_blocks; ++i) {
    const std::string b = "double_blocks." + std::to_string(i) + ".";
    w.double_blocks.push_back({.img_attn = load_attention(ld, b + "img_attn", c),
                               .txt_attn = load_attention(ld, b + "txt_attn", c),
                               .img_mlp = load_mlp(ld, b + "img_mlp", c),
                               .txt_mlp = load_mlp(ld, b + "txt_mlp", c)});
  }
  for (int i = 0; i < c.single_blocks; ++i) {
    const std::string b = "single_blocks." + std::to_string(i) + ".";
    const LinearWeights linear1 = ld.linear(b + "linear1", 3 * C + M, C);
    w.single_blocks.push_back({.qkv = load_qkv(ld, linear1, b + "norm", c),
                               .mlp_in = row_block(linear1, 3 * C, 3 * C + M),
                               .linear2 = ld.linear(b + "linear2", C, C + M)});
  }
  // Output width = input width: the velocity has the latent's shape (patch size 1 inside the DiT).
  // Radiance has no final_layer (its head replaces it).
  if (c.architecture == Architecture::Latent) w.final_linear = ld.linear("final_layer.linear", c.in_channels, C);
  return w;
}

// The same names as load_weights, module by module (without ".weight").
std::map<std::string, std::vector<LinearWeights*>> linear_layers(ChromaWeights& w) {
  std::map<std::string, std::vector<LinearWeights*>> m;
  // Radiance's img_in and final_layer are absent (empty views): not adaptable. Its head's layers
  // (img_in_patch, nerf_*) are not offered to LoRAs.
  const bool latent = bool(w.img_in.weight);
  if (latent) m["img_in"] = {&w.img_in};
  m["txt_in"] = {&w.txt_in};
  const std::string ag = "distilled_guidance_layer.";
  m[ag + "in_proj"] = {&w.approximator.in_proj};
  for (size_t i = 0; i < w.approximator.layers.size(); ++i) {
    ApproximatorLayerWeights& l = w.approximator.layers[i];
    m[ag + "layers." + std::to_string(i) + ".in_layer"] = {&l.in_layer};
    m[ag + "layers." + std::to_string(i) + ".out_layer"] = {&l.out_layer};
  }
  m[ag + "out_proj"] = {&w.approximator.out_proj};
  for (size_t i = 0; i < w.double_blocks.size(); ++i) {
    DoubleBlockWeights& b = w.double_blocks[i];
    const std::string p = "double_blocks." + std::to_string(i) + ".";
    for (auto [stream, attn, mlp] : {std::tuple{"img", &b.img_attn, &b.img_mlp}, std::tuple{"txt", &b.txt_attn, &b.txt_mlp}}) {
      m[p + stream + "_attn.qkv"] = {&attn->qkv.q, &attn->qkv.k, &attn->qkv.v};
      m[p + stream + "_attn.proj"] = {&attn->proj};
      m[p + stream + "_mlp.0"] = {&mlp->fc1};
      m[p + stream + "_mlp.2"] = {&mlp->fc2};
    }
  }
  for (size_t i = 0; i < w.single_blocks.size(); ++i) {
    SingleBlockWeights& b = w.single_blocks[i];
    const std::string p = "single_blocks." + std::to_string(i) + ".";
    m[p + "linear1"] = {&b.qkv.q, &b.qkv.k, &b.qkv.v, &b.mlp_in};
    m[p + "linear2"] = {&b.linear2};
  }
  if (latent) m["final_layer.linear"] = {&w.final_linear};
  return m;
}

}  // namespace chroma::dit

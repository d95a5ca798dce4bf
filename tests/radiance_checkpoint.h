// A mini Chroma1-Radiance checkpoint written by the tests themselves (docs/radiance.md §1 names and
// shapes at tiny sizes): a 1-head DiT of width 128 (the RoPE axes fix the head dim at 128) with one
// block of each kind, and the pixel path — img_in_patch, nerf_image_embedder, nerf_blocks,
// nerf_final_layer_conv — at the sizes of MiniRadiance. Deterministic pseudo-random float32 weights.
#pragma once
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"
#include "testdata.h"

namespace chroma::test {

struct MiniRadiance {
  int conv_patch = 4;    // img_in_patch kernel = stride (16 in the real model)
  int nerf_hidden = 8;   // 64
  int max_freqs = 3;     // 8
  int nerf_depth = 2;    // 4
  int mlp_ratio = 2;     // 4
  int context = 8;       // T5 width (4096)
  bool x0 = false;       // writes "__x0__"
  bool patch32 = false;  // writes "__32x32__"
  uint32_t seed = 7;
};

inline std::map<std::string, Tensor> mini_radiance_tensors(const MiniRadiance& o) {
  constexpr int64_t C = 128, M = 256, X = 32;
  std::map<std::string, Tensor> m;
  std::mt19937 rng(o.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  // Weights ~ N(0, 1/fan_in) keep activations of order 1; norm scales near 1.
  auto add = [&](const std::string& name, Shape shape, float stddev, float mean = 0.0f) {
    Tensor t(shape);
    for (float& v : t.values()) v = mean + stddev * normal(rng);
    m[name] = std::move(t);
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    add(name + ".weight", {out, in}, 1.0f / std::sqrt(float(in)));
    add(name + ".bias", {out}, 0.1f);
  };
  const int64_t h = o.nerf_hidden, F2 = int64_t(o.max_freqs) * o.max_freqs, mh = int64_t(o.mlp_ratio) * h;
  add("img_in_patch.weight", {C, 3, o.conv_patch, o.conv_patch}, 1.0f / float(o.conv_patch) / std::sqrt(3.0f));
  add("img_in_patch.bias", {C}, 0.1f);
  linear("txt_in", C, o.context);
  linear("distilled_guidance_layer.in_proj", X, 64);
  add("distilled_guidance_layer.norms.0.scale", {X}, 0.1f, 1.0f);
  linear("distilled_guidance_layer.layers.0.in_layer", X, X);
  linear("distilled_guidance_layer.layers.0.out_layer", X, X);
  linear("distilled_guidance_layer.out_proj", C, X);
  for (const std::string s : {"img", "txt"}) {
    linear("double_blocks.0." + s + "_attn.qkv", 3 * C, C);
    add("double_blocks.0." + s + "_attn.norm.query_norm.scale", {128}, 0.1f, 1.0f);
    add("double_blocks.0." + s + "_attn.norm.key_norm.scale", {128}, 0.1f, 1.0f);
    linear("double_blocks.0." + s + "_attn.proj", C, C);
    linear("double_blocks.0." + s + "_mlp.0", M, C);
    linear("double_blocks.0." + s + "_mlp.2", C, M);
  }
  linear("single_blocks.0.linear1", 3 * C + M, C);
  linear("single_blocks.0.linear2", C, C + M);
  add("single_blocks.0.norm.query_norm.scale", {128}, 0.1f, 1.0f);
  add("single_blocks.0.norm.key_norm.scale", {128}, 0.1f, 1.0f);
  linear("nerf_image_embedder.embedder.0", h, 3 + F2);
  for (int i = 0; i < o.nerf_depth; ++i) {
    const std::string b = "nerf_blocks." + std::to_string(i) + ".";
    linear(b + "param_generator", 3 * h * mh, C);
    add(b + "norm.scale", {h}, 0.1f, 1.0f);
  }
  add("nerf_final_layer_conv.norm.scale", {h}, 0.1f, 1.0f);
  add("nerf_final_layer_conv.conv.weight", {3, h, 3, 3}, 1.0f / std::sqrt(float(9 * h)));
  add("nerf_final_layer_conv.conv.bias", {3}, 0.1f);
  if (o.x0) m["__x0__"] = Tensor({0});
  if (o.patch32) m["__32x32__"] = Tensor({0});
  return m;
}

inline std::string write_radiance(const std::map<std::string, Tensor>& tensors, const std::string& file) {
  const std::string path = temp_path(file).string();
  std::vector<io::NamedTensor> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, &t});
  io::write_safetensors(path, entries);
  return path;
}

}  // namespace chroma::test

// Writes a full-size Chroma1-Radiance checkpoint with random bf16 weights, in the exact tensor names
// and shapes of the published model (docs/radiance.md §1), for timing and memory measurements
// (docs/PERFORMANCE.md). Not a usable model: weights are uniform with a standard deviation of 0.02
// (biases too), norm scales 1 ± a little; the images are noise.
//   cmake --build build --target make_random_radiance
//   ./build/make_random_radiance OUT.safetensors [--no-x0] [--patch32] [--double N] [--single N] [--seed S]
// The tensors are generated while they are written (one at a time, in chunks), so the ~19 GB file
// never has to fit in memory. Flags: "__x0__" (default on) and "__32x32__" as empty F32 tensors [0],
// as the author's trainer stores them.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tensor/tensor.h"

using namespace chroma;

namespace {

enum class Init { Weight, NormScale, Empty };

struct Spec {
  std::string name;
  Shape shape;
  Init init = Init::Weight;
};

std::vector<Spec> radiance_tensors(int n_double, int n_single, bool x0, bool patch32) {
  // The real model's sizes (flow model_dct.py chroma_params).
  const int64_t C = 3072, T = 4096, D = 128, M = 12288, A = 64, X = 5120, layers = 5;
  const int64_t p = 16, h = 64, F = 8, ratio = 4, Ci = 3;
  std::vector<Spec> v;
  auto add = [&](const std::string& name, Shape shape, Init init = Init::Weight) { v.push_back({name, std::move(shape), init}); };
  // The flags first: empty F32 tensors at offset 0 (any later offset would have to be 4-aligned).
  if (x0) add("__x0__", {0}, Init::Empty);
  if (patch32) add("__32x32__", {0}, Init::Empty);
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    add(name + ".weight", {out, in});
    add(name + ".bias", {out});
  };
  add("img_in_patch.weight", {C, Ci, p, p});
  add("img_in_patch.bias", {C});
  linear("txt_in", C, T);
  linear("distilled_guidance_layer.in_proj", X, A);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = "distilled_guidance_layer.layers." + std::to_string(i);
    linear(l + ".in_layer", X, X);
    linear(l + ".out_layer", X, X);
    add("distilled_guidance_layer.norms." + std::to_string(i) + ".scale", {X}, Init::NormScale);
  }
  linear("distilled_guidance_layer.out_proj", C, X);
  for (int i = 0; i < n_double; ++i) {
    const std::string b = "double_blocks." + std::to_string(i) + ".";
    for (const std::string s : {"img", "txt"}) {
      linear(b + s + "_attn.qkv", 3 * C, C);
      add(b + s + "_attn.norm.query_norm.scale", {D}, Init::NormScale);
      add(b + s + "_attn.norm.key_norm.scale", {D}, Init::NormScale);
      linear(b + s + "_attn.proj", C, C);
      linear(b + s + "_mlp.0", M, C);
      linear(b + s + "_mlp.2", C, M);
    }
  }
  for (int i = 0; i < n_single; ++i) {
    const std::string b = "single_blocks." + std::to_string(i) + ".";
    linear(b + "linear1", 3 * C + M, C);
    linear(b + "linear2", C, C + M);
    add(b + "norm.query_norm.scale", {D}, Init::NormScale);
    add(b + "norm.key_norm.scale", {D}, Init::NormScale);
  }
  linear("nerf_image_embedder.embedder.0", h, Ci + F * F);
  for (int i = 0; i < 4; ++i) {
    const std::string b = "nerf_blocks." + std::to_string(i) + ".";
    linear(b + "param_generator", 3 * h * ratio * h, C);
    add(b + "norm.scale", {h}, Init::NormScale);
  }
  add("nerf_final_layer_conv.norm.scale", {h}, Init::NormScale);
  add("nerf_final_layer_conv.conv.weight", {Ci, h, 3, 3});
  add("nerf_final_layer_conv.conv.bias", {Ci});
  return v;
}

// splitmix64: a fast, well-mixed stream per (tensor, chunk) so threads need no shared state.
uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t name_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: make_random_radiance OUT.safetensors [--no-x0] [--patch32] [--double N] [--single N] [--seed S]\n");
    return 2;
  }
  const std::string out = argv[1];
  bool x0 = true, patch32 = false;
  int n_double = 19, n_single = 38;
  uint64_t seed = 1234;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "make_random_radiance: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    if (a == "--no-x0") x0 = false;
    else if (a == "--patch32") patch32 = true;
    else if (a == "--double") n_double = int(next());
    else if (a == "--single") n_single = int(next());
    else if (a == "--seed") seed = uint64_t(next());
    else {
      std::fprintf(stderr, "make_random_radiance: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const std::vector<Spec> specs = radiance_tensors(n_double, n_single, x0, patch32);

  // Header: every tensor at its offset, data in list order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}, {"generator", "chroma.cpp make_random_radiance (random weights)"}};
  uint64_t offset = 0, params = 0;
  for (const Spec& s : specs) {
    const bool empty = s.init == Init::Empty;
    const uint64_t bytes = uint64_t(shape_numel(s.shape)) * (empty ? 4 : 2);
    header[s.name] = {{"dtype", empty ? "F32" : "BF16"}, {"shape", s.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    params += uint64_t(shape_numel(s.shape));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::ofstream f(out, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "make_random_radiance: cannot write %s\n", out.c_str());
    return 1;
  }
  const uint64_t n = text.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(text.data(), std::streamsize(text.size()));

  constexpr int64_t kChunk = int64_t(1) << 22;  // values generated per task
  const float a = 0.02f * std::sqrt(3.0f);       // uniform(−a, a): standard deviation 0.02
  std::vector<uint16_t> buf;
  for (const Spec& s : specs) {
    const int64_t count = shape_numel(s.shape);
    if (s.init == Init::Empty) continue;
    buf.resize(size_t(count));
    const uint64_t base = seed ^ name_hash(s.name);
#pragma omp parallel for schedule(dynamic)
    for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
      uint64_t state = base + uint64_t(c0);
      const int64_t c1 = std::min(count, c0 + kChunk);
      for (int64_t i = c0; i < c1; ++i) {
        const float u = float(splitmix(state) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [−1, 1)
        const float value = s.init == Init::NormScale ? 1.0f + a * u : a * u;
        buf[size_t(i)] = f32_to_bf16(value);
      }
    }
    f.write(reinterpret_cast<const char*>(buf.data()), std::streamsize(count * 2));
  }
  f.close();
  if (!f) {
    std::fprintf(stderr, "make_random_radiance: writing %s failed\n", out.c_str());
    return 1;
  }
  std::fprintf(stderr, "make_random_radiance: %zu tensors, %.3f B parameters, %.2f GB → %s\n", specs.size(),
               double(params) / 1e9, double(offset) / 1e9, out.c_str());
  return 0;
}

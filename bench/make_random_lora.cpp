// Writes a random LoRA of rank R for every block Linear of a Chroma DiT checkpoint (the layers
// ai-toolkit trains: qkv, proj, the MLPs, linear1, linear2), BFL names with lora_A/lora_B (no alpha: scale 1),
// bf16 — the file the runtime-LoRA cost is measured with (docs/PERFORMANCE.md). Not a test.
//   cmake --build build --target make_random_lora && ./build/make_random_lora DIT.safetensors RANK OUT.safetensors
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"

using namespace chroma;

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: make_random_lora DIT.safetensors RANK OUT.safetensors\n");
    return 2;
  }
  try {
    io::WeightStore dit = io::WeightStore::open(argv[1]);
    dit.strip_prefix("model.diffusion_model.");
    const int64_t rank = std::atoll(argv[2]);
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<std::vector<uint16_t>> storage;  // bf16 bits, alive until written
    std::vector<TensorView> views;
    auto add = [&](const std::string& name, Shape shape) {
      std::vector<uint16_t>& bits = storage.emplace_back(size_t(shape_numel(shape)));
      for (uint16_t& b : bits) b = f32_to_bf16(normal(rng));
      TensorView v;
      v.name = name;
      v.dtype = DType::BF16;
      v.shape = std::move(shape);
      v.values() = bits.data();
      v.nbytes = bits.size() * 2;
      views.push_back(v);
    };
    storage.reserve(4096);
    for (const auto& [name, w] : dit.tensors()) {
      const bool block = name.starts_with("double_blocks.") || name.starts_with("single_blocks.");
      if (!block || w.shape.size() != 2 || !name.ends_with(".weight")) continue;
      const std::string module = name.substr(0, name.size() - 7);
      add(module + ".lora_A.weight", {rank, w.dim(1)});
      add(module + ".lora_B.weight", {w.dim(0), rank});
    }
    const size_t n = views.size() / 2;
    io::write_safetensors_views(argv[3], views, {{"rank", std::to_string(rank)}});
    std::fprintf(stderr, "make_random_lora: %zu layers at rank %lld → %s\n", n, (long long)rank, argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_random_lora: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

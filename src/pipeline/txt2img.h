// Text to image, end to end (chroma-spec.md §2–§5): tokenize → T5 → Euler/CFG over the Chroma DiT
// → Flux VAE decode. Each model is resident only while its phase runs.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/dump.h"
#include "pipeline/phase_stats.h"
#include "tensor/tensor.h"

namespace chroma::pipeline {

struct ModelFiles {
  std::string dit;        // Chroma DiT safetensors (original names, optional "model.diffusion_model." prefix)
  std::string t5;         // T5-XXL safetensors file, shard index, or folder with an index
  std::string vae;        // Flux ae.safetensors
  std::string tokenizer;  // T5 spiece.model
};

// How the sampler state is kept between steps.
enum class SamplerDtype {
  F32,   // float32 latent, timesteps and CFG/Euler arithmetic (default; ComfyUI's behaviour)
  BF16,  // the author's reference sampler: bf16 latent and timestep, one bf16 rounding per op
};

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int width = 1024, height = 1024;  // pixels, multiples of 16
  int steps = 28;
  float cfg = 4.0f;
  int skip_cfg_steps = 0;           // first N steps without the negative pass; −1 = never CFG
  uint64_t seed = 0;
  bool shift = true;                // flow's resolution-dependent schedule shift; false = linear
  std::string init_noise;           // safetensors with one F32 [1,16,H/8,W/8] tensor, replaces the seed's noise
  SamplerDtype sampler_dtype = SamplerDtype::F32;
  bool low_memory = false;          // --low-memory: models release each block's weight pages after use (memory_plan.h)
  bool memory_check = true;         // false: --no-memory-check, skip the refusal when the estimate exceeds MemAvailable
};

struct GenerateResult {
  Tensor latent;                    // final latent [1, 16, H/8, W/8]
  Tensor image;                     // VAE output [1, 3, H, W], unclamped
  std::vector<PhaseStats> phases;
};

// Checks the options before anything is loaded; throws chroma::Error naming the bad value.
void validate(const GenerateOptions& options);

// Called after each denoising step (1-based count, total).
using StepCallback = std::function<void(int done, int total)>;

GenerateResult generate(const ModelFiles& files, const GenerateOptions& options, const StepCallback& on_step = {},
                        Dump* dump = nullptr);

// The reference's 8-bit conversion (bfl save_image): clamp to [−1, 1], then trunc(127.5·(x + 1)).
// image [1, 3, H, W] → H·W·3 interleaved RGB bytes.
std::vector<uint8_t> to_rgb8(const Tensor& image);

// The initial latent: PyTorch CPU randn for the seed, or the file given by --init-noise.
Tensor initial_noise(const GenerateOptions& options);

}  // namespace chroma::pipeline

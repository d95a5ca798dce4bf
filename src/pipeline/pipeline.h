// The text-to-image pipeline as an object (chroma-spec.md §2–§5): it opens and checks the four model
// files once, then runs any number of requests — tokenize → T5 → the sampler over the Chroma DiT
// with real CFG → Flux VAE decode — each as three phases that can also be called alone. Every front
// end (CLI, bench, server) drives this class.
//
// Memory: weights are mapped, not read (io/safetensors.h); after each phase the model's pages leave
// the process (they stay in the page cache), so one model is resident at a time, as the memory plan
// assumes, while the files stay open and checked for the next request.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "models/chroma/variant.h"
#include "models/t5/t5.h"
#include "pipeline/dump.h"
#include "pipeline/memory_plan.h"
#include "pipeline/model_files.h"
#include "pipeline/phase_stats.h"
#include "pipeline/request.h"
#include "pipeline/run_context.h"
#include "sampling/denoise.h"
#include "tensor/error.h"
#include "tensor/tensor.h"
#include "text/prompt_weights.h"

namespace chroma::dit {
struct StepCache;  // models/chroma/model.h
}

namespace chroma::pipeline {

// The published Chroma variants (models/chroma/variant.h), for front ends.
using dit::detect_variant;
using dit::parse_variant;
using dit::Variant;
using dit::variant_choices;
using dit::variant_name;

// Settings of a loaded model set, fixed for the Pipeline's lifetime.
struct PipelineConfig {
  ModelFiles files;
  int threads = 0;           // worker threads (0 = all cores)
  Compute compute = Compute::Auto;  // --compute: the large products' arithmetic (backend.h): int8 for quantized weights
  bool low_memory = false;   // --low-memory: models release each block's weight pages after use (memory_plan.h)
  bool memory_check = true;  // false: --no-memory-check, skip the refusal when the estimate exceeds MemAvailable
  std::string lora_dir;      // where LoRA names (<lora:NAME:S>, --lora NAME) are looked up: NAME.safetensors
  bool lora_fuse = false;    // --lora-apply fuse: merged once per LoRA set into copies in the weights' type; else at run time
  // --variant: which published Chroma the DiT is, when its file name does not say (models/chroma/variant.h);
  // absent: from the tensors (Radiance) and the file's name.
  std::optional<dit::Variant> variant;
  // The compute backend (run_context.h); empty: the CPU backend.
  BackendFactory backend;
};

// The variant of config's DiT: config.variant when set, else from the checkpoint (dit::detect_variant).
// Opens the DiT file's header only; throws chroma::Error as the Pipeline's opening would.
dit::Variant model_variant(const PipelineConfig& config);

// The request a variant is made for, the starting point that front ends apply their options to:
// Chroma1-Flash (CFG baked in) 8 heun steps at cfg 1, so no negative pass; the defaults of
// GenerationRequest (the author's 28-step schedule at cfg 4) for the others.
GenerationRequest variant_defaults(dit::Variant variant);

// Where a run is, for progress displays and the server's job status.
struct Progress {
  enum class Phase { ImageEncoding, TextEncoding, Denoising, Decoding, Done };
  Phase phase = Phase::TextEncoding;
  int image = 1, images = 1;    // which image of the batch (1-based), of images
  int step = 0, steps = 0;      // denoising steps done, of steps
  double elapsed_seconds = 0;   // since the request started
  double step_seconds = 0;      // mean time of the steps done so far
  double eta_seconds = -1;      // estimated time to the end of the batch's denoising; −1 until a step has run
  // After a denoising step: the x0 estimate x − t·v of the step's last model evaluation [1, 16, H/8, W/8]
  // (previews, vae/preview.h; Chroma1-Radiance: the image [1, 3, H, W]). Only valid during the callback; null otherwise.
  const Tensor* denoised = nullptr;
};
const char* phase_name(Progress::Phase phase);

// Called at each phase start and after each denoising step; returning false cancels the run at that
// point (the request then throws Cancelled).
using ProgressCallback = std::function<bool(const Progress&)>;

// The run was cancelled by its progress callback.
class Cancelled : public Error {
 public:
  using Error::Error;
};

class ProgressReporter;  // pipeline.cpp

// Optional observers of one run.
struct RunHooks {
  ProgressCallback progress;
  Dump* dump = nullptr;                        // --dump: the reference data's names (dump.h)
  ops::profile::Profiler* profiler = nullptr;  // bench: per-op timing
};

struct GeneratedImage {
  Tensor latent;                  // final latent [1, 16, H/8, W/8]
  Tensor image;                   // VAE output [1, 3, H, W], unclamped
  std::vector<uint8_t> rgb;       // to_rgb8(image): H·W·3 bytes
  int width = 0, height = 0;
  std::optional<uint64_t> seed;   // the seed used (absent when the noise came from init_noise)
  int evaluations = 0, skipped_evaluations = 0;  // DiT evaluations, and those the step cache cut short (request.cache)
  // Everything that made this image: request_to_json with this image's seed and batch_count 1,
  // "models" (the model file names), "variant" (variant_name) and "compute" (compute_name of the
  // pipeline's --compute); output.h stores it with the image.
  nlohmann::json parameters;
  // The image as io::Image with its metadata chunks (output.h metadata_chunks).
  io::Image to_image() const;
};

struct GenerationResult {
  std::vector<GeneratedImage> images;  // batch_count of them
  std::vector<std::string> warnings;   // e.g. LoRA keys that matched no layer
  std::vector<PhaseStats> phases;  // (image encoding,) text encoding, denoising, decoding
};

// Inpainting's per-step blend: after each step the latent outside the mask is put back at that
// step's noise level, flow_noised(original, noise, t_next) (sampling/sampler.h), so the unmasked part
// follows the original image's path and the masked part is generated around it.
struct LatentBlend {
  Tensor original;  // the init image's latent [1, 16, h, w]
  Tensor noise;     // the request's noise, same shape
  Tensor mask;      // [1, 1, h, w] in [0, 1], 1 = repaint
};

// The text conditions of a request: T5 features of the prompt and, when some step runs CFG, of the
// negative prompt ([n + 1, 4096]: n valid rows + the one visible padding row, spec §2.3).
struct TextConditioning {
  Tensor positive;
  Tensor negative;  // empty when no step uses CFG
};

class Pipeline {
 public:
  // Opens every file and checks every tensor (mapped, not read); throws chroma::Error naming the
  // flag and the problem. Phase stats of the opening are in open_phases().
  explicit Pipeline(PipelineConfig config);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  const PipelineConfig& config() const { return config_; }
  int threads() const { return context_.threads(); }  // worker threads of its runs (0 resolved to the cores)
  Compute compute() const { return context_.compute(); }
  dit::Variant variant() const { return variant_; }  // which Chroma the DiT is (config.variant or detected)
  // variant_defaults(variant()): what an option a request leaves out should be (server, CLI).
  GenerationRequest default_request() const { return variant_defaults(variant_); }
  const std::vector<PhaseStats>& open_phases() const { return open_phases_; }
  // The DiT's variant and architecture, e.g. "Chroma1-HD (latent)" or "Chroma1-Radiance (pixel space,
  // x0 prediction, 16-pixel patches)", for -v.
  std::string model_name() const;
  // Whether the DiT is Chroma1-Radiance: the sampler's state is the image [1, 3, H, W] and no VAE runs.
  bool pixel_space() const;
  // The sampler's state for a request: the latent [1, 16, H/8, W/8], or Radiance's image [1, 3, H, W].
  Shape state_shape(const GenerationRequest& request) const;

  // One request, end to end: validate, memory check, noise, the three phases. Throws chroma::Error
  // (Cancelled when the progress callback asked).
  GenerationResult generate(const GenerationRequest& request, const RunHooks& hooks = {});

  // The phases, for callers that reuse or replace one of them. Each binds the pipeline's run
  // context (run_context.h) with the hooks' observers, moves its tensor arguments into the run's
  // backend and returns host tensors.
  // Emphasis such as "(word:1.2)" is read with `weighting` (text/prompt_weights.h); `padding` is how
  // T5 treats the prompts' padding (t5.h Padding).
  TextConditioning encode_text(const std::string& prompt, const std::optional<std::string>& negative_prompt,
                               const RunHooks& hooks = {},
                               text::PromptWeighting weighting = text::PromptWeighting::ComfyUI,
                               t5::Padding padding = t5::Padding::Flow) const;
  // The sampler from state x over schedule (a slice of the full schedule starting at index
  // first_step) with real CFG where request.cfg/skip_cfg_steps say, and the inpainting blend after
  // each step when given. Returns the final latent; throws Cancelled.
  // With `cache`, the DiT may skip blocks (dit::StepCache; one per image).
  Tensor denoise(const Tensor& x, std::span<const float> schedule, int first_step, const TextConditioning& text,
                 const GenerationRequest& request, const RunHooks& hooks = {}, const LatentBlend* blend = nullptr,
                 dit::StepCache* cache = nullptr) const;
  // Tiled (vae/tiled.h: 512-pixel tiles, 64 pixels of overlap) when `tiled`; the progress callback then
  // sees each tile as a step of the decoding phase and may cancel between tiles.
  Tensor decode(const Tensor& latent, const RunHooks& hooks = {}, bool tiled = false) const;
  // image [1, 3, H, W] in [−1, 1] → latent (the posterior mean, scaled and shifted; vae.h Encoder).
  // Throws chroma::Error when the VAE file has no encoder.
  Tensor encode_image(const Tensor& image, const RunHooks& hooks = {}) const;

 private:
  // The phases, reporting to a request-wide progress reporter.
  TextConditioning encode_text(const std::string& prompt, const std::optional<std::string>& negative_prompt,
                               text::PromptWeighting weighting, t5::Padding padding, const RunHooks& hooks,
                               ProgressReporter& progress) const;
  Tensor denoise(const Tensor& x, std::span<const float> schedule, int first_step, const TextConditioning& text,
                 const GenerationRequest& request, const RunHooks& hooks, const LatentBlend* blend,
                 dit::StepCache* cache, ProgressReporter& progress) const;
  Tensor decode(const Tensor& latent, const RunHooks& hooks, bool tiled, ProgressReporter& progress) const;
  Tensor encode_image(const Tensor& image, const RunHooks& hooks, ProgressReporter& progress) const;

  // The request's LoRAs (file list + prompt tags) with their paths found (--lora-dir), each file
  // opened and checked once per pipeline. In fuse mode the fused copies of a different set are freed.
  std::vector<LoraRequest> resolve_loras(const std::vector<LoraRequest>& loras);
  // What applying `resolved` costs in memory (memory_plan.h).
  LoraMemory lora_memory_of(const std::vector<LoraRequest>& resolved) const;
  // Applies `resolved` to the DiT when it differs from the current set; the base weights are never reopened.
  void use_loras(const std::vector<LoraRequest>& resolved, std::vector<std::string>& warnings);

  struct Models;  // tokenizer, T5, DiT, VAE and their weight stores (pipeline.cpp)
  std::vector<LoraRequest> active_loras_;  // resolved paths, as set_loras has them now
  PipelineConfig config_;
  RunContext context_;
  std::unique_ptr<Models> models_;
  dit::Variant variant_ = dit::Variant::Chroma;
  std::vector<PhaseStats> open_phases_;
};

// A seed from the system's random source, for requests that leave it to chance: at most 2^53 − 1, so
// that a JSON reader keeping numbers as doubles (JavaScript, the web page's "Reuse") reads it exactly.
constexpr uint64_t kMaxRandomSeed = (uint64_t(1) << 53) - 1;
uint64_t random_seed();

// The schedule of a request (sampling/schedule.h make_schedule; the author's flow schedule, spec §4.2,
// by default): at most steps + 1 times, from 1 to 0.
// For Chroma1-Radiance (pixel_space) the author's shift uses the sequence length its sampler passes,
// kRadianceScheduleSeqLen (docs/radiance.md §6), unless the request's shift rule is sd.cpp's.
inline constexpr int64_t kRadianceScheduleSeqLen = 3;
std::vector<float> request_schedule(const GenerationRequest& request, bool pixel_space = false);
// The index of the first step a request runs: 0 for text to image; steps − floor(strength·steps) with
// an init image (the rule of diffusers and stable-diffusion.cpp), so strength 0 runs no step. steps is
// the schedule's (request_schedule), which the beta scheduler may make shorter than request.steps.
int first_step(const GenerationRequest& request, bool pixel_space = false);

// The initial latent: PyTorch CPU randn for `seed`, or the request's init_noise file.
Tensor initial_noise(const GenerationRequest& request, uint64_t seed);
// The same for a state of the given shape (Pipeline::state_shape: Radiance draws [1, 3, H, W]).
Tensor initial_noise(const GenerationRequest& request, uint64_t seed, const Shape& shape);

// The reference's 8-bit conversion (bfl save_image): clamp to [−1, 1], then trunc(127.5·(x + 1)).
// image [1, 3, H, W] → H·W·3 interleaved RGB bytes.
std::vector<uint8_t> to_rgb8(const Tensor& image);

}  // namespace chroma::pipeline

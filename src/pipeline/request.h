// What one generation asks for, as data: the prompt and every sampling option, checked in one
// place (validate), and one table of those options (request_options) that every front end reads —
// `generate` and `bench` build their flags from it, the server its JSON fields, and the PNG
// metadata is written and read back through it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>

#include "io/image.h"

namespace chroma::t5 {
enum class Padding;  // models/t5/t5.h
}

namespace chroma::pipeline {

// How the sampler state is kept between steps (sampling/sampler.h).
enum class SamplerDtype {
  F32,   // float32 latent, timesteps and CFG/Euler arithmetic (default; ComfyUI's behaviour)
  BF16,  // the author's reference sampler: bf16 latent and timestep, one bf16 rounding per op
};

// One LoRA for a request: a file, or a name looked up in the pipeline's LoRA folder
// (PipelineConfig::lora_dir: NAME.safetensors there), at a strength multiplying its alpha/rank.
struct LoraRequest {
  std::string name;
  float scale = 1.0f;
  bool operator==(const LoraRequest&) const = default;
};

struct GenerationRequest {
  std::string prompt;
  std::string negative_prompt;
  int width = 1024, height = 1024;  // pixels, multiples of 16
  int steps = 28;
  float cfg = 4.0f;
  int skip_cfg_steps = 0;           // first N steps without the negative pass; −1 = never CFG
  std::optional<uint64_t> seed;     // absent: a random seed, chosen at run time and reported
  int batch_count = 1;              // images made with seeds seed, seed + 1, … (ComfyUI's and sd.cpp's rule)
  bool shift = true;                // flow's resolution-dependent schedule shift; false = linear
  std::string sampler = "euler";    // sampling::make_sampler
  std::string scheduler = "author"; // sampling::make_schedule: author, simple, beta, karras, exponential
  double beta_alpha = 0.6, beta_beta = 0.6;  // the beta scheduler's parameters (ComfyUI's defaults)
  SamplerDtype sampler_dtype = SamplerDtype::F32;
  std::string prompt_weighting = "comfyui";  // emphasis "(word:1.2)": comfyui, sdcpp or none (text/prompt_weights.h)
  // What T5 and the DiT see of the prompt's padding (t5.h Padding): author (the one padding row of the
  // author's outer-product mask), diffusers (that row under a key-padding mask), comfyui (no padding
  // row), sdcpp (512 ids without a T5 mask, the first n + 1 rows).
  std::string text_padding = "author";
  // How the shift's mu counts the image: author ((H/16)·(W/16) tokens, spec §4.2) or sdcpp
  // ((H/8)·(W/8), 4× the tokens, as sd.cpp passes it).
  std::string shift_rule = "author";
  std::string init_noise;           // safetensors with one F32 [1,16,H/8,W/8] tensor, replaces the seed's noise
  // Step cache: "" (off), "fbcache" (T = kDefaultCacheThreshold) or "fbcache:T" with T > 0 — skip the
  // DiT's blocks after the first when its change is below T (models/chroma/model.h StepCache). Off by
  // default: it trades fidelity for speed.
  std::string cache;
  bool vae_tiling = false;          // decode in overlapping tiles (vae/tiled.h); also chosen when the whole
                                    // image would not fit in memory

  // LoRAs on the DiT: these plus the <lora:NAME:SCALE> tags of the prompt (take_lora_tags).
  std::vector<LoraRequest> loras;

  // img2img and inpainting (pipeline/image_input.h for the fitting rule).
  std::string init_image;           // PNG/JPEG/WebP file to start from; "" = text to image
  float strength = 0.75f;           // 0..1: the last floor(strength·steps) steps run; 1 = from pure noise
  std::string mask;                 // image file, white = repaint (needs an init image)
  int mask_blur = 4;                // Gaussian blur of the mask in pixels (σ = blur/2)
  // The same images as pixels, used instead of the files when set (a server has no files).
  io::Image init_pixels, mask_pixels;

  bool has_init_image() const { return !init_image.empty() || init_pixels.width > 0; }
  bool has_mask() const { return !mask.empty() || mask_pixels.width > 0; }
};

// Throws chroma::Error naming the option (by its key and flag) and the bad value: sizes, step
// counts, a non-finite cfg, an unknown sampler, strength outside 0..1, a mask without an init image,
// text that is not UTF-8 (T5 reads UTF-8, and the PNG metadata is JSON).
void validate(const GenerationRequest& request);

// One option: its JSON key (server, PNG metadata), its command-line flags, help, and how its value
// is read from text and written back. Parsing is strict: the whole text must be a value in range.
struct RequestOption {
  const char* key;         // "negative_prompt"
  const char* flags;       // CLI11 names: "-n,--negative-prompt"
  const char* help;
  const char* flag_value;  // non-null: a flag without a value that sets the option to this text (--no-shift → "false")
  // Non-null for a repeatable option: each occurrence adds a value (--lora A --lora B), JSON gives an
  // array of texts, and this empties the list first.
  void (*clear)(GenerationRequest& request);
  void (*set)(GenerationRequest& request, const std::string& text);  // throws chroma::Error
  nlohmann::json (*get)(const GenerationRequest& request);
};
std::span<const RequestOption> request_options();

// Sets option `key` from text; throws chroma::Error naming the key for an unknown key or a bad value.
void set_option(GenerationRequest& request, const std::string& key, const std::string& text);

// The request as JSON (every option by key; seed null when absent), and back. request_from_json
// starts from `defaults`, rejects unknown keys and values of the wrong type, and validates.
nlohmann::json request_to_json(const GenerationRequest& request);
GenerationRequest request_from_json(const nlohmann::json& j, const GenerationRequest& defaults = {});

// Presets: the settings with which another front end makes its Chroma images (spec §2.2, §4.2–4.5), so
// that an image made there can be reproduced here up to its noise generator: author (flow's
// inference: bf16 sampler state, the author's padding and schedule), comfyui (the official
// Chroma1-HD template: beta schedule unshifted, 26 steps, cfg 3.5, no padding row), diffusers
// (ChromaPipeline: unshifted linear schedule, 35 steps, cfg 5, key-masked padding row, bf16 state),
// sdcpp (sd.cpp's CLI: flux schedule with its token count, 20 steps, cfg 7, unmasked T5 over 512
// ids, its emphasis rule). apply_preset sets those fields of `request` and leaves the others; throws
// chroma::Error for an unknown name. A JSON request's "preset" is applied before its other fields,
// and the command line's --preset before its other flags.
void apply_preset(GenerationRequest& request, const std::string& name);
// `--cache fbcache`'s threshold: ParaAttention's for FLUX.1-dev at 28 steps (its first-block cache
// documentation: residual_diff_threshold=0.08, the same relative-change rule), the trained model nearest
// Chroma; the random and mini models skip no evaluation below 0.5 (docs/PERFORMANCE.md), so it cannot
// cost them fidelity, and no real Chroma weights were at hand to tune it.
constexpr float kDefaultCacheThreshold = 0.08f;
// The first-block cache threshold of request.cache, 0 when off; throws chroma::Error naming the option
// for another text or a threshold that is not a finite number > 0.
float cache_threshold(const GenerationRequest& request);

// The request's text_padding as the T5 encoder's Padding; throws chroma::Error for an unknown name.
t5::Padding text_padding_of(const GenerationRequest& request);
std::string preset_names();  // "author, comfyui, diffusers, sdcpp"

// "FILE[:SCALE]" → a LoraRequest (the scale after the last ':' when it is a number; 1 otherwise).
LoraRequest parse_lora(const std::string& text);
std::string lora_text(const LoraRequest& lora);  // the inverse: "FILE:SCALE"

// Removes every <lora:NAME:SCALE> (or <lora:NAME>) tag from `prompt` (sd.cpp's and A1111's
// convention: the text T5 sees has no tags) and returns them in order. Throws chroma::Error for a
// tag without a name or with a scale that is not a finite number.
std::vector<LoraRequest> take_lora_tags(std::string& prompt);

// Whether `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool is_utf8(const std::string& text);

}  // namespace chroma::pipeline

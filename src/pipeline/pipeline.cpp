#include "pipeline/pipeline.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "io/lora.h"
#include "io/residency.h"
#include "io/safetensors.h"
#include "models/chroma/model.h"
#include "models/t5/t5.h"
#include "models/vae/vae.h"
#include "pipeline/heap.h"
#include "pipeline/image_input.h"
#include "pipeline/output.h"
#include "pipeline/memory_plan.h"
#include "models/vae/tiled.h"
#include "sampling/rng.h"
#include "sampling/schedule.h"
#include "text/tokenizer.h"

namespace chroma::pipeline {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kLatentChannels = 16;  // Flux VAE z_channels; the DiT's 64 inputs are 16 × 2 × 2

// Weight files sometimes carry the prefix a UI used to store several models in one file.
constexpr const char* kT5Prefix = "text_encoders.t5xxl.transformer.";
constexpr const char* kDitPrefix = "model.diffusion_model.";
constexpr const char* kVaePrefix = "first_stage_model.";

io::WeightStore open_weights(const std::string& path, const char* prefix) {
  io::WeightStore w = io::WeightStore::open(path);
  w.strip_prefix(prefix);
  return w;
}

// Runs `open` for the file behind `flag`, naming the flag in any error.
template <class F>
auto open_for(const char* flag, const std::string& path, F open) {
  if (path.empty()) throw Error(std::string(flag) + ": no file given");
  try {
    return open(path);
  } catch (const Error& e) {
    throw Error(std::string(flag) + " " + e.what());
  }
}

// NaN/Inf from a model means corrupt weights or an overflow: stop rather than write a wrong image.
void require_finite(const Tensor& t, const char* what) {
  Tensor copy;
  if (!ops::all_finite(ops::backend_readable(t, copy))) throw Error(std::string(what) + " produced non-finite values (NaN or Inf): corrupt weights?");
}

// ComfyUI's VAEDecodeTiled defaults: 512-pixel tiles with 64 pixels of overlap (latent pixels here).
constexpr vae::Tiling kVaeTiling{64, 8};

text::PromptWeighting prompt_weighting_of(const GenerationRequest& r) {
  text::PromptWeighting w = text::PromptWeighting::ComfyUI;
  if (!text::parse_prompt_weighting(r.prompt_weighting, &w)) throw Error("unknown prompt weighting '" + r.prompt_weighting + "'");
  return w;
}

sampling::SamplerPrecision precision_of(const GenerationRequest& r) {
  return r.sampler_dtype == SamplerDtype::BF16 ? sampling::SamplerPrecision::BF16 : sampling::SamplerPrecision::F32;
}

// Whether a step the request runs (from `first` on, of `steps`) uses CFG, i.e. needs the negative prompt.
bool any_cfg(const GenerationRequest& r, int first, int steps) {
  for (int i = first; i < steps; ++i)
    if (sampling::uses_cfg(i, r.skip_cfg_steps, r.cfg)) return true;
  return false;
}

}  // namespace

const char* phase_name(Progress::Phase phase) {
  switch (phase) {
    case Progress::Phase::ImageEncoding: return "image encoding";
    case Progress::Phase::TextEncoding: return "text encoding";
    case Progress::Phase::Denoising: return "denoising";
    case Progress::Phase::Decoding: return "decoding";
    case Progress::Phase::Done: return "done";
  }
  return "?";
}

// Reports progress to the hooks' callback and turns a "stop" answer into Cancelled.
class ProgressReporter {
 public:
  explicit ProgressReporter(const ProgressCallback& callback) : callback_(callback), start_(Clock::now()) {}

  void set_image(int image, int images) {
    image_ = image;
    images_ = images;
  }
  void phase(Progress::Phase phase, int steps = 0) {
    phase_start_ = Clock::now();
    report({phase, image_, images_, 0, steps, elapsed(), 0, -1});
  }
  void step_done(int done, int steps, const Tensor* denoised = nullptr) {
    const double per_step = std::chrono::duration<double>(Clock::now() - phase_start_).count() / done;
    const int left = steps - done + (images_ - image_) * steps;  // this image's steps, then the later images'
    report({Progress::Phase::Denoising, image_, images_, done, steps, elapsed(), per_step, per_step * left, denoised});
  }
  // Tiled decoding: the tiles are the decoding phase's steps (the ETA is this image's decode).
  void tile_done(int done, int tiles) {
    const double per_tile = std::chrono::duration<double>(Clock::now() - phase_start_).count() / done;
    report({Progress::Phase::Decoding, image_, images_, done, tiles, elapsed(), per_tile, per_tile * (tiles - done)});
  }

 private:
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void report(const Progress& p) {
    const bool go_on = !callback_ || callback_(p);
    if (!go_on && p.phase != Progress::Phase::Done)  // nothing is left to cancel once done
      throw Cancelled(std::string("cancelled during ") + phase_name(p.phase) +
                      (p.step > 0 ? std::string(p.phase == Progress::Phase::Decoding ? " after tile " : " after step ") +
                                        std::to_string(p.step) + " of " + std::to_string(p.steps)
                                  : std::string()));
  }

  const ProgressCallback& callback_;
  Clock::time_point start_, phase_start_;
  int image_ = 1, images_ = 1;
};

struct Pipeline::Models {
  std::optional<text::T5Tokenizer> tokenizer;
  io::WeightStore t5_weights, dit_weights, vae_weights;
  std::optional<t5::T5Encoder> t5;
  std::optional<dit::ChromaModel> dit;
  std::optional<vae::Decoder> vae;  // borrows vae_weights
  std::optional<vae::Encoder> vae_encoder;  // img2img; absent when the VAE file holds only the decoder
  std::map<std::string, io::LoraFile> lora_files;  // every LoRA read so far, by path (mapped, not copied)
};

Pipeline::Pipeline(PipelineConfig config)
    : config_(std::move(config)), context_(config_.threads, config_.compute, config_.backend), models_(std::make_unique<Models>()) {
  const ModelFiles& f = config_.files;
  const io::Residency residency = config_.low_memory ? io::Residency::ReleaseAfterUse : io::Residency::Keep;
  Models& m = *models_;
  // Every file is opened and every tensor checked now, so a wrong --vae fails in a second rather
  // than after the denoising; the weights are only mapped.
  PhaseTimer open(&open_phases_, "open models");
  open_for("--tokenizer", f.tokenizer, [&](const std::string& p) { m.tokenizer.emplace(p); });
  open_for("--t5", f.t5, [&](const std::string& p) {
    m.t5_weights = open_weights(p, kT5Prefix);
    m.t5.emplace(m.t5_weights, residency);
  });
  open_for("--dit", f.dit, [&](const std::string& p) {
    m.dit_weights = open_weights(p, kDitPrefix);
    variant_ = config_.variant ? *config_.variant : dit::detect_variant(m.dit_weights);
    m.dit.emplace(m.dit_weights, residency);
  });
  // Chroma1-Radiance works in pixel space: its own head replaces the VAE (docs/radiance.md), so it
  // needs no --vae and ignores one given.
  if (!pixel_space())
    open_for("--vae", f.vae, [&](const std::string& p) {
      m.vae_weights = open_weights(p, kVaePrefix);
      m.vae.emplace(m.vae_weights);
      if (m.vae_weights.has("encoder.conv_in.weight")) m.vae_encoder.emplace(m.vae_weights);
    });
}

bool Pipeline::pixel_space() const { return models_->dit && models_->dit->config().architecture == dit::Architecture::Radiance; }

std::string Pipeline::model_name() const {
  if (!models_->dit) return "";
  const dit::ChromaConfig& c = models_->dit->config();
  const std::string name = dit::variant_name(variant_);
  if (c.architecture != dit::Architecture::Radiance) return name + " (latent)";
  return name + " (pixel space, " + (c.radiance.x0 ? "x0" : "velocity") + " prediction, " +
         std::to_string(c.radiance.pixel_patch()) + "-pixel patches)";
}

Shape Pipeline::state_shape(const GenerationRequest& r) const {
  if (pixel_space()) return {1, models_->dit->config().latent_channels(), r.height, r.width};
  return {1, kLatentChannels, r.height / 8, r.width / 8};
}

Pipeline::~Pipeline() = default;

dit::Variant model_variant(const PipelineConfig& config) {
  if (config.variant) return *config.variant;
  return open_for("--dit", config.files.dit,
                  [](const std::string& p) { return dit::detect_variant(open_weights(p, kDitPrefix)); });
}

GenerationRequest variant_defaults(dit::Variant variant) {
  GenerationRequest r;
  if (variant == dit::Variant::Flash) {  // as its file says: chroma-unlocked-v47-flash-heun-8-steps-cfg-1
    r.steps = 8;
    r.sampler = "heun";
    r.cfg = 1.0f;  // the positive velocity alone: sampling::uses_cfg skips the negative pass
  }
  return r;
}

TextConditioning Pipeline::encode_text(const std::string& prompt, const std::optional<std::string>& negative_prompt,
                                       const RunHooks& hooks, text::PromptWeighting weighting,
                                       t5::Padding padding) const {
  ProgressReporter progress(hooks.progress);
  return encode_text(prompt, negative_prompt, weighting, padding, hooks, progress);
}

Tensor Pipeline::denoise(const Tensor& x, std::span<const float> schedule, int first_step,
                         const TextConditioning& text, const GenerationRequest& r, const RunHooks& hooks,
                         const LatentBlend* blend, dit::StepCache* cache) const {
  ProgressReporter progress(hooks.progress);
  return denoise(x, schedule, first_step, text, r, hooks, blend, cache, progress);
}

Tensor Pipeline::encode_image(const Tensor& image, const RunHooks& hooks) const {
  ProgressReporter progress(hooks.progress);
  return encode_image(image, hooks, progress);
}

Tensor Pipeline::decode(const Tensor& latent, const RunHooks& hooks, bool tiled) const {
  ProgressReporter progress(hooks.progress);
  return decode(latent, hooks, tiled, progress);
}

TextConditioning Pipeline::encode_text(const std::string& prompt, const std::optional<std::string>& negative_prompt,
                                       text::PromptWeighting weighting, t5::Padding padding,
                                       const RunHooks& hooks, ProgressReporter& progress) const {
  progress.phase(Progress::Phase::TextEncoding);
  const RunContext::Bind bind(context_, hooks.dump, hooks.profiler, RunContext::Stage::Text);
  const ops::profile::Section ops_section("text encoding");  // per-op timing, when the benchmark profiles
  // Both prompts go through T5 in one pass, so its weights are read once (t5.h encode_batch); with
  // emphasis in either, the empty prompt of the same length joins them (prompt_weights.h).
  const text::T5Tokenizer& tokenizer = *models_->tokenizer;
  const auto pos = tokenizer.encode(text::parse_prompt_weights(prompt, weighting));
  const auto neg = negative_prompt ? tokenizer.encode(text::parse_prompt_weights(*negative_prompt, weighting))
                                   : text::T5Tokenizer::WeightedIds{};
  std::vector<t5::T5Encoder::Prompt> prompts = {{pos.ids, "pos.", padding}};
  if (negative_prompt) prompts.push_back({neg.ids, "neg.", padding});
  auto weighted = [](const std::vector<float>& w) { return std::any_of(w.begin(), w.end(), [](float x) { return x != 1.0f; }); };
  std::vector<int32_t> empty_ids;
  if (weighting == text::PromptWeighting::ComfyUI && (weighted(pos.weights) || weighted(neg.weights))) {
    empty_ids.assign(std::max(pos.ids.size(), neg.ids.size()), text::T5Tokenizer::kPad);
    empty_ids[0] = text::T5Tokenizer::kEos;
    prompts.push_back({empty_ids, "empty.", padding});
  }
  TextConditioning text;
  {
    TracePrefix p("t5.");
    std::vector<Tensor> txt = models_->t5->encode_batch(prompts);
    text.positive = std::move(txt[0]);
    if (negative_prompt) text.negative = std::move(txt[1]);
    // Prompt weights are applied on the host (text/prompt_weights.h), where the phase returns them.
    text.positive = to_host(std::move(text.positive));
    text.negative = to_host(std::move(text.negative));
    const Tensor empty = empty_ids.empty() ? Tensor() : to_host(std::move(txt.back()));
    text::apply_prompt_weights(text.positive, empty, pos.weights, weighting);
    if (negative_prompt) text::apply_prompt_weights(text.negative, empty, neg.weights, weighting);
  }
  io::release_pages(models_->t5_weights, "");  // one model resident at a time; the file stays open
  release_free_heap();
  if (hooks.dump) {
    hooks.dump->put("input.pos_txt", text.positive);
    if (negative_prompt) hooks.dump->put("input.neg_txt", text.negative);
  }
  return text;
}

Tensor Pipeline::denoise(const Tensor& x0, std::span<const float> schedule, int first_step,
                         const TextConditioning& host_text, const GenerationRequest& r, const RunHooks& hooks,
                         const LatentBlend* host_blend, dit::StepCache* cache, ProgressReporter& progress) const {
  // The tracer is bound for the first step's DiT pass only (below).
  const RunContext::Bind bind(context_, nullptr, hooks.profiler);
  // The inputs in the run's backend (copied only where that is not the host's memory).
  Tensor copies[3];
  const Tensor& positive = ops::backend_readable(host_text.positive, copies[0]);
  const Tensor& negative = ops::backend_readable(host_text.negative, copies[1]);
  const Tensor& start = ops::backend_readable(x0, copies[2]);
  std::optional<LatentBlend> backend_blend;  // latent-sized: copied
  if (host_blend)
    backend_blend = LatentBlend{ops::to_backend(host_blend->original), ops::to_backend(host_blend->noise),
                                ops::to_backend(host_blend->mask)};
  const LatentBlend* blend = backend_blend ? &*backend_blend : nullptr;
  const ops::profile::Section ops_section("denoising");
  const dit::ChromaModel& model = *models_->dit;
  // Ancestral samplers draw their noise from a PyTorch CPU generator seeded with the request's seed
  // (0 without one, e.g. with init_noise): ComfyUI's default noise sampler on a CPU device.
  sampling::NoiseFn noise;
  if (sampling::is_ancestral(r.sampler))
    noise = [generator = std::make_shared<sampling::TorchGenerator>(r.seed.value_or(0))](const Shape& shape) {
      return generator->randn(shape);
    };
  const std::unique_ptr<sampling::Sampler> sampler = sampling::make_sampler(r.sampler, precision_of(r), noise);
  const sampling::SamplerPrecision prec = sampler->precision();
  const dit::TimestepPrecision tprec =
      prec == sampling::SamplerPrecision::BF16 ? dit::TimestepPrecision::BF16 : dit::TimestepPrecision::F32;
  Dump* dump = hooks.dump;

  // The velocity the sampler integrates: modulations for t, one packed DiT pass for the prompts the
  // step needs, CFG. The network outputs enter the sampler in its precision.
  Tensor latest_denoised;
  const sampling::VelocityFn velocity = [&](const Tensor& x, float t, int i) {
    const std::string step = "step." + std::to_string(i) + ".";
    // The modulation vectors depend only on t: computed once, shared by both passes (spec §3.4).
    const Tensor mods = model.modulations(t, tprec);
    const bool cfg = sampling::uses_cfg(i, r.skip_cfg_steps, r.cfg);
    if (cfg && negative.numel() == 0) throw Error("denoise: step " + std::to_string(i) + " needs the negative prompt");
    std::vector<Tensor> velocities;
    {
      // The first step's DiT intermediates go to the dump (every step's would be hundreds of GB at 1024²).
      const TraceBinding only_first_step(i == first_step ? dump : nullptr);
      TracePrefix p(step);
      // CFG steps run both prompts in one packed DiT pass: each weight is read once for both (model.h).
      // t: Chroma1-Radiance's x0 prediction becomes the velocity (x − x0)/t inside the model.
      if (cfg)
        velocities = model.forward_packed(x, {{positive, "pos."}, {negative, "neg."}}, mods, cache, t);
      else
        velocities = model.forward_packed(x, {{positive, "pos."}}, mods, cache, t);
    }
    const Tensor v_pos = sampling::round_state(velocities[0], prec);
    Tensor v = v_pos, v_neg;
    if (cfg) {
      v_neg = sampling::round_state(velocities[1], prec);
      v = sampling::cfg_combine(v_pos, v_neg, r.cfg, prec);
    }
    if (hooks.progress) {  // the x0 estimate for previews (Progress::denoised)
      latest_denoised = ops::axpby(1.0f, x, -t, v);  // x − t·v
    }
    if (dump) {
      dump->put(step + "latent_in", x);
      dump->put(step + "t", Tensor({1}, {t}));
      dump->put(step + "mod_vectors", mods);
      dump->put(step + "v_pos", v_pos);
      if (v_neg.numel()) dump->put(step + "v_neg", v_neg);
      dump->put(step + "v_cfg", v);
    }
    return v;
  };

  progress.phase(Progress::Phase::Denoising, first_step + int(schedule.size()) - 1);
  Tensor latent = sampling::denoise(*sampler, start, schedule, velocity, [&](int step, int total, Tensor& x) {
    if (blend) {  // inpainting: the unmasked latent back on the original's path at t_next
      const Tensor kept = sampling::flow_noised(blend->original, blend->noise, schedule[size_t(step - first_step + 1)], prec);
      ops::mask_blend(x, kept, blend->mask);  // m·x + (1 − m)·kept, the mask over every channel
      x = sampling::round_state(x, prec);
    }
    progress.step_done(step + 1, total, latest_denoised.numel() ? &latest_denoised : nullptr);  // throws Cancelled
    return true;
  }, first_step);
  io::release_pages(models_->dit_weights, "");
  release_free_heap();
  require_finite(latent, "denoising");
  return to_host(std::move(latent));
}

Tensor Pipeline::decode(const Tensor& latent, const RunHooks& hooks, bool tiled, ProgressReporter& progress) const {
  progress.phase(Progress::Phase::Decoding);
  const RunContext::Bind bind(context_, nullptr, hooks.profiler);  // the dump keeps the decoder's output only
  if (pixel_space()) {  // Chroma1-Radiance: the denoised state is the image (docs/radiance.md §6)
    require_finite(latent, "denoising");
    return to_host(latent);
  }
  const ops::profile::Section ops_section("decoding");
  const vae::Decoder& decoder = *models_->vae;
  Tensor latent_copy;
  Tensor image = tiled ? vae::decode_tiled([&](const Tensor& z) { return decoder.decode(z); }, latent, kVaeTiling,
                                           [&](int done, int total) { progress.tile_done(done, total); })
                       : decoder.decode(ops::backend_readable(latent, latent_copy));
  io::release_pages(models_->vae_weights, "");
  release_free_heap();
  require_finite(image, "VAE decoding");
  return to_host(std::move(image));
}

Tensor Pipeline::encode_image(const Tensor& image, const RunHooks& hooks, ProgressReporter& progress) const {
  if (pixel_space()) return to_host(image);  // Chroma1-Radiance: x0 is the image's pixels (docs/radiance.md §6)
  if (!models_->vae_encoder)
    throw Error("--vae " + config_.files.vae + ": holds no encoder (encoder.* tensors): img2img needs the full VAE");
  progress.phase(Progress::Phase::ImageEncoding);
  const RunContext::Bind bind(context_, nullptr, hooks.profiler);
  const ops::profile::Section ops_section("image encoding");
  Tensor image_copy;
  Tensor latent = models_->vae_encoder->encode(ops::backend_readable(image, image_copy));
  io::release_pages(models_->vae_weights, "");
  release_free_heap();
  require_finite(latent, "VAE encoding");
  return to_host(std::move(latent));
}

namespace {
// A LoRA name as given, or NAME / NAME.safetensors in the LoRA folder.
std::string resolve_lora(const std::string& name, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(name, ec)) return name;
  if (!dir.empty())
    for (const std::string& candidate : {name, name + ".safetensors"})
      if (fs::is_regular_file(fs::path(dir) / candidate, ec)) return (fs::path(dir) / candidate).string();
  throw Error("LoRA '" + name + "': no such file" + (dir.empty() ? " (and no --lora-dir to look in)" : " here or in --lora-dir " + dir));
}
}  // namespace

std::vector<LoraRequest> Pipeline::resolve_loras(const std::vector<LoraRequest>& wanted) {
  std::vector<LoraRequest> resolved;
  for (const LoraRequest& l : wanted) {
    resolved.push_back({resolve_lora(l.name, config_.lora_dir), l.scale});
    if (!models_->lora_files.contains(resolved.back().name))
      models_->lora_files.emplace(resolved.back().name, io::LoraFile::open(resolved.back().name));
  }
  // Fused copies of another LoRA set are freed before the new ones are made, so the two never
  // coexist (the model is at its base weights if the new set then fails).
  if (resolved != active_loras_ && config_.lora_fuse && !active_loras_.empty()) {
    models_->dit->set_loras({});
    active_loras_.clear();
  }
  return resolved;
}

LoraMemory Pipeline::lora_memory_of(const std::vector<LoraRequest>& resolved) const {
  const bool change = resolved != active_loras_;
  std::vector<const io::LoraDelta*> deltas;
  for (const LoraRequest& l : resolved)
    if (l.scale != 0.0f)
      for (const io::LoraDelta& d : models_->lora_files.at(l.name).deltas()) deltas.push_back(&d);
  return lora_memory(models_->dit_weights, deltas, config_.lora_fuse, change);
}

void Pipeline::use_loras(const std::vector<LoraRequest>& resolved, std::vector<std::string>& warnings) {
  if (resolved == active_loras_) return;
  std::vector<dit::LoraSetting> settings;
  for (const LoraRequest& l : resolved) settings.push_back({models_->lora_files.at(l.name), l.scale});
  const std::vector<dit::LoraReport> reports =
      models_->dit->set_loras(settings, config_.lora_fuse ? dit::LoraMode::Fuse : dit::LoraMode::Runtime);
  active_loras_ = resolved;
  for (const dit::LoraReport& rep : reports)
    if (!rep.unmatched_keys.empty())
      warnings.push_back("LoRA " + rep.path + ": " + std::to_string(rep.applied_keys) + " keys applied, " +
                         std::to_string(rep.unmatched_keys.size()) + " matched no layer (first: " +
                         rep.unmatched_keys.front() + ")");
}

GenerationResult Pipeline::generate(const GenerationRequest& request, const RunHooks& hooks) {
  validate(request);
  // The prompt's <lora:…> tags join the request's LoRAs; T5 sees the prompt without them.
  GenerationRequest r = request;
  std::vector<LoraRequest> loras = r.loras;
  for (const LoraRequest& tag : take_lora_tags(r.prompt)) loras.push_back(tag);
  GenerationResult result;
  const std::vector<LoraRequest> resolved = resolve_loras(loras);
  const std::vector<float> schedule = request_schedule(r, pixel_space());
  const int steps = int(schedule.size()) - 1;  // the beta scheduler may give fewer than r.steps
  const int first = first_step(r, pixel_space());
  const bool cfg = any_cfg(r, first, steps);
  const uint64_t seed = r.seed ? *r.seed : random_seed();
  // Refuse now, with the flag that would fit, rather than be killed by the OOM killer later. A decode
  // that alone does not fit is tiled instead.
  bool tiled = r.vae_tiling;
  if (config_.memory_check) {
    const LoraMemory lora = lora_memory_of(resolved);
    auto rows = [&](const std::string& prompt) {
      return int64_t(models_->tokenizer->encode(text::parse_prompt_weights(prompt, prompt_weighting_of(r))).ids.size()) + 1;
    };
    RunShape shape{r.width, r.height, {rows(r.prompt)}, tiled ? kVaeTiling.tile : 0};
    if (cfg) shape.text_rows.push_back(rows(r.negative_prompt));
    const BackendScope threads(context_.backend(), context_.threads());  // the plan counts per-thread scratch
    auto plan = [&] { return plan_memory(models_->t5_weights, models_->dit_weights, models_->vae_weights, shape, lora); };
    if (pixel_space()) tiled = false;  // no VAE: nothing to tile
    MemoryPlan p = plan();
    const size_t available = available_memory_bytes();
    if (!tiled && !pixel_space() && available > 0 && p.peak_bytes(config_.low_memory) > available) {
      shape.vae_tile = kVaeTiling.tile;
      if (MemoryPlan t = plan(); t.peak_bytes(config_.low_memory) <= available) {
        result.warnings.push_back("decoding in tiles: the whole " + std::to_string(r.width) + "×" +
                                  std::to_string(r.height) + " image would need about " +
                                  gib(p.peak_bytes(config_.low_memory)) + ", " + gib(available) + " is available");
        tiled = true;
        p = t;
      }
    }
    check_memory(p, config_.low_memory, available);
  }
  use_loras(resolved, result.warnings);
  // Everything a request reads from files, before any computing: the init image and mask.
  io::Image init, mask;
  if (r.has_init_image()) init = r.init_pixels.width ? r.init_pixels : io::read_image(r.init_image);
  if (r.has_mask()) {
    mask = r.mask_pixels.width ? r.mask_pixels : io::read_image(r.mask);
    // Fitted alike, the two stay aligned only when they have the same size to begin with.
    if (mask.width != init.width || mask.height != init.height)
      throw Error("mask " + r.mask + " is " + std::to_string(mask.width) + "×" + std::to_string(mask.height) +
                  " but the init image is " + std::to_string(init.width) + "×" + std::to_string(init.height) +
                  ": they must be the same size");
    mask = fit_image(mask, r.width, r.height);
  }
  if (r.has_init_image()) init = fit_image(init, r.width, r.height);
  const sampling::SamplerPrecision prec = precision_of(r);

  ProgressReporter progress(hooks.progress);
  // img2img: the init image's latent, encoded once for the batch.
  Tensor original, pixel_mask, latent_weights;
  if (r.has_init_image()) {
    PhaseTimer t(&result.phases, "image encoding");
    original = encode_image(image_to_tensor(init), hooks, progress);
    if (hooks.dump) hooks.dump->put("input.init_latent", original);
    if (r.has_mask()) {
      pixel_mask = mask_weights(mask, r.mask_blur);
      // Radiance blends pixels, so its mask is the pixel mask itself.
      latent_weights = pixel_space() ? pixel_mask.reshaped({1, 1, r.height, r.width}) : latent_mask(pixel_mask);
    }
  }
  TextConditioning text;
  {
    PhaseTimer t(&result.phases, "text encoding");
    text = encode_text(r.prompt, cfg ? std::optional<std::string>(r.negative_prompt) : std::nullopt,
                       prompt_weighting_of(r), text_padding_of(r), hooks, progress);
  }
  nlohmann::json models = nlohmann::json::object();
  for (const auto& [key, path] : {std::pair{"dit", config_.files.dit}, {"t5", config_.files.t5}, {"vae", config_.files.vae}})
    if (!(key == std::string("vae") && pixel_space())) models[key] = std::filesystem::path(path).filename().string();

  // The images of the batch: seed, seed + 1, … (wrapping at 2^64), everything else shared.
  for (int i = 0; i < r.batch_count; ++i) {
    progress.set_image(i + 1, r.batch_count);
    const uint64_t image_seed = seed + uint64_t(i);
    GenerationRequest image_request = r;  // the ancestral samplers' noise follows the image's seed
    if (r.init_noise.empty()) image_request.seed = image_seed;
    const Tensor noise = sampling::round_state(initial_noise(r, image_seed, state_shape(r)), prec);
    if (hooks.dump) hooks.dump->put("input.noise", noise);
    // img2img starts from the init latent noised to the first step's t: x_t = (1 − t)·x0 + t·ε.
    const Tensor start = r.has_init_image() ? sampling::flow_noised(original, noise, schedule[size_t(first)], prec) : noise;
    std::optional<LatentBlend> blend;
    if (r.has_mask()) blend = LatentBlend{original, noise, latent_weights};
    GeneratedImage img;
    {
      PhaseTimer t(&result.phases, "denoising");
      std::optional<dit::StepCache> cache;
      if (const float threshold = cache_threshold(r); threshold > 0) cache.emplace(threshold);
      img.latent = first < steps ? denoise(start, std::span(schedule).subspan(size_t(first)), first, text, image_request, hooks,
                                             blend ? &*blend : nullptr, cache ? &*cache : nullptr, progress)
                                   : start;  // strength 0: no step runs
      if (cache) {
        img.evaluations = cache->evaluations;
        img.skipped_evaluations = cache->skipped;
      }
    }
    if (hooks.dump) {
      hooks.dump->put("output.latent", img.latent);
      hooks.dump->put("output.timesteps", Tensor({int64_t(schedule.size())}, schedule));
    }
    {
      PhaseTimer t(&result.phases, "decoding");
      img.image = decode(img.latent, hooks, tiled, progress);
    }
    if (hooks.dump) hooks.dump->put("output.image", img.image);
    img.rgb = to_rgb8(img.image);
    if (r.has_mask()) img.rgb = paste_back(img.rgb, init.rgb, pixel_mask);  // unmasked pixels exactly the original
    img.width = r.width;
    img.height = r.height;
    // What made this image alone: its own seed, one image.
    GenerationRequest used = request;  // as given: the prompt keeps its <lora:…> tags
    used.batch_count = 1;
    used.vae_tiling = tiled;  // also when chosen for memory: the image depends on it
    if (r.init_noise.empty()) used.seed = image_seed;
    img.seed = used.seed;
    img.parameters = request_to_json(used);
    if (!r.init_noise.empty()) img.parameters["seed"] = nullptr;  // the noise came from the file
    img.parameters["models"] = models;
    img.parameters["variant"] = dit::variant_name(variant_);
    img.parameters["compute"] = compute_name(context_.compute());
    result.images.push_back(std::move(img));
  }
  progress.phase(Progress::Phase::Done);
  return result;
}

io::Image GeneratedImage::to_image() const { return {width, height, rgb, metadata_chunks(parameters)}; }

uint64_t random_seed() {
  std::random_device source;
  return (uint64_t(source()) << 32 | source()) & kMaxRandomSeed;
}

int first_step(const GenerationRequest& r, bool pixel_space) {
  if (!r.has_init_image()) return 0;
  const int steps = int(request_schedule(r, pixel_space).size()) - 1;
  return steps - int(std::floor(double(r.strength) * steps));
}

std::vector<float> request_schedule(const GenerationRequest& r, bool pixel_space) {
  sampling::ScheduleOptions o;
  if (!sampling::parse_scheduler(r.scheduler, &o.scheduler)) throw Error("unknown scheduler '" + r.scheduler + "'");
  o.steps = r.steps;
  // sd.cpp counts (H/8)·(W/8) latent pixels where the author counts (H/16)·(W/16) tokens (spec §4.2).
  const int cell = r.shift_rule == "sdcpp" ? 8 : 16;
  o.image_seq_len = int64_t(r.height / cell) * (r.width / cell);
  // Chroma1-Radiance: the author's sampler passes noise.shape[1] of the unflattened pixel noise
  // [B, 3, H, W], i.e. 3, as the sequence length (docs/radiance.md §6), so mu = lin(3) at every size.
  if (pixel_space && r.shift_rule != "sdcpp") o.image_seq_len = kRadianceScheduleSeqLen;
  o.shift = r.shift;
  o.beta_alpha = r.beta_alpha;
  o.beta_beta = r.beta_beta;
  return sampling::make_schedule(o);
}

Tensor initial_noise(const GenerationRequest& r, uint64_t seed) {
  return initial_noise(r, seed, {1, kLatentChannels, r.height / 8, r.width / 8});
}

Tensor initial_noise(const GenerationRequest& r, uint64_t seed, const Shape& shape) {
  if (r.init_noise.empty()) return sampling::torch_randn(seed, shape);
  auto f = io::SafetensorsFile::open(r.init_noise);
  if (f->tensors().size() != 1)
    throw Error(r.init_noise + ": --init-noise needs exactly one tensor, found " + std::to_string(f->tensors().size()));
  const TensorView& v = f->tensors().begin()->second;
  if (v.dtype != DType::F32 || v.shape != shape)
    throw Error(r.init_noise + ": tensor '" + v.name + "' is " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                ", --init-noise needs F32 " + shape_str(shape) + " for " + std::to_string(r.width) + "×" +
                std::to_string(r.height));
  return v.to_f32();
}

std::vector<uint8_t> to_rgb8(const Tensor& image) {
  if (image.rank() != 4 || image.dim(0) != 1 || image.dim(1) != 3)
    throw Error("to_rgb8: expected an image [1, 3, H, W], got " + shape_str(image.shape));
  const int64_t H = image.dim(2), W = image.dim(3), plane = H * W;
  Tensor copy;
  const float* values = host_readable(image, copy).ptr();
  std::vector<uint8_t> rgb(size_t(plane * 3));
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      float x = values[c * plane + i];
      x = std::isnan(x) ? 0.0f : std::fmin(1.0f, std::fmax(-1.0f, x));
      rgb[size_t(i * 3 + c)] = uint8_t(127.5f * (x + 1.0f));  // float32 like the reference; truncation
    }
  return rgb;
}

}  // namespace chroma::pipeline

#include "pipeline/txt2img.h"

#include <cmath>
#include <memory>
#include <vector>

#include "backend/op_profile.h"
#include "io/safetensors.h"
#include "models/chroma/model.h"
#include "models/t5/t5.h"
#include "pipeline/heap.h"
#include "models/vae/vae.h"
#include "pipeline/memory_plan.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"
#include "text/tokenizer.h"

namespace chroma::pipeline {
namespace {

constexpr int kLatentChannels = 16;  // Flux VAE z_channels; the DiT's 64 inputs are 16 × 2 × 2
constexpr int kMaxSide = 8192;       // beyond this the attention over (side/16)² tokens is impractical

// Weight files sometimes carry the prefix a UI used to store several models in one file.
io::WeightStore open_weights(const std::string& path, const char* prefix) {
  io::WeightStore w = io::WeightStore::open(path);
  w.strip_prefix(prefix);
  return w;
}

// NaN/Inf from a model means corrupt weights or an overflow: stop rather than write a wrong image.
void require_finite(const Tensor& t, const char* what) {
  for (float x : t.data)
    if (!std::isfinite(x)) throw Error(std::string(what) + " produced non-finite values (NaN or Inf): corrupt weights?");
}

// Opens every file and checks every tensor before any computing starts, so a wrong --vae fails in a
// second rather than after the denoising. The models are built and dropped again (their weights are
// only mapped, not read), which keeps each one resident only during its own phase later on.
void preflight(const ModelFiles& files) {
  auto check = [](const char* flag, const std::string& path, const auto& build) {
    if (path.empty()) throw Error(std::string(flag) + ": no file given");
    try {
      build(path);
    } catch (const Error& e) {
      throw Error(std::string(flag) + " " + e.what());
    }
  };
  check("--tokenizer", files.tokenizer, [](const std::string& p) { text::T5Tokenizer t(p); });
  check("--t5", files.t5, [](const std::string& p) { t5::T5Encoder m(open_weights(p, "text_encoders.t5xxl.transformer.")); });
  check("--dit", files.dit, [](const std::string& p) { dit::ChromaModel m(open_weights(p, "model.diffusion_model.")); });
  check("--vae", files.vae, [](const std::string& p) { vae::Decoder m(open_weights(p, "first_stage_model.")); });
}

// The memory plan of this run (memory_plan.h): the files' headers and the prompts' token counts.
MemoryPlan plan_run(const ModelFiles& files, const GenerateOptions& o, bool cfg) {
  const text::T5Tokenizer tokenizer(files.tokenizer);
  // T5 returns the ids (text + EOS) plus one padding row (t5.h).
  auto rows = [&](const std::string& prompt) { return int64_t(tokenizer.encode(prompt).size()) + 1; };
  RunShape run{o.width, o.height, {rows(o.prompt)}};
  if (cfg) run.text_rows.push_back(rows(o.negative_prompt));
  return plan_memory(open_weights(files.t5, "text_encoders.t5xxl.transformer."),
                     open_weights(files.dit, "model.diffusion_model."), open_weights(files.vae, "first_stage_model."),
                     run);
}

}  // namespace

void validate(const GenerateOptions& o) {
  auto check_side = [](const char* flag, int v) {
    if (v <= 0 || v % 16 != 0 || v > kMaxSide)
      throw Error(std::string(flag) + " " + std::to_string(v) + ": must be a positive multiple of 16, at most " +
                  std::to_string(kMaxSide));
  };
  check_side("--width", o.width);
  check_side("--height", o.height);
  if (o.steps < 1 || o.steps > 10000) throw Error("--steps " + std::to_string(o.steps) + ": must be between 1 and 10000");
  if (!std::isfinite(o.cfg)) throw Error("--cfg: must be a finite number");
  if (o.skip_cfg_steps < -1) throw Error("--skip-cfg-steps " + std::to_string(o.skip_cfg_steps) + ": must be -1 or more");
}

Tensor initial_noise(const GenerateOptions& o) {
  const Shape shape = {1, kLatentChannels, o.height / 8, o.width / 8};
  if (o.init_noise.empty()) return sampling::torch_randn(o.seed, shape);
  auto f = io::SafetensorsFile::open(o.init_noise);
  if (f->tensors().size() != 1)
    throw Error(o.init_noise + ": --init-noise needs exactly one tensor, found " + std::to_string(f->tensors().size()));
  const TensorView& v = f->tensors().begin()->second;
  if (v.dtype != DType::F32 || v.shape != shape)
    throw Error(o.init_noise + ": tensor '" + v.name + "' is " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                ", --init-noise needs F32 " + shape_str(shape) + " for " + std::to_string(o.width) + "×" +
                std::to_string(o.height));
  return v.to_f32();
}

GenerateResult generate(const ModelFiles& files, const GenerateOptions& o, const StepCallback& on_step, Dump* dump) {
  validate(o);
  preflight(files);
  GenerateResult r;
  const bool bf16 = o.sampler_dtype == SamplerDtype::BF16;
  const int64_t image_tokens = int64_t(o.height / 16) * (o.width / 16);
  const std::vector<float> ts = sampling::flow_schedule(o.steps, image_tokens, o.shift);
  bool any_cfg = false;
  for (int i = 0; i < o.steps; ++i) any_cfg |= sampling::uses_cfg(i, o.skip_cfg_steps, o.cfg);
  // Refuse now, with the flag that would fit, rather than be killed by the OOM killer later.
  if (o.memory_check) check_memory(plan_run(files, o, any_cfg), o.low_memory, available_memory_bytes());
  const io::Residency residency = o.low_memory ? io::Residency::ReleaseAfterUse : io::Residency::Keep;
  reuse_freed_activations();  // the step loop reuses its own memory (heap.h)

  Tensor latent = initial_noise(o);
  const sampling::SamplerPrecision prec = bf16 ? sampling::SamplerPrecision::BF16 : sampling::SamplerPrecision::F32;
  latent = sampling::round_state(latent, prec);
  if (dump) dump->put("input.noise", latent);

  // Text encoding; T5 is released before the DiT is loaded.
  Tensor pos_txt, neg_txt;
  {
    PhaseTimer load(&r.phases, "load T5");
    const text::T5Tokenizer tokenizer(files.tokenizer);
    const io::WeightStore weights = open_weights(files.t5, "text_encoders.t5xxl.transformer.");
    const t5::T5Encoder t5(weights, residency);
    load.finish();
    PhaseTimer encode(&r.phases, "text encoding");
    const ops::profile::Section ops_section("text encoding");  // per-op timing, when the benchmark enables it
    // T5 features of each prompt: valid tokens + the one visible padding row (spec §2.3). With CFG
    // both prompts go through T5 in one pass, so its weights are read once (t5.h encode_batch).
    const std::vector<int32_t> pos_ids = tokenizer.encode(o.prompt);
    const std::vector<int32_t> neg_ids = any_cfg ? tokenizer.encode(o.negative_prompt) : std::vector<int32_t>{};
    std::vector<t5::T5Encoder::Prompt> prompts = {{pos_ids, "pos."}};
    if (any_cfg) prompts.push_back({neg_ids, "neg."});
    TracePrefix p("t5.");
    ScopedTracer tr(dump);
    std::vector<Tensor> txt = t5.encode_batch(prompts);
    pos_txt = std::move(txt[0]);
    if (any_cfg) neg_txt = std::move(txt[1]);
  }
  release_free_heap();
  if (dump) {
    dump->put("input.pos_txt", pos_txt);
    if (any_cfg) dump->put("input.neg_txt", neg_txt);
  }

  {
    PhaseTimer load(&r.phases, "load DiT");
    const io::WeightStore weights = open_weights(files.dit, "model.diffusion_model.");
    const dit::ChromaModel model(weights, residency);
    load.finish();
    PhaseTimer denoise(&r.phases, "denoising");
    const ops::profile::Section ops_section("denoising");
    const dit::TimestepPrecision tprec = bf16 ? dit::TimestepPrecision::BF16 : dit::TimestepPrecision::F32;
    for (int i = 0; i < o.steps; ++i) {
      const std::string step = "step." + std::to_string(i) + ".";
      // In bf16 mode the model sees bf16(t); the Euler step takes dt from the float32 schedule
      // (what the reference sampler does, worked out from case-e-txt2img-bf16latent).
      const float t = sampling::round_state(ts[size_t(i)], prec);
      // The modulation vectors depend only on t: computed once, shared by both passes (spec §3.4).
      const Tensor mods = model.modulations(t, tprec);
      // CFG steps run both prompts in one packed DiT pass: each weight is read once for both (model.h).
      const bool cfg = sampling::uses_cfg(i, o.skip_cfg_steps, o.cfg);
      std::vector<Tensor> velocities;
      {
        TracePrefix p(step);
        ScopedTracer tr(i == 0 ? dump : nullptr);
        if (cfg)
          velocities = model.forward_packed(latent, {{pos_txt, "pos."}, {neg_txt, "neg."}}, mods);
        else
          velocities = model.forward_packed(latent, {{pos_txt, "pos."}}, mods);
      }
      const Tensor v_pos = sampling::round_state(velocities[0], prec);
      Tensor v = v_pos, v_neg;
      if (cfg) {
        v_neg = sampling::round_state(velocities[1], prec);
        v = sampling::cfg_combine(v_pos, v_neg, o.cfg, prec);
      }
      if (dump) {
        dump->put(step + "latent_in", latent);
        dump->put(step + "t", Tensor({1}, {t}));
        dump->put(step + "mod_vectors", mods);
        dump->put(step + "v_pos", v_pos);
        if (v_neg.numel()) dump->put(step + "v_neg", v_neg);
        dump->put(step + "v_cfg", v);
      }
      latent = sampling::euler_step(latent, v, ts[size_t(i)], ts[size_t(i) + 1], prec);
      if (on_step) on_step(i + 1, o.steps);
    }
  }
  release_free_heap();
  require_finite(latent, "denoising");
  if (dump) {
    dump->put("output.latent", latent);
    dump->put("output.timesteps", Tensor({int64_t(ts.size())}, ts));
  }

  {
    PhaseTimer load(&r.phases, "load VAE");
    const io::WeightStore weights = open_weights(files.vae, "first_stage_model.");
    const vae::Decoder decoder(weights);
    load.finish();
    PhaseTimer decode(&r.phases, "decoding");
    const ops::profile::Section ops_section("decoding");
    r.image = decoder.decode(latent);
  }
  require_finite(r.image, "VAE decoding");
  if (dump) dump->put("output.image", r.image);
  r.latent = std::move(latent);
  return r;
}

std::vector<uint8_t> to_rgb8(const Tensor& image) {
  if (image.rank() != 4 || image.dim(0) != 1 || image.dim(1) != 3)
    throw Error("to_rgb8: expected an image [1, 3, H, W], got " + shape_str(image.shape));
  const int64_t H = image.dim(2), W = image.dim(3), plane = H * W;
  std::vector<uint8_t> rgb(size_t(plane * 3));
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      float x = image.data[size_t(c * plane + i)];
      x = std::isnan(x) ? 0.0f : std::fmin(1.0f, std::fmax(-1.0f, x));
      rgb[size_t(i * 3 + c)] = uint8_t(127.5f * (x + 1.0f));  // float32 like the reference; truncation
    }
  return rgb;
}

}  // namespace chroma::pipeline

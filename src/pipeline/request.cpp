#include "pipeline/request.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

#include "models/t5/t5.h"
#include "sampling/denoise.h"
#include "sampling/schedule.h"
#include "text/prompt_weights.h"
#include "tensor/tensor.h"

namespace chroma::pipeline {
namespace {

constexpr int kMaxSide = 8192;    // beyond this the attention over (side/16)² tokens is impractical
constexpr int kMaxSteps = 10000;
constexpr int kMaxBatch = 1000;

// "width (-W/--width)": how errors name an option, for JSON and command-line users alike.
std::string option_label(const RequestOption& o) {
  std::string flags = o.flags;
  for (char& c : flags)
    if (c == ',') c = '/';
  return std::string(o.key) + " (" + flags + ")";
}

const RequestOption& find_option(const std::string& key) {
  for (const RequestOption& o : request_options())
    if (key == o.key) return o;
  throw Error("unknown option '" + key + "'");
}

[[noreturn]] void bad_value(const char* key, const std::string& text, const std::string& why) {
  throw Error(option_label(find_option(key)) + " " + text + ": " + why);
}

// The whole text must be a number of type T (no sign on unsigned types, no spaces, no trailing text).
template <class T>
bool parse_number(const std::string& text, T& out) {
  if (text.empty() || text[0] == '+' || (std::is_unsigned_v<T> && text[0] == '-')) return false;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

int parse_int(const char* key, const std::string& text, int lo, int hi, const std::string& range) {
  int v = 0;
  if (!parse_number(text, v)) bad_value(key, text, "not an integer");
  if (v < lo || v > hi) bad_value(key, text, range);
  return v;
}

float parse_finite(const char* key, const std::string& text) {
  float v = 0;
  if (!parse_number(text, v)) bad_value(key, text, "not a number");
  if (!std::isfinite(v)) bad_value(key, text, "must be a finite number");
  return v;
}

bool beta_in_range(double v) { return v > 0.0 && v <= 100.0; }

// The first-block cache threshold of a `cache` text (request.h cache_threshold).
float parse_cache_threshold(const std::string& text) {
  if (text.empty() || text == "off") return 0.0f;
  if (text == "fbcache") return kDefaultCacheThreshold;
  static const std::string kPrefix = "fbcache:";
  float t = 0;
  if (text.rfind(kPrefix, 0) != 0 || !parse_number(text.substr(kPrefix.size()), t))
    bad_value("cache", text, "must be fbcache, fbcache:THRESHOLD (e.g. fbcache:0.08) or off");
  if (!std::isfinite(t) || t <= 0) bad_value("cache", text, "the threshold must be a number > 0");
  return t;
}

std::optional<t5::Padding> parse_text_padding(const std::string& name) {
  if (name == "author") return t5::Padding::Flow;
  if (name == "diffusers") return t5::Padding::KeyMasked;
  if (name == "comfyui") return t5::Padding::None;
  if (name == "sdcpp") return t5::Padding::Unmasked;
  return std::nullopt;
}

// apply_preset (request.h): each front end's settings, spec §2.2 (padding), §4.2 (schedule), §4.5 (defaults).
struct Preset {
  const char* name;
  void (*apply)(GenerationRequest& r);
};
const Preset kPresets[] = {
    {"author",  // flow's inference_wrapper: its padding, resolution-dependent schedule and bf16 sampler
     [](GenerationRequest& r) {
       r.text_padding = "author", r.shift = true, r.shift_rule = "author", r.scheduler = "author";
       r.sampler = "euler", r.sampler_dtype = SamplerDtype::BF16, r.prompt_weighting = "none";
     }},
    {"comfyui",  // the official Chroma1-HD template: shift 1, beta 26 steps, CFG 3.5, euler; no padding row
     [](GenerationRequest& r) {
       r.text_padding = "comfyui", r.shift = false, r.shift_rule = "author", r.scheduler = "beta";
       r.beta_alpha = 0.6, r.beta_beta = 0.6, r.steps = 26, r.cfg = 3.5f, r.skip_cfg_steps = 0;
       r.sampler = "euler", r.sampler_dtype = SamplerDtype::F32, r.prompt_weighting = "comfyui";
     }},
    {"diffusers",  // ChromaPipeline: sigmas linspace(1, 1/n) unshifted (Chroma1-HD's config), 35 steps,
                   // CFG 5, the one padding row under HF's key mask, bf16 latents between steps
     [](GenerationRequest& r) {
       r.text_padding = "diffusers", r.shift = false, r.shift_rule = "author", r.scheduler = "author";
       r.steps = 35, r.cfg = 5.0f, r.skip_cfg_steps = 0;
       r.sampler = "euler", r.sampler_dtype = SamplerDtype::BF16, r.prompt_weighting = "none";
     }},
    {"sdcpp",  // sd.cpp's CLI: flux schedule with mu from (H/8)(W/8), 20 steps, CFG 7, T5 unmasked over
               // 512 ids and the DiT seeing one pad, its emphasis rule
     [](GenerationRequest& r) {
       r.text_padding = "sdcpp", r.shift = true, r.shift_rule = "sdcpp", r.scheduler = "author";
       r.steps = 20, r.cfg = 7.0f, r.skip_cfg_steps = 0;
       r.sampler = "euler", r.sampler_dtype = SamplerDtype::F32, r.prompt_weighting = "sdcpp";
     }},
};

double parse_beta(const char* key, const std::string& text) {
  double v = 0;
  if (!parse_number(text, v)) bad_value(key, text, "not a number");
  if (!beta_in_range(v)) bad_value(key, text, "must be in (0, 100]");
  return v;
}

bool parse_bool(const char* key, const std::string& text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  bad_value(key, text, "must be true or false");
}

std::string side_range() { return "must be a positive multiple of 16, at most " + std::to_string(kMaxSide); }

const RequestOption kOptions[] = {
    {"prompt", "-p,--prompt", "Prompt", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.prompt = t; },
     [](const GenerationRequest& r) { return nlohmann::json(r.prompt); }},
    {"negative_prompt", "-n,--negative-prompt", "Negative prompt", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.negative_prompt = t; },
     [](const GenerationRequest& r) { return nlohmann::json(r.negative_prompt); }},
    {"width", "-W,--width", "Width in pixels (multiple of 16)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.width = parse_int("width", t, 16, kMaxSide, side_range()); },
     [](const GenerationRequest& r) { return nlohmann::json(r.width); }},
    {"height", "-H,--height", "Height in pixels (multiple of 16)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.height = parse_int("height", t, 16, kMaxSide, side_range()); },
     [](const GenerationRequest& r) { return nlohmann::json(r.height); }},
    {"steps", "--steps", "Denoising steps", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       r.steps = parse_int("steps", t, 1, kMaxSteps, "must be between 1 and " + std::to_string(kMaxSteps));
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.steps); }},
    {"cfg", "--cfg", "Classifier-free guidance scale (1 = no negative pass)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.cfg = parse_finite("cfg", t); },
     [](const GenerationRequest& r) { return nlohmann::json(r.cfg); }},
    {"skip_cfg_steps", "--skip-cfg-steps", "First N steps without the negative pass (-1 = never CFG)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       r.skip_cfg_steps = parse_int("skip_cfg_steps", t, -1, std::numeric_limits<int>::max(), "must be -1 or more");
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.skip_cfg_steps); }},
    {"seed", "--seed", "Seed, 0 to 2^64-1; -1 or absent: random (printed and stored in the PNG)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       uint64_t v = 0;
       if (t == "-1") r.seed.reset();  // A1111's and ComfyUI's "random"
       else if (parse_number(t, v)) r.seed = v;
       else bad_value("seed", t, "must be an integer from 0 to 18446744073709551615, or -1 for a random seed");
     },
     [](const GenerationRequest& r) { return r.seed ? nlohmann::json(*r.seed) : nlohmann::json(nullptr); }},
    {"batch_count", "-b,--batch-count", "Images to make, with seeds seed, seed+1, ...", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       r.batch_count = parse_int("batch_count", t, 1, kMaxBatch, "must be from 1 to " + std::to_string(kMaxBatch));
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.batch_count); }},
    {"shift", "--no-shift", "No resolution-dependent shift: a linear author schedule, an unshifted table for the others", "false", nullptr,
     [](GenerationRequest& r, const std::string& t) { r.shift = parse_bool("shift", t); },
     [](const GenerationRequest& r) { return nlohmann::json(r.shift); }},
    {"sampler", "--sampler,--sampling-method", "Sampler: euler, heun, dpm++2m, dpm++2s_a, dpm++sde, res_multistep, gradient_estimation, euler_a", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       if (!sampling::is_sampler_name(t)) bad_value("sampler", t, "unknown sampler (known: " + sampling::sampler_names() + ")");
       r.sampler = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.sampler); }},
    {"scheduler", "--scheduler", "Schedule: author (default), simple, beta, karras, exponential, sigmoid_offset, bong_tangent", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       sampling::Scheduler s;
       if (!sampling::parse_scheduler(t, &s))
         bad_value("scheduler", t, "unknown scheduler (known: " + sampling::scheduler_names() + ")");
       r.scheduler = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.scheduler); }},
    {"beta_alpha", "--beta-alpha", "Beta scheduler alpha, in (0, 100]", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.beta_alpha = parse_beta("beta_alpha", t); },
     [](const GenerationRequest& r) { return nlohmann::json(r.beta_alpha); }},
    {"beta_beta", "--beta-beta", "Beta scheduler beta, in (0, 100]", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.beta_beta = parse_beta("beta_beta", t); },
     [](const GenerationRequest& r) { return nlohmann::json(r.beta_beta); }},
    {"sampler_dtype", "--sampler-dtype", "Sampler state precision: f32, or bf16 as the reference sampler", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       if (t == "f32") r.sampler_dtype = SamplerDtype::F32;
       else if (t == "bf16") r.sampler_dtype = SamplerDtype::BF16;
       else bad_value("sampler_dtype", t, "must be f32 or bf16");
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.sampler_dtype == SamplerDtype::BF16 ? "bf16" : "f32"); }},
    {"prompt_weighting", "--prompt-weighting",
     "Emphasis such as (word:1.2): comfyui (blend towards the empty prompt), sdcpp (scale, keep the mean), none (literal)",
     nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       text::PromptWeighting w;
       if (!text::parse_prompt_weighting(t, &w)) bad_value("prompt_weighting", t, "must be comfyui, sdcpp or none");
       r.prompt_weighting = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.prompt_weighting); }},
    {"text_padding", "--text-padding",
     "Prompt padding seen by T5 and the DiT: author (the author's one padding row), diffusers (key-masked row), "
     "comfyui (none), sdcpp (512 ids, no T5 mask)",
     nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       if (!parse_text_padding(t)) bad_value("text_padding", t, "must be author, diffusers, comfyui or sdcpp");
       r.text_padding = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.text_padding); }},
    {"shift_rule", "--shift-rule", "The shift's image size: author ((H/16)(W/16) tokens) or sdcpp ((H/8)(W/8))",
     nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       if (t != "author" && t != "sdcpp") bad_value("shift_rule", t, "must be author or sdcpp");
       r.shift_rule = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.shift_rule); }},
    {"cache", "--cache", "Step cache: fbcache:T skips the DiT blocks after the first when its change is below T; fbcache alone "
     "takes T = 0.08 (off by default)",
     nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       parse_cache_threshold(t);  // throws naming the option
       r.cache = t;
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.cache); }},
    {"vae_tiling", "--vae-tiling", "Decode the image in overlapping 512-pixel tiles (less memory; automatic when needed)",
     "true", nullptr, [](GenerationRequest& r, const std::string& t) { r.vae_tiling = parse_bool("vae_tiling", t); },
     [](const GenerationRequest& r) { return nlohmann::json(r.vae_tiling); }},
    {"init_noise", "--init-noise", "Initial noise: safetensors with one F32 [1,16,H/8,W/8] tensor", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.init_noise = t; },
     [](const GenerationRequest& r) { return nlohmann::json(r.init_noise); }},
    {"lora", "--lora", "LoRA FILE[:SCALE] on the DiT (repeatable; also <lora:NAME:SCALE> in the prompt)", nullptr,
     [](GenerationRequest& r) { r.loras.clear(); },
     [](GenerationRequest& r, const std::string& t) { r.loras.push_back(parse_lora(t)); },
     [](const GenerationRequest& r) {
       nlohmann::json a = nlohmann::json::array();
       for (const LoraRequest& l : r.loras) a.push_back(lora_text(l));
       return a;
     }},
    {"init_image", "-i,--init-img", "img2img: start from this PNG/JPEG/WebP (fitted to WxH: cover, centre crop)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.init_image = t; },
     [](const GenerationRequest& r) { return nlohmann::json(r.init_image); }},
    {"strength", "--strength", "img2img: 0..1, how much of the schedule runs (1 = from pure noise)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) {
       r.strength = parse_finite("strength", t);
       if (r.strength < 0 || r.strength > 1) bad_value("strength", t, "must be from 0 to 1");
     },
     [](const GenerationRequest& r) { return nlohmann::json(r.strength); }},
    {"mask", "--mask", "Inpainting: mask image, white = repaint (needs --init-img)", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.mask = t; },
     [](const GenerationRequest& r) { return nlohmann::json(r.mask); }},
    {"mask_blur", "--mask-blur", "Inpainting: blur of the mask edge in pixels", nullptr, nullptr,
     [](GenerationRequest& r, const std::string& t) { r.mask_blur = parse_int("mask_blur", t, 0, 256, "must be from 0 to 256"); },
     [](const GenerationRequest& r) { return nlohmann::json(r.mask_blur); }},
};

}  // namespace

std::span<const RequestOption> request_options() { return kOptions; }

void apply_preset(GenerationRequest& request, const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return p.apply(request);
  throw Error("preset (--preset) '" + name + "': unknown preset (known: " + preset_names() + ")");
}

std::string preset_names() {
  std::string names;
  for (const Preset& p : kPresets) names += (names.empty() ? "" : ", ") + std::string(p.name);
  return names;
}

float cache_threshold(const GenerationRequest& r) { return parse_cache_threshold(r.cache); }

t5::Padding text_padding_of(const GenerationRequest& r) {
  const std::optional<t5::Padding> p = parse_text_padding(r.text_padding);
  if (!p) throw Error(option_label(find_option("text_padding")) + " '" + r.text_padding + "': unknown padding");
  return *p;
}

void set_option(GenerationRequest& request, const std::string& key, const std::string& text) {
  find_option(key).set(request, text);
}

void validate(const GenerationRequest& r) {
  // The setters check what they parse; this checks the request as a whole, including one built in code.
  auto check = [](const char* key, auto value, bool ok, const std::string& why) {
    if (!ok) bad_value(key, nlohmann::json(value).dump(), why);
  };
  check("width", r.width, r.width > 0 && r.width % 16 == 0 && r.width <= kMaxSide, side_range());
  check("height", r.height, r.height > 0 && r.height % 16 == 0 && r.height <= kMaxSide, side_range());
  check("steps", r.steps, r.steps >= 1 && r.steps <= kMaxSteps, "must be between 1 and " + std::to_string(kMaxSteps));
  if (!std::isfinite(r.cfg)) throw Error(option_label(find_option("cfg")) + ": must be a finite number");
  check("skip_cfg_steps", r.skip_cfg_steps, r.skip_cfg_steps >= -1, "must be -1 or more");
  if (!sampling::is_sampler_name(r.sampler))
    throw Error(option_label(find_option("sampler")) + " '" + r.sampler + "': unknown sampler");
  sampling::Scheduler scheduler;
  if (!sampling::parse_scheduler(r.scheduler, &scheduler))
    throw Error(option_label(find_option("scheduler")) + " '" + r.scheduler + "': unknown scheduler");
  text_padding_of(r);
  cache_threshold(r);
  if (r.shift_rule != "author" && r.shift_rule != "sdcpp")
    throw Error(option_label(find_option("shift_rule")) + " '" + r.shift_rule + "': must be author or sdcpp");
  text::PromptWeighting weighting;
  if (!text::parse_prompt_weighting(r.prompt_weighting, &weighting))
    throw Error(option_label(find_option("prompt_weighting")) + " '" + r.prompt_weighting + "': must be comfyui, sdcpp or none");
  for (const char* key : {"prompt", "negative_prompt"}) {
    try {
      text::parse_prompt_weights(find_option(key).get(r).get<std::string>(), weighting);  // weights in range
    } catch (const Error& e) {
      throw Error(option_label(find_option(key)) + ": " + e.what());
    }
  }
  check("beta_alpha", r.beta_alpha, beta_in_range(r.beta_alpha), "must be in (0, 100]");
  check("beta_beta", r.beta_beta, beta_in_range(r.beta_beta), "must be in (0, 100]");
  check("batch_count", r.batch_count, r.batch_count >= 1 && r.batch_count <= kMaxBatch,
        "must be from 1 to " + std::to_string(kMaxBatch));
  if (r.batch_count > 1 && !r.init_noise.empty())
    throw Error(option_label(find_option("batch_count")) + " " + std::to_string(r.batch_count) +
                ": init_noise gives every image the same noise; a batch needs seeds");
  if (!(r.strength >= 0 && r.strength <= 1))
    throw Error(option_label(find_option("strength")) + " " + std::to_string(r.strength) + ": must be from 0 to 1");
  check("mask_blur", r.mask_blur, r.mask_blur >= 0 && r.mask_blur <= 256, "must be from 0 to 256");
  if (r.has_mask() && !r.has_init_image())
    throw Error(option_label(find_option("mask")) + ": a mask needs an init image (init_image, -i/--init-img)");
  for (const char* key : {"prompt", "negative_prompt", "init_noise", "init_image", "mask"})
    if (const std::string text = find_option(key).get(r).get<std::string>(); !is_utf8(text))
      throw Error(option_label(find_option(key)) + ": not valid UTF-8 text");
}

nlohmann::json request_to_json(const GenerationRequest& r) {
  nlohmann::json j = nlohmann::json::object();
  for (const RequestOption& o : kOptions) j[o.key] = o.get(r);
  return j;
}

GenerationRequest request_from_json(const nlohmann::json& j, const GenerationRequest& defaults) {
  if (!j.is_object()) throw Error("a request must be a JSON object");
  GenerationRequest r = defaults;
  if (const auto preset = j.find("preset"); preset != j.end()) {  // first, so the other fields override it
    if (!preset->is_string()) throw Error("preset: expected a string, found " + std::string(preset->type_name()));
    apply_preset(r, preset->get<std::string>());
  }
  for (const auto& [key, value] : j.items()) {
    if (key == "preset") continue;
    const RequestOption& o = find_option(key);
    // Each value goes through the option's own text parser, so both front ends accept the same values;
    // the JSON type must match the option's (a number for a number, a string for text).
    const nlohmann::json current = o.get(r);
    const bool seed = key == "seed";  // a number, or null for random
    if (o.clear && value.is_array()) {
      o.clear(r);  // the array replaces what the defaults hold
      for (const nlohmann::json& v : value) {
        if (!v.is_string()) throw Error(option_label(o) + ": expected an array of strings, found " + std::string(v.type_name()));
        o.set(r, v.get<std::string>());
      }
    } else if (value.is_string() && current.is_string()) o.set(r, value.get<std::string>());
    else if (value.is_boolean() && current.is_boolean()) o.set(r, value.dump());
    else if (value.is_number() && (current.is_number() || seed)) o.set(r, value.dump());
    else if (value.is_null() && seed) r.seed.reset();
    else throw Error(option_label(o) + ": expected " + (seed ? "number" : current.type_name()) + ", got " + value.type_name());
  }
  validate(r);
  return r;
}

LoraRequest parse_lora(const std::string& text) {
  LoraRequest l{text, 1.0f};
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos) {
    float scale = 0;
    if (parse_number(text.substr(colon + 1), scale)) {
      if (!std::isfinite(scale)) bad_value("lora", text, "the scale must be a finite number");
      l = {text.substr(0, colon), scale};
    }
  }
  if (l.name.empty()) bad_value("lora", text, "names no file");
  return l;
}

std::string lora_text(const LoraRequest& l) {
  char scale[32];
  std::snprintf(scale, sizeof scale, "%.9g", double(l.scale));  // float round trip
  return l.name + ":" + scale;
}

std::vector<LoraRequest> take_lora_tags(std::string& prompt) {
  std::vector<LoraRequest> tags;
  std::string kept;
  size_t pos = 0;
  for (size_t open; (open = prompt.find("<lora:", pos)) != std::string::npos;) {
    const size_t close = prompt.find('>', open);
    if (close == std::string::npos) break;  // an unclosed "<lora:" is plain text
    kept += prompt.substr(pos, open - pos);
    const std::string body = prompt.substr(open + 6, close - open - 6);
    if (body.empty()) throw Error("prompt: the tag <lora:> names no LoRA");
    const size_t colon = body.rfind(':');
    float scale = 1.0f;
    if (colon != std::string::npos) {
      if (!parse_number(body.substr(colon + 1), scale) || !std::isfinite(scale))
        throw Error("prompt: <lora:" + body + ">: the scale after ':' must be a finite number");
    }
    tags.push_back({colon == std::string::npos ? body : body.substr(0, colon), scale});
    if (tags.back().name.empty()) throw Error("prompt: <lora:" + body + "> names no LoRA");
    pos = close + 1;
  }
  kept += prompt.substr(pos);
  prompt = kept;
  return tags;
}

bool is_utf8(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = s[i];
    int extra = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) extra = 1, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) extra = 2, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) extra = 3, cp = c & 0x07, min = 0x10000;
    else return false;
    if (n - i <= size_t(extra)) return false;
    for (int k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += size_t(extra) + 1;
  }
  return true;
}

}  // namespace chroma::pipeline

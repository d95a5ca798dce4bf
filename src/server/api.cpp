#include "server/api.h"

#include <cctype>

#include "pipeline/output.h"
#include "sampling/denoise.h"
#include "sampling/schedule.h"

namespace chroma::server {
namespace {

// A1111's display names of our samplers and schedulers (modules/sd_samplers_kdiffusion.py,
// modules/sd_schedulers.py); our own names are accepted too.
struct Named {
  const char* ours;
  const char* a1111;
};
const Named kSamplers[] = {
    {"euler", "Euler"},           {"euler_a", "Euler a"},           {"heun", "Heun"},
    {"dpm++2m", "DPM++ 2M"},      {"dpm++2s_a", "DPM++ 2S a"},      {"dpm++sde", "DPM++ SDE"},
    {"res_multistep", "Res Multistep"}, {"gradient_estimation", "Gradient Estimation"},
};
const Named kSchedulers[] = {
    {"author", "Automatic"}, {"simple", "Simple"},   {"beta", "Beta"}, {"karras", "Karras"},
    {"exponential", "Exponential"}, {"sigmoid_offset", "Sigmoid Offset"}, {"bong_tangent", "Bong Tangent"},
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

template <size_t N>
std::string find_name(const Named (&table)[N], const std::string& name) {
  for (const Named& n : table)
    if (name == n.ours || lower(name) == lower(n.a1111)) return n.ours;
  return "";
}

// Sets request option `key` from a JSON value through the option table's own parser (request.h), so
// every API accepts the values the CLI accepts; `field` is the API's name for it in errors.
void set_from_json(pipeline::GenerationRequest& r, const std::string& key, const nlohmann::json& value,
                   const std::string& field) {
  try {
    if (value.is_string()) pipeline::set_option(r, key, value.get<std::string>());
    else if (value.is_number() || value.is_boolean()) pipeline::set_option(r, key, value.dump());
    else throw Error("expected a number or a string, found " + std::string(value.type_name()));
  } catch (const Error& e) {
    throw BadRequest(field + ": " + e.what(), field);
  }
}

std::string string_field(const nlohmann::json& body, const char* field) {
  const nlohmann::json& v = body.at(field);
  if (!v.is_string()) throw BadRequest(std::string(field) + ": expected a string, found " + v.type_name(), field);
  return v.get<std::string>();
}

int int_field(const nlohmann::json& body, const char* field, int lo, int hi) {
  const nlohmann::json& v = body.at(field);
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    throw BadRequest(std::string(field) + ": expected an integer from " + std::to_string(lo) + " to " +
                         std::to_string(hi) + ", found " + v.dump(),
                     field);
  return int(v.get<int64_t>());
}

// Takes <sd_cpp_extra_args>{…}</sd_cpp_extra_args> out of the prompt and returns its JSON object.
nlohmann::json take_extra_args(std::string& prompt) {
  static const std::string open = "<sd_cpp_extra_args>", close = "</sd_cpp_extra_args>";
  const size_t a = prompt.find(open);
  if (a == std::string::npos) return nlohmann::json::object();
  const size_t b = prompt.find(close, a);
  if (b == std::string::npos) throw BadRequest("prompt: <sd_cpp_extra_args> without its closing tag", "prompt");
  const std::string text = prompt.substr(a + open.size(), b - a - open.size());
  prompt.erase(a, b + close.size() - a);
  nlohmann::json extra = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!extra.is_object()) throw BadRequest("prompt: <sd_cpp_extra_args> must hold a JSON object", "prompt");
  return extra;
}

// Our extras, under the names OpenAI-style and sd.cpp clients send them.
void apply_extras(pipeline::GenerationRequest& r, const nlohmann::json& body) {
  static const std::pair<const char*, const char*> kAliases[] = {
      {"negative_prompt", "negative_prompt"}, {"seed", "seed"}, {"steps", "steps"}, {"sample_steps", "steps"},
      {"cfg_scale", "cfg"}, {"cfg", "cfg"}, {"scheduler", "scheduler"}, {"skip_cfg_steps", "skip_cfg_steps"},
      {"prompt_weighting", "prompt_weighting"}, {"text_padding", "text_padding"}, {"strength", "strength"}};
  for (const auto& [field, value] : body.items()) {
    if (field == "sampler" || field == "sample_method" || field == "sampler_name") {
      const std::string s = value.is_string() ? sampler_from_a1111(value.get<std::string>()) : "";
      if (s.empty()) throw BadRequest(field + ": unknown sampler " + value.dump(), field);
      r.sampler = s;
    } else if (field == "lora") {
      r.loras.clear();
      const nlohmann::json list = value.is_array() ? value : nlohmann::json::array({value});
      for (const nlohmann::json& l : list) {
        if (!l.is_string()) throw BadRequest("lora: expected FILE[:SCALE] strings", "lora");
        r.loras.push_back(pipeline::parse_lora(l.get<std::string>()));
      }
    } else if (field == "preset") {
      if (!value.is_string()) throw BadRequest("preset: expected a string", "preset");
      try {
        pipeline::apply_preset(r, value.get<std::string>());
      } catch (const Error& e) {
        throw BadRequest(e.what(), "preset");
      }
    } else {
      for (const auto& [alias, key] : kAliases)
        if (field == alias) {
          if (key == std::string("seed") && value.is_number_integer() && value.get<int64_t>() < 0) r.seed.reset();
          else set_from_json(r, key, value, field);
        }
    }
  }
}

void validate_as_bad_request(const pipeline::GenerationRequest& r) {
  try {
    pipeline::validate(r);
  } catch (const Error& e) {
    throw BadRequest(e.what());
  }
}

}  // namespace

void check_limits(const pipeline::GenerationRequest& r, const RequestLimits& limits) {
  if (r.width > limits.max_side || r.height > limits.max_side)
    throw BadRequest("size " + std::to_string(r.width) + "x" + std::to_string(r.height) + " exceeds this server's " +
                         std::to_string(limits.max_side) + " pixels per side (--max-size)",
                     "size");
  if (r.steps > limits.max_steps)
    throw BadRequest("steps " + std::to_string(r.steps) + " exceeds this server's " + std::to_string(limits.max_steps) +
                         " (--max-steps)",
                     "steps");
  if (r.batch_count > limits.max_images)
    throw BadRequest(std::to_string(r.batch_count) + " images exceed this server's " +
                         std::to_string(limits.max_images) + " per request",
                     "n");
  for (const std::string* text : {&r.prompt, &r.negative_prompt})
    if (text->size() > limits.max_prompt_bytes)
      throw BadRequest("a prompt of " + std::to_string(text->size()) + " bytes exceeds this server's " +
                           std::to_string(limits.max_prompt_bytes),
                       text == &r.prompt ? "prompt" : "negative_prompt");
  if (!r.init_image.empty() || !r.mask.empty() || !r.init_noise.empty())
    throw BadRequest("file paths are not accepted over HTTP (init_image, mask, init_noise)");
}

std::string sampler_from_a1111(const std::string& name) { return find_name(kSamplers, name); }
std::string scheduler_from_a1111(const std::string& name) { return find_name(kSchedulers, name); }

nlohmann::json a1111_samplers() {
  nlohmann::json out = nlohmann::json::array();
  for (const Named& n : kSamplers)
    out.push_back({{"name", n.a1111}, {"aliases", {n.ours}}, {"options", nlohmann::json::object()}});
  return out;
}

nlohmann::json a1111_schedulers() {
  nlohmann::json out = nlohmann::json::array();
  for (const Named& n : kSchedulers) out.push_back({{"name", n.ours}, {"label", n.a1111}, {"aliases", {n.ours}}});
  return out;
}

pipeline::GenerationRequest openai_request(const nlohmann::json& body, OutputChoice* output,
                                           const pipeline::GenerationRequest& defaults) {
  if (!body.is_object()) throw BadRequest("the request body must be a JSON object");
  if (!body.contains("prompt")) throw BadRequest("prompt: required", "prompt");
  pipeline::GenerationRequest r = defaults;
  r.prompt = string_field(body, "prompt");
  const nlohmann::json extra = take_extra_args(r.prompt);
  r.batch_count = body.contains("n") ? int_field(body, "n", 1, 1000) : 1;
  if (body.contains("size")) {
    const std::string size = string_field(body, "size");
    const size_t x = size.find('x');
    if (x == std::string::npos) throw BadRequest("size: expected WIDTHxHEIGHT, e.g. 1024x1024, found " + size, "size");
    set_from_json(r, "width", size.substr(0, x), "size");
    set_from_json(r, "height", size.substr(x + 1), "size");
    if (r.width % 16 || r.height % 16)
      throw BadRequest("size: width and height must each be a multiple of 16, found " + size, "size");
  }
  if (body.contains("response_format") && string_field(body, "response_format") != "b64_json")
    throw BadRequest("response_format: only b64_json is supported (this server keeps no files to link to)",
                     "response_format");
  if (body.contains("output_format")) {
    try {
      output->format = io::parse_image_format(string_field(body, "output_format"));
    } catch (const Error& e) {
      throw BadRequest(std::string("output_format: ") + e.what(), "output_format");
    }
  }
  if (body.contains("output_compression")) output->quality = std::max(1, int_field(body, "output_compression", 0, 100));
  apply_extras(r, body);
  apply_extras(r, extra);
  validate_as_bad_request(r);
  return r;
}

pipeline::GenerationRequest a1111_request(const nlohmann::json& body) {
  if (!body.is_object()) throw BadRequest("the request body must be a JSON object");
  pipeline::GenerationRequest r;
  r.width = r.height = 512;  // A1111's defaults where the client sends none
  r.steps = 20;
  r.cfg = 7.0f;
  if (body.contains("prompt")) r.prompt = string_field(body, "prompt");
  if (body.contains("negative_prompt")) r.negative_prompt = string_field(body, "negative_prompt");
  for (const char* key : {"width", "height", "steps"})
    if (body.contains(key)) set_from_json(r, key, body.at(key), key);
  if (body.contains("cfg_scale")) set_from_json(r, "cfg", body.at("cfg_scale"), "cfg_scale");
  if (body.contains("seed")) {
    const nlohmann::json& s = body.at("seed");
    if (s.is_number_integer() && s.get<int64_t>() < 0) r.seed.reset();
    else set_from_json(r, "seed", s, "seed");
  }
  for (const char* key : {"sampler_name", "sampler_index"})
    if (body.contains(key) && body.at(key).is_string() && !body.at(key).get<std::string>().empty()) {
      const std::string s = sampler_from_a1111(body.at(key).get<std::string>());
      if (s.empty()) throw BadRequest(std::string(key) + ": unknown sampler " + body.at(key).dump(), key);
      r.sampler = s;
    }
  if (body.contains("scheduler") && body.at("scheduler").is_string()) {
    const std::string s = scheduler_from_a1111(body.at("scheduler").get<std::string>());
    if (s.empty()) throw BadRequest("scheduler: unknown scheduler " + body.at("scheduler").dump(), "scheduler");
    r.scheduler = s;
  }
  const int batch = body.contains("batch_size") ? int_field(body, "batch_size", 1, 1000) : 1;
  const int iters = body.contains("n_iter") ? int_field(body, "n_iter", 1, 1000) : 1;
  r.batch_count = batch * iters;
  validate_as_bad_request(r);
  return r;
}

namespace {

// An uploaded image, decoded, or BadRequest naming the field.
io::Image decode_upload(const std::vector<uint8_t>& bytes, const std::string& field) {
  try {
    return io::decode_image(bytes, field);
  } catch (const Error& e) {
    throw BadRequest(e.what(), field);
  }
}

// OpenAI's mask (transparent = edit) as ours (white = repaint); a mask without alpha is ours already.
io::Image mask_from_openai(io::Image mask) {
  if (mask.alpha.empty()) return mask;
  for (size_t i = 0; i < mask.alpha.size(); ++i) {
    const auto v = uint8_t(255 - mask.alpha[i]);
    for (int c = 0; c < 3; ++c) mask.rgb[i * 3 + size_t(c)] = v;
  }
  mask.alpha.clear();
  return mask;
}

}  // namespace

io::Image decode_base64_image(const std::string& text, const std::string& field) {
  return decode_upload(base64_decode(text, field), field);
}

pipeline::GenerationRequest a1111_img2img_request(const nlohmann::json& body) {
  if (!body.is_object()) throw BadRequest("the request body must be a JSON object");
  nlohmann::json txt = body;
  for (const char* key : {"init_images", "mask", "denoising_strength", "mask_blur"}) txt.erase(key);
  pipeline::GenerationRequest r = a1111_request(txt);
  const nlohmann::json images = body.value("init_images", nlohmann::json::array());
  if (!images.is_array() || images.empty() || !images[0].is_string())
    throw BadRequest("init_images: expected an array with one base64 image", "init_images");
  r.init_pixels = decode_base64_image(images[0].get<std::string>(), "init_images");
  if (body.contains("mask") && !body.at("mask").is_null()) {
    if (!body.at("mask").is_string()) throw BadRequest("mask: expected a base64 image", "mask");
    r.mask_pixels = decode_base64_image(body.at("mask").get<std::string>(), "mask");
  }
  r.strength = 0.75f;
  if (body.contains("denoising_strength")) set_from_json(r, "strength", body.at("denoising_strength"), "denoising_strength");
  if (body.contains("mask_blur")) set_from_json(r, "mask_blur", body.at("mask_blur"), "mask_blur");
  validate_as_bad_request(r);
  return r;
}

pipeline::GenerationRequest openai_edit_request(const nlohmann::json& fields, const std::vector<uint8_t>& image,
                                                const std::vector<uint8_t>& mask, OutputChoice* output,
                                                const pipeline::GenerationRequest& defaults) {
  if (image.empty()) throw BadRequest("image: required (a PNG, JPEG or WebP file)", "image");
  // Form fields are text: numbers become numbers, so that openai_request reads them as a JSON body.
  nlohmann::json body = nlohmann::json::object();
  for (const auto& [key, value] : fields.items()) {
    const std::string text = value.get<std::string>();
    const nlohmann::json number = nlohmann::json::parse(text, nullptr, false);
    body[key] = key != "prompt" && key != "negative_prompt" && number.is_number() ? number : nlohmann::json(text);
  }
  const bool has_strength = body.contains("strength");
  nlohmann::json without_strength = body;
  without_strength.erase("strength");
  pipeline::GenerationRequest r = openai_request(without_strength, output, defaults);
  r.init_pixels = decode_upload(image, "image");
  if (!mask.empty()) r.mask_pixels = mask_from_openai(decode_upload(mask, "mask"));
  r.strength = r.has_mask() ? 1.0f : 0.75f;
  if (has_strength) set_from_json(r, "strength", body.at("strength"), "strength");
  if (!fields.contains("size")) {  // the image's own size, to a multiple of 16
    r.width = std::max(16, r.init_pixels.width / 16 * 16);
    r.height = std::max(16, r.init_pixels.height / 16 * 16);
  }
  validate_as_bad_request(r);
  return r;
}

pipeline::GenerationRequest openai_edit_request(const std::vector<FormPart>& parts, OutputChoice* output,
                                                const pipeline::GenerationRequest& defaults) {
  nlohmann::json fields = nlohmann::json::object();
  std::vector<uint8_t> image, mask;
  bool has_image = false;
  for (const FormPart& part : parts) {
    if (part.name == "image" || part.name == "image[]") {
      if (!has_image) image.assign(part.content.begin(), part.content.end());
      has_image = true;
    } else if (part.name == "mask") {
      mask.assign(part.content.begin(), part.content.end());
    } else if (part.filename.empty()) {
      fields[part.name] = part.content;
    }
  }
  return openai_edit_request(fields, image, mask, output, defaults);
}

nlohmann::json png_info(const nlohmann::json& body) {
  if (!body.is_object() || !body.contains("image") || !body.at("image").is_string())
    throw BadRequest("image: expected a base64 image", "image");
  const io::Image img = decode_base64_image(body.at("image").get<std::string>(), "image");
  nlohmann::json items = nlohmann::json::object(), parameters = nullptr;
  std::string info;
  for (const auto& [key, value] : img.text) {
    items[key] = value;
    if (key == "parameters") info = value;
    if (key == pipeline::kMetadataKey) parameters = nlohmann::json::parse(value, nullptr, false);
  }
  if (parameters.is_discarded()) parameters = nullptr;
  return {{"info", info}, {"items", items}, {"parameters", parameters}};
}

nlohmann::json openai_error(const std::string& message, const std::string& type, const std::string& param,
                            const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? nlohmann::json(nullptr) : nlohmann::json(param)},
            {"code", code.empty() ? nlohmann::json(nullptr) : nlohmann::json(code)}}}};
}

nlohmann::json a1111_error(const std::string& message, const std::string& type) {
  return {{"error", type}, {"detail", message}, {"errors", message}};
}

std::string base64_encode(const std::vector<uint8_t>& bytes) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const uint32_t n = uint32_t(bytes[i]) << 16 | (i + 1 < bytes.size() ? uint32_t(bytes[i + 1]) << 8 : 0) |
                       (i + 2 < bytes.size() ? uint32_t(bytes[i + 2]) : 0);
    out += k[n >> 18 & 63];
    out += k[n >> 12 & 63];
    out += i + 1 < bytes.size() ? k[n >> 6 & 63] : '=';
    out += i + 2 < bytes.size() ? k[n & 63] : '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(const std::string& text, const std::string& field) {
  size_t start = 0;
  if (text.rfind("data:", 0) == 0) {
    const size_t comma = text.find(',');
    if (comma == std::string::npos || text.substr(0, comma).find(";base64") == std::string::npos)
      throw BadRequest(field + ": a data URL must be base64 (data:…;base64,…)", field);
    start = comma + 1;
  }
  std::vector<uint8_t> out;
  out.reserve((text.size() - start) / 4 * 3);
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (size_t i = start; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;  // '-' and '_': the URL-safe alphabet
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') {
      ++pad;
      continue;
    } else {
      throw BadRequest(field + ": not base64 (character " + std::to_string(int(static_cast<unsigned char>(c))) +
                           " at " + std::to_string(i) + ")",
                       field);
    }
    if (pad) throw BadRequest(field + ": not base64 (data after '=' padding)", field);
    acc = acc << 6 | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits & 0xFF));
    }
  }
  if (bits >= 6 || pad > 2) throw BadRequest(field + ": not base64 (truncated)", field);
  return out;
}

}  // namespace chroma::server

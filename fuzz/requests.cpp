// Fuzzes the HTTP request parsers of `serve` (server/api.h) and the request table behind them
// (pipeline/request.h): the first byte picks the parser, the rest is its JSON body (or base64 text).
// Only chroma::Error (BadRequest included) is an expected outcome.
#include <string>

#include "common.h"
#include "io/image.h"
#include "pipeline/request.h"
#include "server/api.h"

using namespace chroma;
using nlohmann::json;

namespace {

void make_seeds(const std::string& dir) {
  io::Image img;
  img.width = img.height = 4;
  img.rgb.assign(48, 77);
  const std::vector<uint8_t> png = io::encode_image(img, io::ImageFormat::Png);
  const std::string b64 = server::base64_encode(png);
  const std::vector<std::pair<char, std::string>> seeds = {
      {0, R"({"prompt": "a fox <sd_cpp_extra_args>{\"steps\": 4, \"seed\": 2}</sd_cpp_extra_args>", "n": 2,
              "size": "512x512", "response_format": "b64_json", "output_format": "webp", "cfg_scale": 3.5,
              "sampler": "Euler a", "lora": ["a.safetensors:0.5"], "preset": "comfyui"})"},
      {1, R"({"prompt": "a fox", "negative_prompt": "x", "seed": -1, "steps": 20, "cfg_scale": 7, "width": 512,
              "height": 768, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 2, "n_iter": 2})"},
      {2, R"({"prompt": "a hat", "init_images": [")" + b64 + R"("], "mask": ")" + b64 +
              R"(", "denoising_strength": 0.5, "mask_blur": 4, "width": 64, "height": 64})"},
      {3, R"({"prompt": "(red:1.2) fox", "width": 64, "height": 64, "steps": 3, "scheduler": "beta",
              "beta_alpha": 0.6, "text_padding": "sdcpp", "preset": "sdcpp", "lora": ["x:1"], "seed": null})"},
      {4, R"({"image": ")" + b64 + R"("})"},
      {5, "data:image/png;base64," + b64},
      {6, R"({"prompt": "a hat", "n": "2", "size": "64x64", "strength": "0.4"})"},
  };
  int i = 0;
  for (const auto& [kind, body] : seeds) fuzz::add_seed(dir, "seed" + std::to_string(i++), std::string(1, kind) + body);
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int kind = data[0] % 7;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  try {
    server::OutputChoice out;
    switch (kind) {
      case 0: server::openai_request(body, &out); break;
      case 1: server::a1111_request(body); break;
      case 2: server::a1111_img2img_request(body); break;
      case 3: pipeline::request_from_json(body); break;
      case 4: server::png_info(body); break;
      case 5: server::decode_base64_image(text, "image"); break;
      case 6: {  // the edits form: text fields only (what a multipart form holds), no files
        json fields = json::object();
        if (body.is_object())
          for (const auto& [k, v] : body.items()) fields[k] = v.is_string() ? v.get<std::string>() : v.dump();
        server::openai_edit_request(fields, {1, 2, 3}, {}, &out);
        break;
      }
    }
  } catch (const Error&) {
  }
  return 0;
}

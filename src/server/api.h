// The request and response shapes of the APIs other tools speak, mapped onto GenerationRequest:
// OpenAI's images API (Open WebUI, LocalAI-style clients, scripts), AUTOMATIC1111's /sdapi/v1 (Open
// WebUI, SillyTavern), and our own jobs API (the request's own JSON keys). Pure functions of JSON, so
// each mapping is tested without a socket; server.cpp routes HTTP onto them.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "io/image.h"
#include "pipeline/request.h"
#include "tensor/error.h"

namespace chroma::server {

// Limits a request must keep so that one request cannot take the machine (serve's flags).
struct RequestLimits {
  int max_side = 2048;           // --max-size: pixels per side
  int max_steps = 100;           // --max-steps
  int max_images = 8;            // images per request (n, batch_size × n_iter)
  size_t max_prompt_bytes = 16384;
};

// A request that breaks a rule of its API: HTTP 400 with this message and the offending field.
class BadRequest : public Error {
 public:
  BadRequest(const std::string& message, std::string param = "") : Error(message), param(std::move(param)) {}
  std::string param;
};

// Throws BadRequest naming the limit a validated request exceeds.
void check_limits(const pipeline::GenerationRequest& request, const RequestLimits& limits);

// How the images of a request are to be returned.
struct OutputChoice {
  io::ImageFormat format = io::ImageFormat::Png;
  int quality = 90;
};

// OpenAI POST /v1/images/generations: prompt (required), n, size "WxH", response_format (b64_json
// only: we keep no files to link to), output_format png|jpeg|webp, output_compression 0..100 (the
// JPEG/WebP quality); our extras negative_prompt, seed, steps, cfg_scale, sampler, scheduler, lora
// (a string or an array of FILE[:SCALE]); and sd.cpp's <sd_cpp_extra_args>{…}</sd_cpp_extra_args> in
// the prompt, whose JSON (the same extras, or any of our request keys) is taken out of the prompt and
// applied last. model, quality, style, user, background are accepted and ignored. Throws BadRequest.
// `defaults` are what the request leaves out (the server's pipeline: its variant's defaults).
pipeline::GenerationRequest openai_request(const nlohmann::json& body, OutputChoice* output,
                                           const pipeline::GenerationRequest& defaults = {});

// A1111 POST /sdapi/v1/txt2img: prompt, negative_prompt, seed (−1 random), steps, cfg_scale, width,
// height, sampler_name / sampler_index, scheduler, batch_size × n_iter images; unknown A1111 fields
// (restore_faces, hr options, …) are ignored as A1111 clients send many. Throws BadRequest.
pipeline::GenerationRequest a1111_request(const nlohmann::json& body);

// A1111 POST /sdapi/v1/img2img: txt2img's fields plus init_images (base64; the first is used), mask
// (base64, white = repaint), denoising_strength (default 0.75), mask_blur. Throws BadRequest.
pipeline::GenerationRequest a1111_img2img_request(const nlohmann::json& body);

// OpenAI POST /v1/images/edits, from the multipart form: `fields` holds the text fields (prompt, n,
// size, … as openai_request reads them; numbers given as text are read as numbers), `image` and
// `mask` the uploaded files' bytes (mask may be empty). OpenAI's mask marks with transparency where
// to edit; a mask without an alpha channel is read as ours (white = repaint). strength defaults to
// 1 with a mask (the masked area is generated anew) and 0.75 without. Throws BadRequest.
pipeline::GenerationRequest openai_edit_request(const nlohmann::json& fields, const std::vector<uint8_t>& image,
                                                const std::vector<uint8_t>& mask, OutputChoice* output,
                                                const pipeline::GenerationRequest& defaults = {});

// One part of a multipart/form-data body (as the HTTP library parsed it): the field's name, the file
// name ("" for a text field) and its bytes.
struct FormPart {
  std::string name, filename, content;
};
// The edits form as it arrives: the first "image" (or "image[]") part is the image, "mask" the mask,
// other parts without a file name the text fields; files under other names are ignored.
pipeline::GenerationRequest openai_edit_request(const std::vector<FormPart>& parts, OutputChoice* output,
                                                const pipeline::GenerationRequest& defaults = {});

// A1111 POST /sdapi/v1/png-info {"image": base64}: {"info": the A1111 parameters text, "items": every
// text chunk, "parameters": our JSON parameters when the image has them}. Throws BadRequest.
nlohmann::json png_info(const nlohmann::json& body);

// Our sampler and scheduler for an A1111 display name ("DPM++ 2M", "Euler a", "Karras", …) or one of
// our own names; empty for an unknown one.
std::string sampler_from_a1111(const std::string& name);
std::string scheduler_from_a1111(const std::string& name);
// A1111's lists: [{name, aliases, options}] and [{name, label}].
nlohmann::json a1111_samplers();
nlohmann::json a1111_schedulers();

// Error bodies: OpenAI's {"error": {message, type, param, code}}, A1111's (FastAPI's) {"detail", "error"}.
nlohmann::json openai_error(const std::string& message, const std::string& type, const std::string& param = "",
                            const std::string& code = "");
nlohmann::json a1111_error(const std::string& message, const std::string& type);

std::string base64_encode(const std::vector<uint8_t>& bytes);
// Strict base64 (RFC 4648, padding optional, whitespace ignored), after an optional data-URL prefix
// ("data:image/png;base64,"); throws BadRequest naming `field` for anything else.
std::vector<uint8_t> base64_decode(const std::string& text, const std::string& field);
// A base64 (or data-URL) PNG, JPEG or WebP, decoded; BadRequest naming `field` otherwise.
io::Image decode_base64_image(const std::string& text, const std::string& field);

}  // namespace chroma::server

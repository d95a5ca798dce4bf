// `chromacpp serve`: HTTP front end over Jobs (server/jobs.h: in this process, or shared through Redis) — the OpenAI images API, the
// AUTOMATIC1111 /sdapi/v1 subset Open WebUI and SillyTavern call, and our jobs API with live progress
// as Server-Sent Events. Synchronous endpoints are thin wrappers over jobs. The HTTP library
// (cpp-httplib) stays inside server.cpp.
//
//   GET  /                              the web page (web/index.html, embedded)
//   GET  /health                        200 once the models are loaded (the server starts after)
//   GET  /v1/models                     the loaded model set
//   POST /v1/images/generations         OpenAI: waits, answers {"created", "data": [{"b64_json"}]}
//   POST /v1/images/edits               OpenAI, multipart: image (+ mask, transparent = edit) → img2img/inpaint
//   POST /v1/jobs                       our request JSON (pipeline/request.h keys, "preset",
//                                       "output_format", "preview") → 202 {"id", "status", "queue_position"}
//   GET  /v1/jobs/{id}                  status, progress, and when done the images (base64)
//   GET  /v1/jobs/{id}/events           text/event-stream: one event per phase and step, then the last
//   DELETE /v1/jobs/{id}                cancels (queued: at once; running: at the next step)
//   POST /sdapi/v1/txt2img, img2img     A1111: {"images", "parameters", "info"}; img2img takes
//                                       init_images, mask (white = repaint), denoising_strength
//   POST /sdapi/v1/png-info             an image's parameters text and metadata
//   GET  /sdapi/v1/progress             A1111: progress, eta_relative, state.sampling_step/steps, current_image
//   POST /sdapi/v1/interrupt            cancels the running job
//   GET  /sdapi/v1/sd-models, samplers, schedulers, loras; GET/POST /sdapi/v1/options
#pragma once
#include <memory>
#include <string>

#include "server/api.h"
#include "server/jobs.h"

namespace chroma::server {

struct ServerOptions {
  std::string host = "127.0.0.1";  // loopback unless asked: the API can take the machine
  int port = 8080;                 // 0: any free port (tests)
  std::string api_key;             // non-empty: every route but /health needs "Authorization: Bearer KEY"
  size_t max_body_bytes = 32 << 20;  // larger bodies get 413
  RequestLimits limits;
  std::string model_name;          // what /v1/models and /sdapi/v1/sd-models report
  // What OpenAI and /v1/jobs requests leave out: the pipeline's default_request() (its variant's:
  // Flash runs 8 heun steps at cfg 1). A1111 requests keep A1111's own defaults.
  pipeline::GenerationRequest defaults;
  std::string lora_dir;            // what /sdapi/v1/loras lists
  int threads = 8;                 // HTTP worker threads (each open event stream holds one)
  int read_timeout_seconds = 5;    // a client that stops sending mid-request is dropped after this
};

class Server {
 public:
  Server(Jobs& jobs, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port; returns the port (the chosen one for port 0). Throws chroma::Error naming the
  // address when it cannot bind.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace chroma::server

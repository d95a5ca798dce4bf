#include "server/server.h"

#include "server/web_page.h"

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <functional>

namespace chroma::server {
namespace {

using nlohmann::json;

// With the charset parameter the type is not one cpp-httplib compresses (it matches the bare
// "application/json"): our bodies are small or base64 images, which brotli would take ~0.1 s per
// megabyte to shrink by a quarter.
void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json; charset=utf-8");
}

// Which error shape a path answers with.
bool is_a1111(const httplib::Request& req) { return req.path.rfind("/sdapi/", 0) == 0; }

void send_error(const httplib::Request& req, httplib::Response& res, int status, const std::string& message,
                const std::string& type, const std::string& param = "") {
  send_json(res, status, is_a1111(req) ? a1111_error(message, type) : openai_error(message, type, param));
}

// A body over --max-body: 413.
class TooLarge : public Error {
 public:
  using Error::Error;
};

// The body of a POST, read by the route itself (bounded by --max-body) into `sink`. Routes do this
// rather than take cpp-httplib's `req.body`: the library (compiled in Debian's package) refuses a body
// sent as application/x-www-form-urlencoded, which is what `curl -d` says, above 8 KiB before any
// handler runs, and answers 400 to a POST without Content-Length (`curl -X POST`), which has no body.
void read_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read,
               const std::function<void(const char*, size_t)>& sink) {
  const bool chunked = req.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
  if (!req.has_header("Content-Length") && !chunked) return;
  const auto receive = [&](const char* data, size_t n) {
    sink(data, n);
    return true;
  };
  const bool ok = req.is_multipart_form_data()
                      ? read([](const httplib::MultipartFormData&) { return true; }, receive)
                      : read(receive);
  if (ok) return;
  if (res.status == 413) throw TooLarge("the request body is too large");
  throw BadRequest("the request body could not be read");
}

json read_json_body(const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
  std::string text;
  read_body(req, res, read, [&](const char* data, size_t n) { text.append(data, n); });
  if (req.is_multipart_form_data()) throw BadRequest("expected a JSON body, not multipart/form-data");
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) throw BadRequest("the request body is not valid JSON");
  return body;
}

// A synchronous request whose job was cancelled (interrupt, DELETE, shutdown): 409.
class JobCancelled : public Error {
 public:
  using Error::Error;
};

// Runs a handler, turning each kind of failure into its HTTP status and the API's error shape.
template <class Run>
void run_guarded(const httplib::Request& req, httplib::Response& res, const Run& run) {
  try {
    run();
  } catch (const QueueFull& e) {
    res.set_header("Retry-After", "30");
    send_error(req, res, 429, e.what(), "rate_limit_exceeded");
  } catch (const ShuttingDown& e) {
    send_error(req, res, 503, e.what(), "server_error");
  } catch (const JobCancelled& e) {
    send_error(req, res, 409, e.what(), "cancelled");
  } catch (const TooLarge& e) {
    send_error(req, res, 413, e.what(), "invalid_request_error");
  } catch (const BadRequest& e) {
    send_error(req, res, 400, e.what(), "invalid_request_error", e.param);
  } catch (const Error& e) {
    send_error(req, res, 400, e.what(), "invalid_request_error");
  } catch (const std::exception& e) {
    send_error(req, res, 500, e.what(), "server_error");
  }
}

template <class Handler>
httplib::Server::Handler guarded(Handler handler) {
  return [handler](const httplib::Request& req, httplib::Response& res) { run_guarded(req, res, [&] { handler(req, res); }); };
}

// A POST route whose handler gets the JSON body (see read_json_body).
template <class Handler>
httplib::Server::HandlerWithContentReader guarded_json(Handler handler) {
  return [handler](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
    run_guarded(req, res, [&] { handler(req, read_json_body(req, res, read), res); });
  };
}

// A POST route that wants no body: whatever was sent is read and dropped.
template <class Handler>
httplib::Server::HandlerWithContentReader guarded_no_body(Handler handler) {
  return [handler](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
    run_guarded(req, res, [&] {
      read_body(req, res, read, [](const char*, size_t) {});
      handler(req, res);
    });
  };
}

}  // namespace

struct Server::Impl {
  Jobs& queue;
  ServerOptions options;
  httplib::Server http;

  Impl(Jobs& q, ServerOptions o) : queue(q), options(std::move(o)) { routes(); }

  // Submits and waits: the synchronous APIs. Throws for a failed or cancelled job.
  JobStatus run_sync(const pipeline::GenerationRequest& r, const OutputChoice& out, bool previews = false) {
    check_limits(r, options.limits);
    const std::string id = queue.submit(r, out.format, out.quality, previews);
    std::optional<JobStatus> s = queue.wait(id);
    if (!s) throw std::runtime_error("job " + id + " vanished");
    if (s->state == JobState::Cancelled) throw JobCancelled("the generation was cancelled: " + s->error);
    if (s->state == JobState::Failed) throw std::runtime_error("the generation failed: " + s->error);
    return *s;
  }

  // A1111's answer to txt2img and img2img: the images, the parameters echoed, and "info" as a JSON
  // string with the seeds and infotexts.
  void a1111_reply(httplib::Response& res, const json& body, const pipeline::GenerationRequest& r) {
    const JobStatus s = run_sync(r, {}, /*previews=*/true);  // A1111 clients show /progress's current_image
    json images = json::array(), seeds = json::array(), infotexts = json::array();
    for (const JobImage& img : s.images) {
      images.push_back(base64_encode(img.bytes));
      seeds.push_back(img.parameters.value("seed", json(nullptr)));
      infotexts.push_back(img.infotext);
    }
    const json info = {{"prompt", r.prompt}, {"negative_prompt", r.negative_prompt},
                       {"seed", seeds.empty() ? json(nullptr) : seeds[0]}, {"all_seeds", seeds},
                       {"width", r.width}, {"height", r.height}, {"steps", r.steps}, {"cfg_scale", r.cfg},
                       {"sampler_name", r.sampler}, {"scheduler", r.scheduler}, {"infotexts", infotexts}};
    send_json(res, 200, {{"images", images}, {"parameters", body}, {"info", info.dump()}});
  }

  void routes() {
    http.set_payload_max_length(options.max_body_bytes);
    http.set_read_timeout(options.read_timeout_seconds, 0);
    const int threads = options.threads;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options.api_key.empty() || req.path == "/health" || req.path == "/")  // the page asks for the key itself
        return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + options.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(req, res, 401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error");
      return httplib::Server::HandlerResponse::Handled;
    });
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;  // a handler's own error body
      if (res.status == 404) send_error(req, res, 404, "no such endpoint: " + req.method + " " + req.path, "not_found");
      else if (res.status == 413) send_error(req, res, 413, "the request body is too large", "invalid_request_error");
      else send_error(req, res, res.status, "HTTP " + std::to_string(res.status), "invalid_request_error");
    });

    http.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      const std::string_view page = web_page();
      res.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });
    http.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
      const QueueMetrics m = queue.metrics();
      const uint64_t ended = m.done + m.failed + m.cancelled;
      std::string text;
      auto metric = [&](const char* name, const char* type, const char* help, const std::string& samples) {
        text += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + samples;
      };
      auto sample = [](const std::string& name, double v) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %.17g\n", v);
        return name + buf;
      };
      metric("chromacpp_queue_length", "gauge", "Jobs waiting.", sample("chromacpp_queue_length", m.queued));
      metric("chromacpp_running", "gauge", "Jobs running (0 or 1).", sample("chromacpp_running", m.running));
      metric("chromacpp_jobs_total", "counter", "Jobs ended, by how.",
             sample("chromacpp_jobs_total{state=\"done\"}", double(m.done)) +
                 sample("chromacpp_jobs_total{state=\"failed\"}", double(m.failed)) +
                 sample("chromacpp_jobs_total{state=\"cancelled\"}", double(m.cancelled)));
      metric("chromacpp_steps_total", "counter", "Denoising steps run.", sample("chromacpp_steps_total", double(m.steps)));
      metric("chromacpp_busy_seconds_total", "counter", "Time spent running jobs (steps/s = steps_total / busy).",
             sample("chromacpp_busy_seconds_total", m.busy_seconds));
      metric("chromacpp_job_seconds", "summary", "Jobs from submission to end, queue wait included.",
             sample("chromacpp_job_seconds_sum", m.latency_seconds) + sample("chromacpp_job_seconds_count", double(ended)));
      res.set_content(text, "text/plain; version=0.0.4");
    }));
    http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"object", "list"},
                           {"data", {{{"id", options.model_name}, {"object", "model"}, {"created", 0}, {"owned_by", "chroma.cpp"}}}}});
    }));

    // ---- OpenAI ----
    http.Post("/v1/images/generations", guarded_json([this](const httplib::Request&, const json& body, httplib::Response& res) {
      OutputChoice out;
      const pipeline::GenerationRequest r = openai_request(body, &out, options.defaults);
      const JobStatus s = run_sync(r, out);
      json data = json::array();
      for (const JobImage& img : s.images) data.push_back({{"b64_json", base64_encode(img.bytes)}, {"revised_prompt", r.prompt}});
      const auto now = std::chrono::system_clock::now().time_since_epoch();
      send_json(res, 200, {{"created", std::chrono::duration_cast<std::chrono::seconds>(now).count()},
                           {"data", data},
                           {"output_format", io::image_format_name(out.format)}});
    }));

    http.Post("/v1/images/edits", guarded([this](const httplib::Request& req, httplib::Response& res) {
      if (!req.is_multipart_form_data())
        throw BadRequest("expected multipart/form-data with an image file, a prompt, and optionally a mask");
      std::vector<FormPart> parts;
      for (const auto& [name, part] : req.files) parts.push_back({name, part.filename, part.content});
      OutputChoice out;
      const pipeline::GenerationRequest r = openai_edit_request(parts, &out, options.defaults);
      const JobStatus s = run_sync(r, out);
      json data = json::array();
      for (const JobImage& img : s.images) data.push_back({{"b64_json", base64_encode(img.bytes)}});
      const auto now = std::chrono::system_clock::now().time_since_epoch();
      send_json(res, 200, {{"created", std::chrono::duration_cast<std::chrono::seconds>(now).count()},
                           {"data", data},
                           {"output_format", io::image_format_name(out.format)}});
    }));

    // ---- jobs ----
    http.Post("/v1/jobs", guarded_json([this](const httplib::Request&, json body, httplib::Response& res) {
      if (!body.is_object()) throw BadRequest("the request body must be a JSON object");
      OutputChoice out;
      if (body.contains("output_format")) {
        if (!body["output_format"].is_string()) throw BadRequest("output_format: expected a string", "output_format");
        out.format = io::parse_image_format(body["output_format"].get<std::string>());
        body.erase("output_format");
      }
      bool previews = false;
      if (body.contains("preview")) {
        if (!body["preview"].is_boolean()) throw BadRequest("preview: expected true or false", "preview");
        previews = body["preview"].get<bool>();
        body.erase("preview");
      }
      // Over HTTP the init image and mask are the images themselves (base64), never server paths.
      std::string init_b64, mask_b64;
      for (auto [key, out] : {std::pair{"init_image", &init_b64}, {"mask", &mask_b64}})
        if (body.contains(key)) {
          if (!body[key].is_string()) throw BadRequest(std::string(key) + ": expected a base64 image", key);
          *out = body[key].get<std::string>();
          body.erase(key);
        }
      pipeline::GenerationRequest r = pipeline::request_from_json(body, options.defaults);
      if (!init_b64.empty()) r.init_pixels = decode_base64_image(init_b64, "init_image");
      if (!mask_b64.empty()) r.mask_pixels = decode_base64_image(mask_b64, "mask");
      try {
        pipeline::validate(r);
      } catch (const Error& e) {
        throw BadRequest(e.what());
      }
      check_limits(r, options.limits);
      const std::string id = queue.submit(r, out.format, out.quality, previews);
      const std::optional<JobStatus> s = queue.status(id);
      res.set_header("Location", "/v1/jobs/" + id);
      send_json(res, 202, status_json(*s, false));
    }));
    http.Get(R"(/v1/jobs/([A-Za-z0-9-]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const std::optional<JobStatus> s = queue.status(req.matches[1]);
      if (!s) return send_error(req, res, 404, "no job " + std::string(req.matches[1]), "not_found", "id");
      send_json(res, 200, status_json(*s, true));
    }));
    http.Delete(R"(/v1/jobs/([A-Za-z0-9-]+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      const std::optional<JobStatus> before = queue.status(id);
      if (!before) return send_error(req, res, 404, "no job " + id, "not_found", "id");
      if (!queue.cancel(id))
        return send_error(req, res, 409, "job " + id + " has already ended (" + job_state_name(before->state) + ")",
                          "conflict", "id");
      send_json(res, 200, status_json(*queue.status(id), false));
    }));
    http.Get(R"(/v1/jobs/([A-Za-z0-9-]+)/events)", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      if (!queue.status(id)) return send_error(req, res, 404, "no job " + id, "not_found", "id");
      auto seen = std::make_shared<size_t>(0);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [this, id, seen](size_t, httplib::DataSink& sink) {
        bool ended = false;
        const auto events = queue.events_after(id, *seen, 1000, &ended);
        if (!events) {  // expired while streaming
          sink.done();
          return true;
        }
        for (const json& e : *events) {
          const std::string line = "data: " + e.dump() + "\n\n";
          if (!sink.write(line.data(), line.size())) return false;  // the client left
        }
        *seen += events->size();
        if (ended) sink.done();
        else if (events->empty()) {  // a comment line keeps proxies from closing an idle stream
          static const char keep_alive[] = ": waiting\n\n";
          if (!sink.write(keep_alive, sizeof keep_alive - 1)) return false;
        }
        return true;
      });
    });

    // ---- AUTOMATIC1111 ----
    http.Post("/sdapi/v1/txt2img", guarded_json([this](const httplib::Request&, const json& body, httplib::Response& res) {
      a1111_reply(res, body, a1111_request(body));
    }));
    http.Post("/sdapi/v1/img2img", guarded_json([this](const httplib::Request&, json body, httplib::Response& res) {
      const pipeline::GenerationRequest r = a1111_img2img_request(body);
      body.erase("init_images");  // A1111 echoes the parameters; not the megabytes of the image
      body.erase("mask");
      a1111_reply(res, body, r);
    }));
    http.Post("/sdapi/v1/png-info", guarded_json([](const httplib::Request&, const json& body, httplib::Response& res) {
      send_json(res, 200, png_info(body));
    }));
    http.Get("/sdapi/v1/progress", guarded([this](const httplib::Request&, httplib::Response& res) {
      const std::optional<JobStatus> s = queue.running();
      json state = {{"skipped", false}, {"interrupted", false}, {"job", s ? s->id : ""},
                    {"job_count", queue.queued() + (s ? 1 : 0)}, {"sampling_step", 0}, {"sampling_steps", 0}};
      double fraction = 0, eta = 0;
      if (s) {
        const pipeline::Progress& p = s->progress;
        state["sampling_step"] = p.step;
        state["sampling_steps"] = p.steps;
        if (p.steps > 0 && p.images > 0)
          fraction = (double(p.image - 1) * p.steps + p.step) / (double(p.images) * p.steps);
        eta = std::max(0.0, p.eta_seconds);
      }
      const json current = s && !s->preview.empty() ? json(base64_encode(s->preview)) : json(nullptr);
      send_json(res, 200, {{"progress", fraction}, {"eta_relative", eta}, {"state", state},
                           {"current_image", current}, {"textinfo", nullptr}});
    }));
    http.Post("/sdapi/v1/interrupt", guarded_no_body([this](const httplib::Request&, httplib::Response& res) {
      queue.interrupt();
      send_json(res, 200, json::object());
    }));
    http.Post("/sdapi/v1/skip", guarded_no_body([](const httplib::Request&, httplib::Response& res) { send_json(res, 200, json::object()); }));
    http.Get("/sdapi/v1/sd-models", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, json::array({{{"title", options.model_name}, {"model_name", options.model_name},
                                        {"filename", options.model_name}, {"hash", nullptr}, {"sha256", nullptr}}}));
    }));
    http.Get("/sdapi/v1/samplers", guarded([](const httplib::Request&, httplib::Response& res) { send_json(res, 200, a1111_samplers()); }));
    http.Get("/sdapi/v1/schedulers", guarded([](const httplib::Request&, httplib::Response& res) { send_json(res, 200, a1111_schedulers()); }));
    http.Get("/sdapi/v1/loras", guarded([this](const httplib::Request&, httplib::Response& res) {
      json loras = json::array();
      std::error_code ec;
      if (!options.lora_dir.empty())
        for (const auto& e : std::filesystem::directory_iterator(options.lora_dir, ec))
          if (e.path().extension() == ".safetensors")
            loras.push_back({{"name", e.path().stem().string()}, {"alias", e.path().stem().string()}, {"path", e.path().string()}});
      send_json(res, 200, loras);
    }));
    http.Get("/sdapi/v1/options", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, 200, {{"sd_model_checkpoint", options.model_name}});
    }));
    http.Post("/sdapi/v1/options", guarded_json([](const httplib::Request&, const json& body, httplib::Response& res) {
      if (!body.is_object()) throw BadRequest("the options must be a JSON object");
      send_json(res, 200, json::object());  // one model set per server: nothing to switch
    }));
  }
};

Server::Server(Jobs& queue, ServerOptions options) : impl_(std::make_unique<Impl>(queue, std::move(options))) {}
Server::~Server() { stop(); }

int Server::bind() {
  const ServerOptions& o = impl_->options;
  if (o.port == 0) {
    const int port = impl_->http.bind_to_any_port(o.host);
    if (port < 0) throw Error("serve: cannot bind " + o.host + " to any port");
    return port;
  }
  if (!impl_->http.bind_to_port(o.host, o.port))
    throw Error("serve: cannot listen on " + o.host + ":" + std::to_string(o.port) + " (in use, or not an address of this machine)");
  return o.port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() {
  if (impl_) impl_->http.stop();
}

}  // namespace chroma::server

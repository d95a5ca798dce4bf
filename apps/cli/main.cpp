// chromacpp — the command line front end, over the library's programmatic interfaces:
//   chromacpp generate   text to image, img2img, inpainting, batches, LoRAs (pipeline::Pipeline; flags from
//                        pipeline::request_options(), so samplers, schedulers, tiling and weighting come with it)
//   chromacpp bench      time opening the models and a full run (pipeline/bench.h, docs/PERFORMANCE.md)
//   chromacpp tokenize   print T5 token ids as JSON (text/tokenizer.h)
//   chromacpp compare    dump-and-compare two safetensors files (io/compare.h)
//   chromacpp quantize   write a DiT or T5 checkpoint as GGUF (io/quantize.h)
//   chromacpp info       what a weight file holds: model, configuration, tensor types, size (io/formats.h)
//   chromacpp pull       download a model from a Hugging Face repository into the cache (net/hub.h)
//   chromacpp serve      HTTP server: OpenAI images, A1111 /sdapi/v1, jobs with live progress (server/server.h)
// What is here is only the terminal's part: flags, the progress display and the output files. Every
// error is one line on stderr and a non-zero exit.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <cerrno>
#include <csignal>
#include <thread>

#include "io/atomic_file.h"
#include "io/compare.h"
#include "io/gguf.h"
#include "io/image.h"
#include "io/quantize.h"
#include "io/safetensors.h"
#include "io/untrusted.h"
#include "pipeline/bench.h"
#include "pipeline/model_files.h"
#include "pipeline/model_info.h"
#include "pipeline/output.h"
#include "pipeline/pipeline.h"
#include "net/cache.h"
#include "net/hub.h"
#include "server/redis_jobs.h"
#include "server/server.h"
#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace chroma;

// Fills unset paths from --models DIR, else $CHROMA_MODELS and ./models, recognising files by content
// (pipeline/model_files.h); returns false after explaining which files are missing and where they
// are published.
bool resolve_model_files(pipeline::ModelFiles& files, const std::string& models_dir = "") {
  const std::string missing = pipeline::resolve_model_files(files, pipeline::model_search_dirs(models_dir));
  if (!missing.empty()) std::fprintf(stderr, "chromacpp: error: %s", missing.c_str());
  return missing.empty();
}

std::string human_bytes(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / (1024.0 * 1024.0 * 1024.0));
  return s;
}

std::string minutes_seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%dm%02ds", int(s) / 60, int(s) % 60);
  return b;
}

// Denoising progress: on a terminal one line that redraws itself,
//   [#########.....................] 3/28  12.3 s/step  ETA 5m07s
// elsewhere (a log, a pipe) one plain line per step with -v, nothing without.
class ProgressDisplay {
 public:
  ProgressDisplay(bool tty, bool verbose) : tty_(tty), verbose_(verbose) {}
  bool operator()(const pipeline::Progress& p) {
    if (p.phase != pipeline::Progress::Phase::Denoising || p.step == 0) return true;
    const double s_per_step = p.step_seconds;
    if (tty_) {
      const int width = 30, filled = p.steps ? p.step * width / p.steps : width;
      std::fprintf(stderr, "\r\033[K[%s%s] %d/%d  %.1f s/step  ETA %s", std::string(size_t(filled), '#').c_str(),
                   std::string(size_t(width - filled), '.').c_str(), p.step, p.steps, s_per_step,
                   minutes_seconds(std::max(0.0, p.eta_seconds)).c_str());
      if (p.step == p.steps) std::fputc('\n', stderr);
      std::fflush(stderr);
    } else if (verbose_) {
      std::fprintf(stderr, "chromacpp: step %d/%d  %.1f s/step  ETA %s\n", p.step, p.steps, s_per_step,
                   minutes_seconds(std::max(0.0, p.eta_seconds)).c_str());
    }
    return true;
  }

 private:
  bool tty_, verbose_;
};

// ---- options shared by generate, bench (and the server) ----

// The model set: --models DIR or the four files, and how the pipeline runs them.
struct ModelOptions {
  std::string models_dir;
  pipeline::PipelineConfig config;
};

void add_model_options(CLI::App* cmd, ModelOptions& m) {
  cmd->add_option("--models", m.models_dir,
                  "Folder with the models: the diffusers layout of lodestones/Chroma1-HD, or single files "
                  "(recognised by content; default: $CHROMA_MODELS, then ./models)");
  cmd->add_option("--dit", m.config.files.dit, "Chroma DiT: safetensors file or folder (original, diffusers or fp8 scaled), or GGUF");
  cmd->add_option("--t5", m.config.files.t5, "T5-XXL: safetensors file, index.json or folder (bf16/f16 or fp8 scaled), or GGUF");
  cmd->add_option("--vae", m.config.files.vae, "Flux VAE: ae.safetensors or diffusers vae/ folder (Chroma1-Radiance needs none)");
  cmd->add_option("--tokenizer", m.config.files.tokenizer, "T5 spiece.model");
  cmd->add_option("--threads", m.config.threads, "Worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd->add_option_function<std::string>(
         "--compute",
         [&m](const std::string& v) {
           try {
             m.config.compute = parse_compute(v);
           } catch (const Error& e) {
             throw CLI::ValidationError(e.what());  // reported as a usage error, like CLI11's own checks
           }
         },
         "Arithmetic of the large products: auto (default: int8 for block-quantized weights, f32 for the rest), f32 "
         "(exact to float32 rounding), bf16 (bf16 weights times inputs rounded to bf16, float32 sums; needs AVX-512 "
         "BF16) or int8 (Q8_0/Q4_K/... weights times inputs quantized to int8 per 32 values; needs AVX2)");
  cmd->add_option_function<std::string>(
         "--variant",
         [&m](const std::string& v) {
           try {
             m.config.variant = pipeline::parse_variant(v);
           } catch (const Error& e) {
             throw CLI::ValidationError(e.what());
           }
         },
         "Which Chroma the DiT is, when its file name does not say: " + pipeline::variant_choices() +
             " (flash: 8 heun steps at cfg 1 unless given)");
  cmd->add_flag("--low-memory", m.config.low_memory,
                "Keep one model block's weights resident at a time (under 1 GiB at 512x512; slower)");
  cmd->add_flag_callback("--no-memory-check", [&m] { m.config.memory_check = false; },
                         "Run even when the estimated peak memory exceeds the memory available");
  cmd->add_option("--lora-dir", m.config.lora_dir, "Folder where LoRA names (--lora NAME, <lora:NAME:SCALE>) are found");
  cmd->add_option_function<std::string>(
         "--lora-apply", [&m](const std::string& v) { m.config.lora_fuse = v == "fuse"; },
         "runtime (low-rank product inside each linear; default) or fuse (merged once into copies of the weights in their own type)")
      ->check(CLI::IsMember({"runtime", "fuse"}));
}

// Every option of pipeline::request_options() as a flag. The texts are collected during parsing and
// applied afterwards (apply_request_flags) through the table's own parser, so the CLI accepts exactly
// what the server and --from-png accept, and flags can override a request read from an image.
using RequestFlags = std::vector<std::pair<std::string, std::string>>;  // (key, text) in command-line order

void add_request_options(CLI::App* cmd, const pipeline::GenerationRequest& defaults, RequestFlags& flags,
                         bool prompt_required) {
  const nlohmann::json shown = pipeline::request_to_json(defaults);
  cmd->add_option_function<std::string>(
         "--preset", [&flags](const std::string& name) { flags.push_back({"preset", name}); },
         "Settings of another front end (" + pipeline::preset_names() +
             "), applied before the other flags, which override them")
      ->type_name("NAME");
  for (const pipeline::RequestOption& o : pipeline::request_options()) {
    if (o.flag_value) {
      cmd->add_flag_callback(o.flags, [&flags, &o] { flags.push_back({o.key, o.flag_value}); }, o.help);
      continue;
    }
    if (o.clear) {  // repeatable
      cmd->add_option_function<std::vector<std::string>>(
             o.flags, [&flags, &o](const std::vector<std::string>& texts) {
               for (const std::string& t : texts) flags.push_back({o.key, t});
             }, o.help)
          ->type_name("TEXT")
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
          ->allow_extra_args(false);
      continue;
    }
    CLI::Option* opt = cmd->add_option_function<std::string>(
        o.flags, [&flags, &o](const std::string& text) { flags.push_back({o.key, text}); }, o.help);
    const nlohmann::json& d = shown.at(o.key);
    opt->type_name(d.is_number_float() ? "NUMBER" : d.is_number() || std::string(o.key) == "seed" ? "INT" : "TEXT");
    if (!d.is_null() && d != "") opt->default_str(d.is_string() ? d.get<std::string>() : d.dump());
    if (prompt_required && std::string(o.key) == "prompt") opt->required();
  }
}

pipeline::GenerationRequest apply_request_flags(pipeline::GenerationRequest request, const RequestFlags& flags) {
  for (const auto& [key, text] : flags)  // presets first, wherever they stand
    if (key == "preset") pipeline::apply_preset(request, text);
  for (const auto& [key, text] : flags)
    if (key != "preset") pipeline::set_option(request, key, text);
  pipeline::validate(request);
  return request;
}

bool resolve(ModelOptions& m) { return resolve_model_files(m.config.files, m.models_dir); }

struct OutputOptions {
  std::string output = "chroma.png", output_format, save_latent, dump_dir, from_png;
  bool grid = false, verbose = false;
};

// Same file (device and inode) — how an output is caught naming an input, whatever the spelling.
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

// Every file a run reads: the model files (each file of a model folder) and the request's inputs.
std::vector<std::string> input_files(const pipeline::ModelFiles& f, const pipeline::GenerationRequest& r,
                                     const std::string& from_png) {
  std::vector<std::string> inputs = {r.init_image, r.mask, r.init_noise, from_png};
  for (const std::string& p : {f.dit, f.t5, f.vae, f.tokenizer}) {
    std::error_code ec;
    if (fs::is_directory(p, ec))
      for (const auto& e : fs::recursive_directory_iterator(p, ec)) inputs.push_back(e.path().string());
    else
      inputs.push_back(p);
  }
  return inputs;
}

void refuse_overwriting_inputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs) {
  for (const std::string& out : outputs)
    for (const std::string& in : inputs)
      if (!in.empty() && same_file(out, in)) throw Error("-o " + out + ": is an input of this run (" + in + "); choose another output name");
}

int run_generate(ModelOptions m, const RequestFlags& flags, const OutputOptions& out) {
  // What the image's metadata says, or the defaults of the DiT's variant (Flash: 8 heun steps at cfg 1),
  // then the flags given here. The variant is known once the model files are; the outputs are checked
  // before that, with the plain defaults (the variant changes no output name).
  const auto make_request = [&](const pipeline::GenerationRequest& defaults) {
    if (!out.from_png.empty())
      return apply_request_flags(
          pipeline::request_from_metadata(pipeline::read_metadata(io::read_image(out.from_png), out.from_png)), flags);
    return apply_request_flags(defaults, flags);
  };
  pipeline::GenerationRequest request = make_request({});
  const io::ImageFormat format =
      out.output_format.empty() ? io::image_format_of_path(out.output) : io::parse_image_format(out.output_format);
  // Every output name is known, checked writable and checked against the inputs before any work.
  const std::vector<std::string> images = pipeline::output_paths(out.output, request.batch_count);
  std::vector<std::string> outputs = images;
  if (out.grid) outputs.push_back(pipeline::grid_path(out.output));
  const std::vector<std::string> latents =
      out.save_latent.empty() ? std::vector<std::string>{} : pipeline::output_paths(out.save_latent, request.batch_count);
  outputs.insert(outputs.end(), latents.begin(), latents.end());
  for (const std::string& path : outputs) io::check_writable(path);
  if (!resolve(m)) return 2;
  const pipeline::Variant variant = pipeline::model_variant(m.config);
  if (out.from_png.empty()) request = make_request(pipeline::variant_defaults(variant));
  refuse_overwriting_inputs(outputs, input_files(m.config.files, request, out.from_png));
  if (!request.seed && request.init_noise.empty()) request.seed = pipeline::random_seed();
  if (request.init_noise.empty())
    std::fprintf(stderr, "chromacpp: %dx%d, %d steps, cfg %g, seed %" PRIu64 "%s\n", request.width, request.height,
                 request.steps, double(request.cfg), *request.seed,
                 request.batch_count > 1 ? (", " + std::to_string(request.batch_count) + " images").c_str() : "");
  else
    std::fprintf(stderr, "chromacpp: %dx%d, %d steps, cfg %g, initial noise from %s\n", request.width,
                 request.height, request.steps, double(request.cfg), request.init_noise.c_str());

  pipeline::Pipeline pipeline(m.config);
  if (out.verbose)
    std::fprintf(stderr, "chromacpp: model %s, %s compute\n", pipeline.model_name().c_str(), compute_name(pipeline.compute()));
  std::unique_ptr<pipeline::Dump> dump;
  if (!out.dump_dir.empty()) dump = std::make_unique<pipeline::Dump>(out.dump_dir);
  pipeline::RunHooks hooks;
  hooks.progress = ProgressDisplay(isatty(STDERR_FILENO), out.verbose);
  hooks.dump = dump.get();
  const pipeline::GenerationResult r = pipeline.generate(request, hooks);
  for (const std::string& w : r.warnings) std::fprintf(stderr, "chromacpp: warning: %s\n", w.c_str());

  std::vector<io::Image> written;
  for (size_t i = 0; i < r.images.size(); ++i) {
    const pipeline::GeneratedImage& img = r.images[i];
    if (!latents.empty())
      io::write_safetensors(latents[i], {{"latent", &img.latent}}, {{pipeline::kMetadataKey, img.parameters.dump()}});
    written.push_back(img.to_image());
    io::write_image(images[i], written.back(), format);
    std::fprintf(stderr, "chromacpp: wrote %s\n", images[i].c_str());
    if (img.evaluations > 0)
      std::fprintf(stderr, "chromacpp: step cache: %d of %d DiT evaluations skipped the blocks after the first\n",
                   img.skipped_evaluations, img.evaluations);
  }
  if (out.grid) {
    io::write_image(outputs[images.size()], pipeline::contact_sheet(written), format);
    std::fprintf(stderr, "chromacpp: wrote %s\n", outputs[images.size()].c_str());
  }
  if (dump) std::fprintf(stderr, "chromacpp: dumped intermediates to %s\n", dump->write().c_str());
  if (out.verbose) {
    std::vector<pipeline::PhaseStats> phases = pipeline.open_phases();
    phases.insert(phases.end(), r.phases.begin(), r.phases.end());
    for (const auto& p : phases)
      std::fprintf(stderr, "  %-14s %9.2f s   peak RSS %s\n", p.name.c_str(), p.seconds,
                   human_bytes(p.peak_rss_bytes).c_str());
  }
  return 0;
}

// `info IMG`: the generation metadata an image carries.
int run_image_info(const std::string& path) {
  const io::Image img = io::read_image(path);
  std::printf("file:       %s (%dx%d image)\n", path.c_str(), img.width, img.height);
  const nlohmann::json params = pipeline::read_metadata(img, path);
  std::printf("%s\n\n%s\n", pipeline::infotext(params).c_str(), params.dump(2).c_str());
  return 0;
}

// ---- serve ----

struct ServeOptions {
  server::ServerOptions server;
  server::QueueLimits queue;
  int max_body_mib = 32;
  bool finish_on_stop = false;  // --on-stop finish: SIGTERM lets the running job end first
  std::string queue_url;        // --queue redis://HOST:PORT: jobs shared with other servers
  double claim_after = 30;      // --claim-after: seconds before a dead worker's job is taken over
};

// SIGINT/SIGTERM during serve: the handler only writes the signal number to a pipe (all a handler
// may safely do; any thread, OpenBLAS's included, may receive it), and one thread stops the server.
int serve_signal_pipe[2] = {-1, -1};
void on_serve_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] const ssize_t n = write(serve_signal_pipe[1], &b, 1);
}

int run_serve(ModelOptions m, ServeOptions o) {
  std::optional<server::RedisQueueOptions> shared;
  if (!o.queue_url.empty()) {  // a bad address is refused before the models load
    shared.emplace();
    shared->address = server::parse_redis_url(o.queue_url);
    shared->claim_after_seconds = o.claim_after;
    server::ping_redis(shared->address);
  }
  if (!resolve(m)) return 2;
  pipeline::Pipeline pipeline(m.config);
  // The DiT's file name; for a diffusers folder (…/Chroma1-HD/transformer) the model's folder name. It also
  // names the shared queue's stream, so servers of different models never take each other's jobs.
  std::filesystem::path dit_path = std::filesystem::path(m.config.files.dit).lexically_normal();
  if (!dit_path.has_filename()) dit_path = dit_path.parent_path();
  if (dit_path.filename() == "transformer" && dit_path.has_parent_path()) dit_path = dit_path.parent_path();
  o.server.model_name = dit_path.filename().string();
  o.server.lora_dir = m.config.lora_dir;
  o.server.defaults = pipeline.default_request();
  o.server.max_body_bytes = size_t(o.max_body_mib) << 20;
  const server::Runner runner = [&pipeline](const pipeline::GenerationRequest& r, const pipeline::RunHooks& hooks) {
    return pipeline.generate(r, hooks);
  };
  std::unique_ptr<server::Jobs> jobs;
  if (shared) {
    shared->model = o.server.model_name;
    jobs = std::make_unique<server::RedisJobs>(runner, *shared, o.queue);
    // The stream a KEDA ScaledObject watches (deploy/kubernetes-shared-queue.yaml).
    std::fprintf(stderr, "chromacpp: shared queue %s, stream chroma:queue:%s, group workers\n", o.queue_url.c_str(),
                 shared->model.c_str());
  } else {
    jobs = std::make_unique<server::JobQueue>(runner, o.queue);
  }
  server::Jobs& queue = *jobs;
  server::Server http(queue, o.server);
  const int port = http.bind();
  if (pipe(serve_signal_pipe) != 0) throw Error("serve: cannot create the signal pipe");
  struct sigaction sa {};
  sa.sa_handler = on_serve_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM}) sigaction(sig, &sa, nullptr);
  std::thread stopper([&] {
    unsigned char sig = 0;
    while (read(serve_signal_pipe[0], &sig, 1) < 0 && errno == EINTR) {
    }
    if (sig != 0)
      std::fprintf(stderr, "chromacpp: %s: stopping (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
                   o.finish_on_stop ? "the running job finishes first" : "the running job is cancelled at its next step");
    queue.shutdown(o.finish_on_stop);  // no new jobs from here; queued ones cancelled
    http.stop();
  });
  std::fprintf(stderr, "chromacpp: serving %s (%s) on http://%s:%d (Ctrl-C stops)\n", o.server.model_name.c_str(),
               pipeline::variant_name(pipeline.variant()), o.server.host.c_str(), port);
  http.run();
  const unsigned char none = 0;  // run() ended by itself: release the stopper
  [[maybe_unused]] const ssize_t n = write(serve_signal_pipe[1], &none, 1);
  stopper.join();
  return 0;
}

int run_bench(ModelOptions m, const pipeline::GenerationRequest& defaults, const RequestFlags& flags,
              const std::string& json_path) {
  if (!json_path.empty()) io::check_writable(json_path);
  if (!resolve(m)) return 2;
  // bench's short run keeps its size and steps; the variant says how a step is made (Flash: heun at cfg 1).
  pipeline::GenerationRequest base = defaults;
  const pipeline::GenerationRequest variant = pipeline::variant_defaults(pipeline::model_variant(m.config));
  base.sampler = variant.sampler;
  base.cfg = variant.cfg;
  const pipeline::GenerationRequest request = apply_request_flags(base, flags);
  std::fprintf(stderr, "chromacpp: benchmarking %dx%d, %d steps, cfg %g\n", request.width, request.height,
               request.steps, double(request.cfg));
  const pipeline::BenchResult r = pipeline::run_benchmark(m.config, request, [](const pipeline::Progress& p) {
    if (p.phase == pipeline::Progress::Phase::Denoising && p.step > 0)
      std::fprintf(stderr, "chromacpp: step %d/%d done\n", p.step, p.steps);
    return true;
  });
  std::fputs(pipeline::bench_table(r).c_str(), stdout);
  if (!json_path.empty())
    io::write_atomically(json_path, [&](const std::string& tmp) {
      std::ofstream f(tmp);
      f << pipeline::bench_json(r).dump(2) << "\n";
      if (!f) throw Error(json_path + ": cannot write the benchmark JSON");
    });
  return 0;
}

int run_compare(const std::string& a, const std::string& b, const std::string& a_prefix, const std::string& b_prefix,
                std::optional<double> threshold) {
  const io::ComparisonReport r = io::compare_files(a, b, a_prefix, b_prefix);
  int failures = 0;
  std::printf("%-44s %-20s %12s %12s %12s\n", "tensor", "shape", "mean_abs", "max_abs", "rel_err");
  for (const auto& c : r.common) {
    if (!c.shape_matches) {
      std::printf("%-44s %-20s %38s\n", c.name.c_str(), c.shape.c_str(), "SHAPE MISMATCH");
      ++failures;
      continue;
    }
    const bool bad = threshold && !(c.rel <= *threshold);
    failures += bad;
    std::printf("%-44s %-20s %12.4e %12.4e %12.4e%s\n", c.name.c_str(), c.shape.c_str(), c.mean_abs, c.max_abs, c.rel,
                bad ? "  > threshold" : "");
  }
  std::printf("%zu common tensors, %zu only in A, %zu only in B\n", r.common.size(), r.only_in_a.size(),
              r.only_in_b.size());
  if (r.common.empty()) {
    std::fprintf(stderr, "chromacpp: error: the files have no tensor names in common\n");
    return 1;
  }
  return failures ? 1 : 0;
}

int run_quantize(const std::string& in, const std::string& out, const std::string& type) {
  const DType dtype = io::parse_quantize_type(type);
  io::check_writable(out);
  const io::QuantizeReport r = io::quantize_model(in, out, dtype);
  std::fprintf(stderr, "chromacpp: wrote %s: %d tensors %s, %d kept in their precision; %s → %s\n", out.c_str(),
               r.quantized, dtype_name(dtype), r.kept, human_bytes(r.bytes_in).c_str(), human_bytes(r.bytes_out).c_str());
  return 0;
}

int run_info(const std::string& path) {
  const io::WeightStore store = io::WeightStore::open(path);
  const io::WeightSummary s = io::summarize(store);
  std::unique_ptr<io::GgufFile> gguf;
  if (io::is_gguf_file(path)) gguf = io::GgufFile::open(path);
  std::printf("file:       %s (%s)\n", path.c_str(),
              gguf ? ("GGUF v" + std::to_string(gguf->version())).c_str() : "safetensors");
  std::printf("model:      %s\n", s.format.describe().c_str());
  std::printf("config:     %s\n", pipeline::inferred_config(store).c_str());
  if (s.format.kind == io::ModelKind::DiT) std::printf("variant:    %s\n", pipeline::variant_name(pipeline::detect_variant(store)));
  std::printf("parameters: %" PRId64 " (%.3f B) in %zu tensors, %s (%zu bytes)\n", s.parameters,
              double(s.parameters) / 1e9, store.tensors().size(), human_bytes(s.bytes).c_str(), s.bytes);
  for (const auto& [type, n] : s.type_counts)
    std::printf("  %-8s %6d tensors  %s\n", type.c_str(), n, human_bytes(s.type_bytes.at(type)).c_str());
  if (gguf)
    for (const auto& [key, v] : gguf->metadata())
      std::printf("  %s = %s\n", io::printable(key).c_str(), v.to_string().c_str());  // keys and values escaped
  return 0;
}

// ---- pull ----
// Lists the repository, keeps the files the engine reads (or those matching --include), downloads them
// into the cache with a progress bar on a terminal (one line per file otherwise).
int run_pull(const std::string& repo, const std::string& revision, const std::vector<std::string>& include,
             std::string cache) {
  net::HubOptions options = net::hub_options_from_env();
  options.revision = revision;
  if (cache.empty()) cache = net::default_cache_dir();
  const std::vector<net::RepoFile> listed = net::list_repo_files(repo, options);
  const std::vector<net::RepoFile> files =
      include.empty() ? net::select_engine_files(listed) : net::select_files(listed, include);
  if (files.empty())
    throw Error(include.empty() ? repo + ": no files in the diffusers layout the engine reads (transformer/, "
                                         "text_encoder/, vae/ weights, tokenizer/spiece.model); choose files with --include"
                                : repo + ": no file matches --include");
  if (include.empty())
    for (const char* folder : {"transformer/", "text_encoder/", "vae/", "tokenizer/"})
      if (std::none_of(files.begin(), files.end(), [&](const net::RepoFile& f) { return f.path.starts_with(folder); }))
        std::fprintf(stderr, "chromacpp: warning: %s has no %s files the engine reads; pass that model with a flag\n",
                     repo.c_str(), folder);

  const bool tty = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  auto last_draw = start - std::chrono::seconds(1);
  uint64_t first_total = ~uint64_t(0);  // bytes already there when the transfer started (for the rate)
  const net::PullResult r = net::pull(repo, files, cache, options, [&](const net::PullProgress& p) {
    const auto now = std::chrono::steady_clock::now();
    if (first_total == ~uint64_t(0)) first_total = p.total_done;
    if (!tty) {
      if (p.file_complete)
        std::fprintf(stderr, "chromacpp: %zu/%zu %s (%s)\n", p.index + 1, p.count, p.file->path.c_str(),
                     human_bytes(p.file->size).c_str());
      return;
    }
    if (!p.file_complete && now - last_draw < std::chrono::milliseconds(200)) return;
    last_draw = now;
    // [##########..........] 3/8 transformer/…  7.21/17.80 GiB  48.2 MiB/s  ETA 3m45s
    const double s = std::chrono::duration<double>(now - start).count();
    const double rate = s > 0 ? double(p.total_done - std::min(first_total, p.total_done)) / s : 0;
    const int width = 20, filled = p.total ? int(double(p.total_done) / double(p.total) * width) : width;
    const double eta = rate > 0 ? double(p.total - p.total_done) / rate : 0;
    std::fprintf(stderr, "\r\033[K[%s%s] %zu/%zu %s  %.2f/%.2f GiB  %.1f MiB/s  ETA %dm%02ds",
                 std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(),
                 p.index + 1, p.count, fs::path(p.file->path).filename().c_str(), double(p.total_done) / (1 << 30),
                 double(p.total) / (1 << 30), rate / (1 << 20), int(eta) / 60, int(eta) % 60);
    std::fflush(stderr);
  });
  if (tty) std::fputc('\n', stderr);
  std::fprintf(stderr, "chromacpp: %s is in %s (%zu files, %s; %zu downloaded, %zu already there)\n", repo.c_str(),
               r.dir.c_str(), files.size(), human_bytes(r.bytes).c_str(), r.downloaded, r.already_present);
  if (repo == net::kDefaultRepo && include.empty())
    std::fprintf(stderr, "chromacpp: generate uses it when no model paths are given\n");
  else
    std::fprintf(stderr, "chromacpp: use it with generate --models %s\n", r.dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  chroma::io::remove_temp_files_on_signals();  // Ctrl-C mid-write leaves no *.tmp-* file
  CLI::App app{"chroma.cpp — Chroma text-to-image on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "chromacpp 0.1");
  // Parse errors in the same one-line form as every other error (CLI11's default adds a second line).
  app.failure_message(
      [](const CLI::App*, const CLI::Error& e) { return "chromacpp: error: " + std::string(e.what()) + " (see --help)\n"; });

  ModelOptions gen_models;
  RequestFlags gen_flags;
  OutputOptions gen_out;
  CLI::App* gen = app.add_subcommand("generate", "Generate images from a prompt (text to image, img2img, inpainting)");
  add_model_options(gen, gen_models);
  add_request_options(gen, pipeline::GenerationRequest{}, gen_flags, /*prompt_required=*/false);
  gen->add_option("--from-png", gen_out.from_png,
                  "Make again what an image's chroma.cpp metadata says (flags given here override it)");
  gen->add_option("-o,--output", gen_out.output, "Output image; with -b, %d / %03d is the image number (1..N)")
      ->capture_default_str();
  gen->add_option("--output-format", gen_out.output_format, "png, jpeg or webp (default: from the -o extension)");
  gen->add_flag("--grid", gen_out.grid, "Also write a contact sheet of the batch (NAME_grid.EXT)");
  gen->add_option("--save-latent", gen_out.save_latent, "Also write the final latent (F32 [1,16,H/8,W/8] safetensors)");
  gen->add_option("--dump", gen_out.dump_dir, "Write intermediate tensors to DIR/dump.safetensors");
  gen->add_flag("-v,--verbose", gen_out.verbose, "Print each step (when not on a terminal) and each phase's time and peak memory");

  // ---- bench: the configuration docs/PERFORMANCE.md compares ----
  ModelOptions bench_models;
  pipeline::GenerationRequest bench_request;
  bench_request.width = bench_request.height = 256;
  bench_request.steps = 2;
  bench_request.prompt = "a photograph of a red fox sitting in fresh snow at golden hour, detailed fur";
  bench_request.negative_prompt = "blurry, low quality, deformed";
  bench_request.seed = 42;
  RequestFlags bench_flags;
  std::string bench_json_path;
  CLI::App* bench = app.add_subcommand("bench", "Time a full run: phases, steps, peak memory, per-operator throughput");
  add_model_options(bench, bench_models);
  add_request_options(bench, bench_request, bench_flags, /*prompt_required=*/false);
  bench->add_option("--json", bench_json_path, "Also write the results as JSON to FILE");

  ModelOptions serve_models;
  ServeOptions serve_opts;
  CLI::App* serve = app.add_subcommand("serve", "HTTP server: OpenAI images API, A1111 /sdapi/v1, jobs with live progress");
  add_model_options(serve, serve_models);
  serve->add_option("--host", serve_opts.server.host, "Address to listen on (127.0.0.1: this machine only)")->capture_default_str();
  serve->add_option("--port", serve_opts.server.port, "Port")->capture_default_str()->check(CLI::Range(0, 65535));
  serve->add_option("--api-key", serve_opts.server.api_key, "Require 'Authorization: Bearer KEY' on every route but /health");
  serve->add_option("--max-queue", serve_opts.queue.max_queued, "Jobs that may wait; more get 429")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  serve->add_option("--keep-results", serve_opts.queue.keep_seconds, "Seconds a finished job's images are kept")
      ->capture_default_str()->check(CLI::Range(0.0, 1e7));
  serve->add_option("--max-size", serve_opts.server.limits.max_side, "Largest width or height a request may ask")
      ->capture_default_str()->check(CLI::Range(16, 8192));
  serve->add_option("--max-steps", serve_opts.server.limits.max_steps, "Most steps a request may ask")
      ->capture_default_str()->check(CLI::Range(1, 10000));
  serve->add_option("--max-images", serve_opts.server.limits.max_images, "Most images per request")
      ->capture_default_str()->check(CLI::Range(1, 1000));
  serve->add_option("--max-body", serve_opts.max_body_mib, "Largest request body, MiB")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  serve->add_option_function<std::string>(
           "--on-stop", [&serve_opts](const std::string& v) { serve_opts.finish_on_stop = v == "finish"; },
           "On SIGTERM/SIGINT: cancel the running job at its next step (default) or let it finish")
      ->check(CLI::IsMember({"cancel", "finish"}));
  serve->add_option("--queue", serve_opts.queue_url,
                    "Share jobs with every server on this Redis (redis://HOST:PORT): one stream per model set");
  serve->add_option("--claim-after", serve_opts.claim_after,
                    "With --queue: seconds a running job may go unrenewed before another server takes it over")
      ->capture_default_str()->check(CLI::Range(0.1, 86400.0));

  std::string tok_path, tok_text;
  CLI::App* tok = app.add_subcommand("tokenize", "Print the T5 token ids of a text as a JSON array");
  tok->add_option("--tokenizer", tok_path, "T5 spiece.model")->required();
  tok->add_option("text", tok_text, "Text")->required();

  std::string cmp_a, cmp_b, a_prefix, b_prefix;
  std::optional<double> threshold;
  CLI::App* cmp = app.add_subcommand("compare", "Per common tensor: shape, mean/max absolute and relative error");
  cmp->add_option("a", cmp_a, "safetensors file (e.g. a --dump)")->required();
  cmp->add_option("b", cmp_b, "reference safetensors file")->required();
  cmp->add_option("--threshold", threshold, "Exit non-zero if a relative error exceeds this")
      ->check(CLI::Validator(
          [](std::string& v) {
            char* end = nullptr;
            const double x = std::strtod(v.c_str(), &end);
            return end != v.c_str() && *end == 0 && std::isfinite(x) ? std::string() : "must be a finite number";
          },
          "FINITE"));
  cmp->add_option("--a-prefix", a_prefix, "Only tensors of A with this prefix, matched without it");
  cmp->add_option("--b-prefix", b_prefix, "Only tensors of B with this prefix, matched without it");

  std::string q_in, q_out, q_type;
  CLI::App* quant = app.add_subcommand("quantize", "Write a Chroma DiT or T5 encoder as GGUF (sd.cpp / ComfyUI-GGUF layout)");
  quant->add_option("in", q_in, "Checkpoint (safetensors, shard index or folder, or GGUF)")->required();
  quant->add_option("out", q_out, "GGUF file to write")->required();
  quant->add_option("--type", q_type, "Type of the block matrices: q8_0, q4_0, q4_k, q5_k, q6_k, bf16, f16, f32")
      ->required();

  std::string info_path;
  CLI::App* info = app.add_subcommand("info", "Model kind, inferred configuration, tensor types, parameters and bytes");
  info->add_option("file", info_path, "Weight file (safetensors, shard index or folder, or GGUF)")->required();

  std::string pull_repo = net::kDefaultRepo, pull_revision = "main", pull_cache;
  std::vector<std::string> pull_include;
  CLI::App* pull_cmd = app.add_subcommand(
      "pull", "Download a model from a Hugging Face repository into the cache ($HF_TOKEN, $HF_ENDPOINT honoured)");
  pull_cmd->add_option("repo", pull_repo, "Repository owner/name")->capture_default_str();
  pull_cmd->add_option("--revision", pull_revision, "Branch, tag or commit")->capture_default_str();
  pull_cmd->add_option("--include", pull_include,
                       "Only the files matching these globs, e.g. 'ae.safetensors' (default: the weights and "
                       "spiece.model of a diffusers layout)");
  pull_cmd->add_option("--cache", pull_cache, "Cache folder (default: $CHROMA_CACHE, $XDG_CACHE_HOME/chroma.cpp or ~/.cache/chroma.cpp)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*gen) {
      const bool has_prompt = std::any_of(gen_flags.begin(), gen_flags.end(), [](const auto& f) { return f.first == "prompt"; });
      if (!has_prompt && gen_out.from_png.empty()) throw Error("generate: --prompt is required (or --from-png IMAGE)");
      return run_generate(gen_models, gen_flags, gen_out);
    }
    if (*bench) return run_bench(bench_models, bench_request, bench_flags, bench_json_path);
    if (*serve) return run_serve(serve_models, serve_opts);
    if (*tok) {
      const text::T5Tokenizer t(tok_path);
      std::cout << nlohmann::json(t.encode(tok_text)).dump() << "\n";
      return 0;
    }
    if (*cmp) return run_compare(cmp_a, cmp_b, a_prefix, b_prefix, threshold);
    if (*quant) return run_quantize(q_in, q_out, q_type);
    if (*info) return io::is_image_file(info_path) ? run_image_info(info_path) : run_info(info_path);
    if (*pull_cmd) return run_pull(pull_repo, pull_revision, pull_include, pull_cache);
  } catch (const chroma::Error& e) {
    std::fprintf(stderr, "chromacpp: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "chromacpp: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "chromacpp: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

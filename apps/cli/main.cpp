// chromacpp — the command line front end.
//   chromacpp generate   text to image
//   chromacpp tokenize   print T5 token ids as JSON
//   chromacpp compare    dump-and-compare two safetensors files
//   chromacpp bench      time a full run (docs/PERFORMANCE.md)
//   chromacpp quantize   write a DiT or T5 checkpoint as GGUF (io/quantize.h)
//   chromacpp info       what a weight file holds: model, configuration, tensor types, size
//   chromacpp pull       download a model from a Hugging Face repository into the cache (net/hub.h)
// Knows the pipeline's API only; every error is one line on stderr and a non-zero exit.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/backend.h"
#include "io/atomic_file.h"
#include "io/compare.h"
#include "io/gguf.h"
#include "io/png.h"
#include "io/quantize.h"
#include "io/safetensors.h"
#include "io/untrusted.h"
#include "pipeline/bench.h"
#include "pipeline/model_files.h"
#include "pipeline/txt2img.h"
#include "models/chroma/config.h"
#include "models/t5/t5.h"
#include "net/cache.h"
#include "net/hub.h"
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

// One line that redraws itself: [#####.....] 3/28  12.3 s/step
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), start_(std::chrono::steady_clock::now()) {}
  void update(int done, int total) {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30, filled = total ? done * width / total : width;
    std::fprintf(stderr, "\r[%s%s] %d/%d  %.1f s/step", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(width - filled), '.').c_str(), done, total, done ? s / done : 0.0);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

int run_generate(pipeline::ModelFiles files, const std::string& models_dir, pipeline::GenerateOptions o,
                 std::optional<uint64_t> seed,
                 const std::string& output, const std::string& save_latent, const std::string& dump_dir,
                 const std::string& sampler_dtype, int threads, bool verbose) {
  pipeline::validate(o);
  if (sampler_dtype == "bf16") o.sampler_dtype = pipeline::SamplerDtype::BF16;
  // Fail on unwritable outputs now, not after the run.
  io::check_writable(output);
  if (!save_latent.empty()) io::check_writable(save_latent);
  if (!resolve_model_files(files, models_dir)) return 2;
  if (threads > 0) set_num_threads(threads);
  o.seed = seed ? *seed : uint64_t(std::random_device{}());
  if (o.init_noise.empty())
    std::fprintf(stderr, "chromacpp: %dx%d, %d steps, cfg %g, seed %" PRIu64 "\n", o.width, o.height, o.steps,
                 double(o.cfg), o.seed);
  else
    std::fprintf(stderr, "chromacpp: %dx%d, %d steps, cfg %g, initial noise from %s\n", o.width, o.height, o.steps,
                 double(o.cfg), o.init_noise.c_str());

  std::unique_ptr<pipeline::Dump> dump;
  if (!dump_dir.empty()) dump = std::make_unique<pipeline::Dump>(dump_dir);
  ProgressBar bar(isatty(STDERR_FILENO));
  pipeline::GenerateResult r =
      pipeline::generate(files, o, [&](int done, int total) { bar.update(done, total); }, dump.get());

  nlohmann::json params = {{"prompt", o.prompt},           {"negative_prompt", o.negative_prompt},
                           {"width", o.width},             {"height", o.height},
                           {"steps", o.steps},             {"cfg", o.cfg},
                           {"skip_cfg_steps", o.skip_cfg_steps},
                           {"seed", o.init_noise.empty() ? nlohmann::json(o.seed) : nlohmann::json(nullptr)},
                           {"shift", o.shift},             {"sampler", "euler"},
                           {"sampler_dtype", sampler_dtype}, {"init_noise", o.init_noise},
                           {"dit", fs::path(files.dit).filename().string()}};
  if (!save_latent.empty()) io::write_safetensors(save_latent, {{"latent", &r.latent}}, {{"parameters", params.dump()}});
  if (dump) std::fprintf(stderr, "chromacpp: dumped intermediates to %s\n", dump->write().c_str());
  io::write_png(output, pipeline::to_rgb8(r.image), o.width, o.height,
                {{"parameters", params.dump()}, {"Software", "chroma.cpp"}});
  std::fprintf(stderr, "chromacpp: wrote %s\n", output.c_str());
  if (verbose)
    for (const auto& p : r.phases)
      std::fprintf(stderr, "  %-14s %9.2f s   peak RSS %s\n", p.name.c_str(), p.seconds,
                   human_bytes(p.peak_rss_bytes).c_str());
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

// The configuration a model's shapes imply (or why none could be inferred).
std::string inferred_config(const io::WeightStore& store) {
  char b[320];
  try {
    if (store.format().kind == io::ModelKind::DiT) {
      const dit::ChromaConfig c = dit::ChromaConfig::from_weights(store);
      std::snprintf(b, sizeof b,
                    "hidden %d, heads %d × %d, mlp %d, double blocks %d, single blocks %d, context %d, "
                    "approximator %d → %d × %d layers",
                    c.hidden, c.heads, c.head_dim, c.mlp_hidden, c.double_blocks, c.single_blocks, c.context_dim,
                    c.approx_in, c.approx_hidden, c.approx_layers);
      return b;
    }
    if (store.format().kind == io::ModelKind::T5) {
      const t5::T5Config c = t5::T5Config::from_weights(store);
      std::snprintf(b, sizeof b, "d_model %d, heads %d × %d, d_ff %d, layers %d, vocab %d, buckets %d", c.d_model,
                    c.heads, c.d_kv, c.d_ff, c.layers, c.vocab, c.buckets);
      return b;
    }
  } catch (const Error& e) {
    return std::string("not inferable (") + e.what() + ")";
  }
  return "-";
}

int run_info(const std::string& path) {
  const io::WeightStore store = io::WeightStore::open(path);
  const io::WeightSummary s = io::summarize(store);
  std::unique_ptr<io::GgufFile> gguf;
  if (io::is_gguf_file(path)) gguf = io::GgufFile::open(path);
  std::printf("file:       %s (%s)\n", path.c_str(),
              gguf ? ("GGUF v" + std::to_string(gguf->version())).c_str() : "safetensors");
  std::printf("model:      %s\n", s.format.describe().c_str());
  std::printf("config:     %s\n", inferred_config(store).c_str());
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

  pipeline::ModelFiles files;
  std::string models_dir;
  pipeline::GenerateOptions o;
  std::optional<uint64_t> seed;
  std::string output = "chroma.png", save_latent, dump_dir, sampler_dtype = "f32";
  int threads = 0;
  bool verbose = false, no_shift = false;
  CLI::App* gen = app.add_subcommand("generate", "Generate an image from a prompt");
  gen->add_option("--models", models_dir,
                  "Folder with the models: the diffusers layout of lodestones/Chroma1-HD, or single files "
                  "(recognised by content; default: $CHROMA_MODELS, then ./models)");
  gen->add_option("--dit", files.dit, "Chroma DiT: safetensors file or folder (original, diffusers or fp8 scaled)");
  gen->add_option("--t5", files.t5, "T5-XXL: safetensors file, index.json or folder (bf16/f16 or fp8 scaled)");
  gen->add_option("--vae", files.vae, "Flux VAE: ae.safetensors or diffusers vae/ folder");
  gen->add_option("--tokenizer", files.tokenizer, "T5 spiece.model");
  gen->add_option("-p,--prompt", o.prompt, "Prompt")->required();
  gen->add_option("-n,--negative-prompt", o.negative_prompt, "Negative prompt")->capture_default_str();
  gen->add_option("-W,--width", o.width, "Width in pixels (multiple of 16)")->capture_default_str();
  gen->add_option("-H,--height", o.height, "Height in pixels (multiple of 16)")->capture_default_str();
  gen->add_option("--steps", o.steps, "Denoising steps")->capture_default_str();
  gen->add_option("--cfg", o.cfg, "Classifier-free guidance scale (1 = no negative pass)")->capture_default_str();
  gen->add_option("--skip-cfg-steps", o.skip_cfg_steps, "First N steps without the negative pass (-1 = never CFG)")
      ->capture_default_str();
  gen->add_option("--seed", seed, "Seed (random when absent; printed and stored in the PNG)");
  gen->add_flag("--no-shift", no_shift, "Plain linear schedule instead of the resolution-dependent shift");
  gen->add_option("--init-noise", o.init_noise, "Initial noise: safetensors with one F32 [1,16,H/8,W/8] tensor");
  gen->add_option("--sampler-dtype", sampler_dtype, "Sampler state precision: f32, or bf16 as the reference sampler")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  gen->add_option("--save-latent", save_latent, "Also write the final latent (F32 [1,16,H/8,W/8] safetensors)");
  gen->add_option("--dump", dump_dir, "Write intermediate tensors to DIR/dump.safetensors");
  gen->add_option("-o,--output", output, "Output PNG")->capture_default_str();
  gen->add_option("--threads", threads, "Worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
  gen->add_flag("-v,--verbose", verbose, "Print time and peak memory of each phase");
  gen->add_flag("--low-memory", o.low_memory,
                "Keep one model block's weights resident at a time (under 1 GiB at 512x512; slower)");
  gen->add_flag("--no-memory-check", [&o](int64_t) { o.memory_check = false; },
                "Run even when the estimated peak memory exceeds the memory available");

  // ---- bench ----
  pipeline::ModelFiles bench_files;
  pipeline::GenerateOptions bench_o;
  bench_o.width = bench_o.height = 256;  // the configuration docs/PERFORMANCE.md compares
  bench_o.steps = 2;
  bench_o.prompt = "a photograph of a red fox sitting in fresh snow at golden hour, detailed fur";
  bench_o.negative_prompt = "blurry, low quality, deformed";
  bench_o.seed = 42;
  int bench_threads = 0;
  std::string bench_json_path;
  CLI::App* bench = app.add_subcommand("bench", "Time a full run: phases, steps, peak memory, per-operator throughput");
  bench->add_option("--dit", bench_files.dit, "Chroma DiT safetensors");
  bench->add_option("--t5", bench_files.t5, "T5-XXL safetensors (file, index.json or folder)");
  bench->add_option("--vae", bench_files.vae, "Flux VAE ae.safetensors");
  bench->add_option("--tokenizer", bench_files.tokenizer, "T5 spiece.model");
  bench->add_option("-p,--prompt", bench_o.prompt, "Prompt")->capture_default_str();
  bench->add_option("-n,--negative-prompt", bench_o.negative_prompt, "Negative prompt")->capture_default_str();
  bench->add_option("-W,--width", bench_o.width, "Width in pixels (multiple of 16)")->capture_default_str();
  bench->add_option("-H,--height", bench_o.height, "Height in pixels (multiple of 16)")->capture_default_str();
  bench->add_option("--steps", bench_o.steps, "Denoising steps")->capture_default_str();
  bench->add_option("--cfg", bench_o.cfg, "Classifier-free guidance scale (1 = no negative pass)")->capture_default_str();
  bench->add_option("--threads", bench_threads, "Worker threads (default: all cores)")->check(CLI::NonNegativeNumber);
  bench->add_option("--json", bench_json_path, "Also write the results as JSON to FILE");
  bench->add_flag("--low-memory", bench_o.low_memory, "Keep one model block's weights resident at a time");
  bench->add_flag("--no-memory-check", [&bench_o](int64_t) { bench_o.memory_check = false; },
                  "Run even when the estimated peak memory exceeds the memory available");

  std::string tok_path, tok_text;
  CLI::App* tok = app.add_subcommand("tokenize", "Print the T5 token ids of a text as a JSON array");
  tok->add_option("--tokenizer", tok_path, "T5 spiece.model")->required();
  tok->add_option("text", tok_text, "Text")->required();

  std::string cmp_a, cmp_b, a_prefix, b_prefix;
  std::optional<double> threshold;
  CLI::App* cmp = app.add_subcommand("compare", "Per common tensor: shape, mean/max absolute and relative error");
  cmp->add_option("a", cmp_a, "safetensors file (e.g. a --dump)")->required();
  cmp->add_option("b", cmp_b, "reference safetensors file")->required();
  cmp->add_option("--threshold", threshold, "Exit non-zero if a relative error exceeds this");
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
      o.shift = !no_shift;
      return run_generate(files, models_dir, o, seed, output, save_latent, dump_dir, sampler_dtype, threads, verbose);
    }
    if (*bench) {
      pipeline::validate(bench_o);
      if (!bench_json_path.empty()) io::check_writable(bench_json_path);
      if (!resolve_model_files(bench_files)) return 2;
      if (bench_threads > 0) set_num_threads(bench_threads);
      std::fprintf(stderr, "chromacpp: benchmarking %dx%d, %d steps, cfg %g\n", bench_o.width, bench_o.height,
                   bench_o.steps, double(bench_o.cfg));
      const pipeline::BenchResult r = pipeline::run_benchmark(
          bench_files, bench_o, [](int done, int total) { std::fprintf(stderr, "chromacpp: step %d/%d done\n", done, total); });
      std::fputs(pipeline::bench_table(r).c_str(), stdout);
      if (!bench_json_path.empty())
        io::write_atomically(bench_json_path, [&](const std::string& tmp) {
          std::ofstream out(tmp);
          out << pipeline::bench_json(r).dump(2) << "\n";
          if (!out) throw Error(bench_json_path + ": cannot write the benchmark JSON");
        });
      return 0;
    }
    if (*tok) {
      const text::T5Tokenizer t(tok_path);
      std::cout << nlohmann::json(t.encode(tok_text)).dump() << "\n";
      return 0;
    }
    if (*cmp) return run_compare(cmp_a, cmp_b, a_prefix, b_prefix, threshold);
    if (*quant) return run_quantize(q_in, q_out, q_type);
    if (*info) return run_info(info_path);
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

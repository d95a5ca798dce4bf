// chromacpp — the command line front end.
//   chromacpp generate   text to image
//   chromacpp tokenize   print T5 token ids as JSON
//   chromacpp compare    dump-and-compare two safetensors files
// Knows the pipeline's API only; every error is one line on stderr and a non-zero exit.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/backend.h"
#include "io/atomic_file.h"
#include "io/compare.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "pipeline/txt2img.h"
#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using namespace chroma;

// Where the weights are published, for the message shown when files are missing.
struct ModelSource {
  const char* flag;
  const char* what;
  std::vector<const char*> default_names;  // looked up in $CHROMA_MODELS, then ./models
  const char* where;
};
const ModelSource kSources[] = {
    {"--dit", "Chroma DiT (single safetensors file)", {"Chroma1-HD.safetensors", "chroma.safetensors"},
     "https://huggingface.co/lodestones/Chroma1-HD (Chroma1-HD.safetensors, Apache-2.0)"},
    {"--t5", "T5-XXL encoder (safetensors file, or folder with model.safetensors.index.json)",
     {"t5xxl_fp16.safetensors", "text_encoder_2", "text_encoder"},
     "https://huggingface.co/comfyanonymous/flux_text_encoders (t5xxl_fp16.safetensors) or text_encoder/ of lodestones/Chroma1-HD"},
    {"--vae", "Flux VAE", {"ae.safetensors"},
     "https://huggingface.co/black-forest-labs/FLUX.1-schnell (ae.safetensors, Apache-2.0)"},
    {"--tokenizer", "T5 SentencePiece model", {"spiece.model", "tokenizer/spiece.model", "tokenizer_2/spiece.model"},
     "https://huggingface.co/black-forest-labs/FLUX.1-schnell (tokenizer_2/spiece.model) or tokenizer/ of lodestones/Chroma1-HD"},
};

// Fills unset paths from the default folders; returns false (after explaining) if any is missing.
bool resolve_model_files(pipeline::ModelFiles& files) {
  std::string* slots[] = {&files.dit, &files.t5, &files.vae, &files.tokenizer};
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("CHROMA_MODELS"); env && *env) dirs.emplace_back(env);
  dirs.emplace_back("models");
  bool ok = true;
  std::string missing;
  for (size_t i = 0; i < 4; ++i) {
    if (!slots[i]->empty()) continue;
    for (const auto& d : dirs)
      for (const char* n : kSources[i].default_names)
        if (slots[i]->empty() && fs::exists(d / n)) *slots[i] = (d / n).string();
    if (slots[i]->empty()) {
      ok = false;
      missing += std::string("  ") + kSources[i].flag + "  " + kSources[i].what + "\n      from " + kSources[i].where +
                 "\n";
    }
  }
  if (!ok)
    std::fprintf(stderr,
                 "chromacpp: error: model files not found. Pass them with the flags below, or put them in "
                 "$CHROMA_MODELS or ./models:\n%s",
                 missing.c_str());
  return ok;
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

int run_generate(pipeline::ModelFiles files, pipeline::GenerateOptions o, std::optional<uint64_t> seed,
                 const std::string& output, const std::string& save_latent, const std::string& dump_dir,
                 const std::string& sampler_dtype, int threads, bool verbose) {
  pipeline::validate(o);
  if (sampler_dtype == "bf16") o.sampler_dtype = pipeline::SamplerDtype::BF16;
  // Fail on unwritable outputs now, not after the run.
  io::check_writable(output);
  if (!save_latent.empty()) io::check_writable(save_latent);
  if (!resolve_model_files(files)) return 2;
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"chroma.cpp — Chroma text-to-image on the CPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "chromacpp 0.1");
  // Parse errors in the same one-line form as every other error (CLI11's default adds a second line).
  app.failure_message(
      [](const CLI::App*, const CLI::Error& e) { return "chromacpp: error: " + std::string(e.what()) + " (see --help)\n"; });

  pipeline::ModelFiles files;
  pipeline::GenerateOptions o;
  std::optional<uint64_t> seed;
  std::string output = "chroma.png", save_latent, dump_dir, sampler_dtype = "f32";
  int threads = 0;
  bool verbose = false, no_shift = false;
  CLI::App* gen = app.add_subcommand("generate", "Generate an image from a prompt");
  gen->add_option("--dit", files.dit, "Chroma DiT safetensors");
  gen->add_option("--t5", files.t5, "T5-XXL safetensors (file, index.json or folder)");
  gen->add_option("--vae", files.vae, "Flux VAE ae.safetensors");
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*gen) {
      o.shift = !no_shift;
      return run_generate(files, o, seed, output, save_latent, dump_dir, sampler_dtype, threads, verbose);
    }
    if (*tok) {
      const text::T5Tokenizer t(tok_path);
      std::cout << nlohmann::json(t.encode(tok_text)).dump() << "\n";
      return 0;
    }
    if (*cmp) return run_compare(cmp_a, cmp_b, a_prefix, b_prefix, threshold);
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

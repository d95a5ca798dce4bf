// The first-block step cache's speed and fidelity (docs/PERFORMANCE.md): one request without the cache,
// then with each threshold, in one process on one loaded model set; per threshold the run time, the
// evaluations cut short, and the PSNR of the 8-bit image against the uncached one. Not a test.
//   cmake --build build --target cache_bench
//   ./build/cache_bench DIT T5 VAE TOKENIZER [--size 256] [--steps 28] [--thresholds 0.02,0.05,0.08,0.12,0.2]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline/pipeline.h"

using namespace chroma;
using Clock = std::chrono::steady_clock;

namespace {
double psnr(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) se += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
  return se == 0 ? INFINITY : 10 * std::log10(255.0 * 255.0 * double(a.size()) / se);
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files, thresholds = {"0.02", "0.05", "0.08", "0.12", "0.2"};
  int size = 256, steps = 28;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--size") && i + 1 < argc) size = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--thresholds") && i + 1 < argc) {
      thresholds.clear();
      std::stringstream list(argv[++i]);
      for (std::string t; std::getline(list, t, ',');) thresholds.push_back(t);
    } else files.push_back(argv[i]);
  }
  if (files.size() != 4 || size < 16 || size % 16 || steps < 1) {
    std::fprintf(stderr, "usage: cache_bench DIT T5 VAE TOKENIZER [--size 256] [--steps 28] [--thresholds a,b,…]\n");
    return 2;
  }
  try {
    pipeline::PipelineConfig config;
    config.files = {files[0], files[1], files[2], files[3]};
    pipeline::Pipeline pipeline(config);
    pipeline::GenerationRequest r;
    r.prompt = "a red fox sitting in fresh snow, golden hour";
    r.negative_prompt = "blurry, low quality";
    r.width = r.height = size;
    r.steps = steps;
    r.seed = 42;
    auto run = [&](const std::string& cache, double* seconds) {
      r.cache = cache;
      const Clock::time_point t = Clock::now();
      pipeline::GeneratedImage img = std::move(pipeline.generate(r).images.at(0));
      *seconds = std::chrono::duration<double>(Clock::now() - t).count();
      return img;
    };
    double base_s = 0;
    run("", &base_s);  // pages read once
    const pipeline::GeneratedImage base = run("", &base_s);
    std::printf("cache_bench: %s, %dx%d, %d steps, cfg %g\n", files[0].c_str(), size, size, steps, double(r.cfg));
    std::printf("  %-10s %9s %8s %10s %9s\n", "threshold", "seconds", "speed-up", "skipped", "PSNR dB");
    std::printf("  %-10s %9.2f %8s %10s %9s\n", "off", base_s, "1.00", "-", "-");
    for (const std::string& t : thresholds) {
      double s = 0;
      const pipeline::GeneratedImage img = run("fbcache:" + t, &s);
      std::printf("  %-10s %9.2f %8.2f %5d/%-4d %9.2f\n", t.c_str(), s, base_s / s, img.skipped_evaluations,
                  img.evaluations, psnr(img.rgb, base.rgb));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cache_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

// What LoRA costs on a full-size Chroma DiT (docs/PERFORMANCE.md), measured in one process on the same
// inputs: one denoising step's forward (the packed positive + negative pass of a CFG step) of the base
// model, alternating with the same forward under each LoRA applied at run time, over several rounds so
// the ratios share the machine's state; then the time set_loras takes to fuse each LoRA, and one
// forward of the fused model. Not a test.
//   cmake --build build --target lora_bench
//   ./build/lora_bench DIT.safetensors LORA.safetensors... [--size 512] [--text-rows 64] [--rounds 2] [--runtime-only]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sys/resource.h>
#include <string>
#include <vector>

#include "io/lora.h"
#include "io/safetensors.h"
#include "models/chroma/model.h"
#include "peak_rss.h"

using namespace chroma;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// Major page faults so far: weight pages read back from disk because memory ran short, which makes
// a step slower for a reason that is not the arithmetic being compared.
long major_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_majflt;
}

// CPU seconds (user + system) of the process so far: the work a step took, whatever share of the cores
// a shared machine gave it (wall times of the same step vary by ±10 % there).
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

Tensor random_tensor(Shape shape, std::mt19937& rng) {
  Tensor t(std::move(shape));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (float& x : t.values()) x = normal(rng);
  return t;
}


}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  int size = 512, text_rows = 64, rounds = 2;
  bool fuse = true;
  for (int i = 1; i < argc; ++i) {
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "lora_bench: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      return std::atoi(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--size")) size = value();
    else if (!std::strcmp(argv[i], "--text-rows")) text_rows = value();
    else if (!std::strcmp(argv[i], "--rounds")) rounds = value();
    else if (!std::strcmp(argv[i], "--runtime-only")) fuse = false;
    else paths.push_back(argv[i]);
  }
  if (paths.size() < 2 || size < 16 || size % 16 || text_rows < 1 || rounds < 1) {
    std::fprintf(stderr, "usage: lora_bench DIT.safetensors LORA.safetensors... [--size 512] [--text-rows 64] [--rounds 2] "
                         "[--runtime-only]\n");
    return 2;
  }
  try {
    const dit::ChromaModel base(io::WeightStore::open(paths[0]));
    std::vector<io::LoraFile> loras;
    for (size_t i = 1; i < paths.size(); ++i) loras.push_back(io::LoraFile::open(paths[i]));

    std::mt19937 rng(42);
    const Tensor latent = random_tensor({1, base.config().latent_channels(), size / 8, size / 8}, rng);
    const Tensor pos = random_tensor({text_rows, base.config().context_dim}, rng);
    const Tensor neg = random_tensor({text_rows, base.config().context_dim}, rng);
    auto step = [&](const dit::ChromaModel& model) {
      const Clock::time_point start = Clock::now();
      const Tensor mods = model.modulations(0.5f);
      model.forward_packed(latent, {{pos}, {neg}}, mods);
      return seconds_since(start);
    };
    std::printf("lora_bench: %s, %dx%d (%d image tokens), %d text rows per sequence, packed pos + neg\n",
                paths[0].c_str(), size, size, (size / 16) * (size / 16), text_rows);

    // Every weight page read once before timing: a forward on a 2×2 latent and one text row each
    // touches all of the base's and each LoRA's weights at almost no compute.
    dit::ChromaModel model = base;
    const Tensor tiny = random_tensor({1, base.config().latent_channels(), 2, 2}, rng);
    for (size_t i = 0; i <= loras.size(); ++i) {
      std::vector<dit::LoraSetting> set;
      if (i > 0) set.push_back({loras[i - 1], 1.0f});
      model.set_loras(set, dit::LoraMode::Runtime);
      model.forward(tiny, pos.rows(0, 1), model.modulations(0.5f));
    }

    // Runtime: base, then each LoRA, per round.
    std::vector<std::vector<double>> times(loras.size() + 1), cpu(loras.size() + 1);
    for (int round = 0; round < rounds; ++round)
      for (size_t i = 0; i <= loras.size(); ++i) {
        std::vector<dit::LoraSetting> set;
        if (i > 0) set.push_back({loras[i - 1], 1.0f});
        model.set_loras(set, dit::LoraMode::Runtime);
        const long faults = major_faults();
        const double cpu0 = cpu_seconds();
        times[i].push_back(step(model));
        cpu[i].push_back(cpu_seconds() - cpu0);
        std::printf("  round %d %-40s %8.2f s wall %8.2f s CPU  (%ld major page faults)\n", round + 1,
                    i ? paths[i].c_str() : "base", times[i].back(), cpu[i].back(), major_faults() - faults);
        std::fflush(stdout);
      }
    for (const auto& [what, t] : {std::pair{"wall", &times}, {"CPU", &cpu}}) {
      std::printf("runtime LoRA, step %s time per round relative to the base step of the same round:\n", what);
      for (size_t i = 1; i <= loras.size(); ++i) {
        std::printf("  %-40s", paths[i].c_str());
        for (int round = 0; round < rounds; ++round)
          std::printf("  %+.1f %%", 100.0 * ((*t)[i][size_t(round)] / (*t)[0][size_t(round)] - 1.0));
        std::printf("\n");
      }
    }

    // Fuse: set_loras time, peak memory, one forward.
    for (size_t i = 0; fuse && i < loras.size(); ++i) {
      dit::ChromaModel fused = base;
      const std::vector<dit::LoraSetting> set = {{loras[i], 1.0f}};
      const Clock::time_point start = Clock::now();
      fused.set_loras(set, dit::LoraMode::Fuse);
      const double fuse_seconds = seconds_since(start);
      std::printf("fuse %-40s %8.2f s to fuse, peak RSS %.2f GiB; ", paths[i + 1].c_str(), fuse_seconds, peak_rss_gib());
      std::fflush(stdout);
      std::printf("fused step %8.2f s (base %.2f s)\n", step(fused), *std::min_element(times[0].begin(), times[0].end()));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lora_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

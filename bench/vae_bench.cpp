// Tiled against whole-image VAE decoding (docs/PERFORMANCE.md): decode time and peak resident memory
// of one mode per process (the peak of a process only grows), and with "compare" both decodes of the
// same latent and their difference. Not a test.
//   cmake --build build --target vae_bench
//   ./build/vae_bench AE.safetensors SIZE whole|tiled|compare
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "models/vae/tiled.h"
#include "models/vae/vae.h"
#include "peak_rss.h"
#include "sampling/rng.h"

using namespace chroma;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 4 || std::atoi(argv[2]) < 8 || std::atoi(argv[2]) % 8) {
    std::fprintf(stderr, "usage: vae_bench AE.safetensors SIZE(multiple of 8) whole|tiled|compare\n");
    return 2;
  }
  const int size = std::atoi(argv[2]);
  const std::string mode = argv[3];
  try {
    const io::WeightStore weights = io::WeightStore::open(argv[1]);
    const vae::Decoder decoder(weights);
    // A latent as the sampler leaves it: unit-variance values (PyTorch's randn for seed 1).
    const Tensor latent = sampling::torch_randn(1, {1, decoder.config().z_channels, size / 8, size / 8});
    const vae::Tiling tiling;  // the pipeline's: 64 latent pixels, overlap 8
    auto run = [&](bool tiled, Tensor& out) {
      const Clock::time_point start = Clock::now();
      out = tiled ? vae::decode_tiled([&](const Tensor& z) { return decoder.decode(z); }, latent, tiling)
                  : decoder.decode(latent);
      return std::chrono::duration<double>(Clock::now() - start).count();
    };
    Tensor whole, tiled;
    // The decode first, then the peak it left (one statement would read the peak before decoding).
    if (mode == "whole" || mode == "compare") {
      const double seconds = run(false, whole);
      std::printf("%d² whole: %.1f s, peak RSS %.2f GiB\n", size, seconds, peak_rss_gib());
    }
    if (mode == "tiled" || mode == "compare") {
      const double seconds = run(true, tiled);
      std::printf("%d² tiled (512 px, overlap 64): %.1f s, peak RSS %.2f GiB\n", size, seconds, peak_rss_gib());
    }
    if (mode == "compare") {
      double worst = 0, sum = 0, range = 0, clamped_worst = 0;
      size_t worst_at = 0, off_by_more_than_one = 0;
      for (size_t i = 0; i < whole.values().size(); ++i) {
        const double a = whole.values()[i], b = tiled.values()[i];
        if (std::abs(a - b) > worst) worst = std::abs(a - b), worst_at = i;
        // The 8-bit values (pipeline to_rgb8: trunc(127.5·(x + 1)) of the clamped value) more than 1 apart.
        auto u8 = [](double x) { return int(127.5 * (std::clamp(x, -1.0, 1.0) + 1.0)); };
        off_by_more_than_one += std::abs(u8(a) - u8(b)) > 1;
        sum += std::abs(a - b);
        range = std::max(range, std::abs(a));
        // What reaches the 8-bit image: both clamped to [−1, 1].
        clamped_worst = std::max(clamped_worst, std::abs(std::clamp(a, -1.0, 1.0) - std::clamp(b, -1.0, 1.0)));
      }
      std::printf("tiled vs whole: max abs %.4g, mean abs %.4g (whole max |x| %.3g); clamped to [-1, 1]: max abs %.4g "
                  "(%.1f of 255 levels)\n",
                  worst, sum / double(whole.values().size()), range, clamped_worst, clamped_worst * 127.5);
      const size_t plane = size_t(size) * size_t(size);
      std::printf("worst at x %zu, y %zu; 8-bit values more than 1 level apart: %.3f %%\n", worst_at % plane % size_t(size),
                  worst_at % plane / size_t(size), 100.0 * double(off_by_more_than_one) / double(whole.values().size()));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vae_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

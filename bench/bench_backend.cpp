// Quick timings of the main CPU kernels (not a test). Build after building chroma_backend:
//   g++ -O2 -std=c++20 -fopenmp -I src bench/bench_backend.cpp build-<you>/libchroma_backend.a \
//       build-<you>/libchroma_core.a -lopenblas -o /tmp/bench_backend && /tmp/bench_backend [threads]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>

#include "backend/backend.h"

using namespace chroma;

namespace {

Tensor random_tensor(Shape s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  Tensor t(std::move(s));
  for (float& v : t.values()) v = u(rng);
  return t;
}

// Best of `reps` runs, in GFLOP/s for `flops` floating-point operations per run.
void report(const char* what, double flops, int reps, const std::function<void()>& run) {
  run();  // warm-up
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("%-44s %8.1f ms  %7.1f GFLOP/s\n", what, best * 1e3, flops / best * 1e-9);
}

}  // namespace

int main(int argc, char** argv) {
  active_backend().set_threads(argc > 1 ? std::atoi(argv[1]) : 0);
  std::printf("threads: %d\n", active_backend().threads());
  const std::string which = argc > 2 ? argv[2] : "all";

  if (which == "all" || which == "linear") {
    const int64_t M = 1024, K = 3072, N = 3072;
    std::vector<uint16_t> wb(size_t(N * K));
    std::mt19937 rng(1);
    for (auto& h : wb) h = f32_to_bf16(std::uniform_real_distribution<float>(-1, 1)(rng));
    TensorView w{"w", "", DType::BF16, {N, K}, wb.data(), wb.size() * 2};
    Tensor x = random_tensor({M, K}, 2);
    report("linear bf16 M1024 K3072 N3072", 2.0 * M * N * K, 3, [&] { ops::linear(x, w); });
    Tensor wf = w.to_f32();
    TensorView w32 = view_of(wf, "w32");
    report("linear f32  M1024 K3072 N3072", 2.0 * M * N * K, 3, [&] { ops::linear(x, w32); });
    Tensor x1 = random_tensor({1, K}, 3);
    report("linear bf16 M1 (GEMV)", 2.0 * N * K, 10, [&] { ops::linear(x1, w); });
  }
  if (which == "all" || which == "attention") {
    const int64_t L = 1024, H = 24, D = 128;
    Tensor q = random_tensor({L, H * D}, 4), k = random_tensor({L, H * D}, 5), v = random_tensor({L, H * D}, 6);
    std::vector<int64_t> lens = {L};
    report("attention L1024 H24 D128", 4.0 * L * L * D * H, 2, [&] { ops::attention(q, k, v, int(H), lens, 0.088f); });
    const int64_t Lv = 4096, Dv = 512;
    Tensor qv = random_tensor({Lv, Dv}, 7), kv = random_tensor({Lv, Dv}, 8), vv = random_tensor({Lv, Dv}, 9);
    std::vector<int64_t> lv = {Lv};
    report("attention L4096 H1 D512", 4.0 * Lv * Lv * Dv, 1, [&] { ops::attention(qv, kv, vv, 1, lv, 0.044f); });
  }
  if (which == "all" || which == "conv") {
    const int64_t C = 128, S = 256;
    Tensor x = random_tensor({C, S, S}, 10), wt = random_tensor({C, C, 3, 3}, 11);
    TensorView w = view_of(wt, "conv");
    report("conv2d 128->128 3x3 256x256", 2.0 * C * C * 9 * S * S, 2,
           [&] { ops::conv2d(x, w, {}, 1, {1, 1, 1, 1}); });
    Tensor gw = random_tensor({C}, 12);
    report("group_norm 128x256x256 G32", 0, 2, [&] { ops::group_norm(x, 32, view_of(gw), view_of(gw), 1e-6f); });
  }
  if (which == "all" || which == "elementwise") {
    Tensor x = random_tensor({4096, 12288}, 13);
    report("gelu_tanh 4096x12288", 0, 2, [&] { ops::gelu_tanh(x); });
    report("silu 4096x12288", 0, 2, [&] { ops::silu(x); });
    Tensor h = random_tensor({4096, 3072}, 14), sh = random_tensor({3072}, 15);
    report("layer_norm 4096x3072", 0, 2, [&] { ops::layer_norm(h, 1e-6f); });
    report("modulate 4096x3072", 0, 2, [&] { ops::modulate(h, sh, sh); });
  }
  return 0;
}

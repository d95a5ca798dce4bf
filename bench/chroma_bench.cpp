// Google Benchmark micro-suite of the CPU kernels at the model's shapes (docs/PERFORMANCE.md).
//   cmake --build build --target chroma_bench && ./build/chroma_bench --benchmark_filter=GEMM/bf16
// Threads: CHROMA_THREADS (default: all cores). Counters: FLOP (useful work per wall second, shown as
// e.g. "140G/s") or bytes (float32 bytes read + written per second); CPU% (process CPU time / wall
// time: on a shared machine, how many cores the run actually got; 200 = both of 2 cores); and
// FLOP_per_core / bytes_per_core (the work per CPU-second, the figure to compare between runs).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "pipeline/heap.h"
#include "tensor/quant.h"

namespace chroma {
namespace {

// Uniform values in [lo, hi) from a fast LCG (the weights are hundreds of millions of values).
Tensor random_tensor(Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(std::move(shape));
  uint64_t s = 0x9E3779B97F4A7C15ull * (seed + 1);
  for (float& v : t.values()) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    v = lo + (hi - lo) * float(s >> 40) * (1.0f / 16777216.0f);
  }
  return t;
}

// A weight [N, K] stored in `dtype` (bf16, f32, or a GGUF block type), built once per shape.
struct StoredWeight {
  std::vector<uint8_t> bytes;
  TensorView view;
};

const TensorView& weight(DType dtype, int64_t N, int64_t K) {
  static std::map<std::tuple<DType, int64_t, int64_t>, std::unique_ptr<StoredWeight>> cache;
  auto& slot = cache[{dtype, N, K}];
  if (!slot) {
    slot = std::make_unique<StoredWeight>();
    const Tensor w = random_tensor({N, K}, uint32_t(N + K), -0.05f, 0.05f);
    slot->bytes.resize(size_t(N) * dtype_row_bytes(dtype, K));
    if (dtype == DType::F32) {
      std::memcpy(slot->bytes.data(), w.ptr(), slot->bytes.size());
    } else if (dtype == DType::BF16) {
      auto* o = reinterpret_cast<uint16_t*>(slot->bytes.data());
      for (size_t i = 0; i < w.values().size(); ++i) o[i] = f32_to_bf16(w.values()[i]);
    } else {
      quant::traits(dtype)->quantize(w.ptr(), slot->bytes.data(), N * K);
    }
    TensorView& v = slot->view;
    v.name = std::string("w");  // (assigning the literal trips GCC 12's false -Wrestrict, PR 105329)
    v.dtype = dtype;
    v.shape = {N, K};
    v.values() = slot->bytes.data();
    v.nbytes = slot->bytes.size();
  }
  return slot->view;
}

// Runs `body` for the benchmark's iterations and sets the throughput counters: `flops` (or `bytes`)
// of work per iteration, and the CPU share of the run.
template <class Body>
void measure(benchmark::State& state, double flops, double bytes, Body&& body) {
  const std::clock_t c0 = std::clock();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) body();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  using benchmark::Counter;
  // Printed with SI prefixes as rates: "FLOP=140G/s", "bytes=6.3G/s".
  if (flops > 0) state.counters["FLOP"] = Counter(flops, Counter::kIsIterationInvariantRate);
  if (bytes > 0) state.counters["bytes"] = Counter(bytes, Counter::kIsIterationInvariantRate);
  state.counters["CPU%"] = wall > 0 ? 100.0 * cpu / wall : 0.0;
  // The same work per CPU-second ("per busy core"): robust to the share of the cores a shared
  // machine gives the run, so compare this one between runs.
  const double iters = double(state.iterations());
  if (cpu > 0 && flops > 0) state.counters["FLOP_per_core"] = flops * iters / cpu;
  if (cpu > 0 && bytes > 0) state.counters["bytes_per_core"] = bytes * iters / cpu;
}

// ---- GEMM: ops::linear at the DiT's shapes ----------------------------------------------------
// Args: M (tokens: 272 = 256² with a short prompt ×2 CFG-packed; 1024 = 512²; 4160 = 1024² + text),
// K, N: qkv 3072→9216, fc1 / mlp_in 3072→12288, fc2 12288→3072, single-block linear2 15360→3072.
void BM_GEMM(benchmark::State& state, DType dtype) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const TensorView& w = weight(dtype, N, K);
  const Tensor x = random_tensor({M, K}, 1);
  measure(state, 2.0 * double(M) * double(N) * double(K), 0, [&] { benchmark::DoNotOptimize(ops::linear(x, w)); });
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t M : {272, 1024, 4160})
    for (auto [K, N] : {std::pair<int64_t, int64_t>{3072, 9216}, {3072, 12288}, {12288, 3072}, {15360, 3072}})
      b->Args({M, K, N});
  b->ArgNames({"M", "K", "N"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_GEMM, bf16, DType::BF16)->Apply(gemm_shapes);

// The same bf16 weights in bf16 compute (--compute bf16: oneDNN, vdpbf16ps); skipped on CPUs without it.
void BM_GEMMBf16Compute(benchmark::State& state) {
  try {
    check_compute_supported(Compute::Bf16);
  } catch (const Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  const std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Bf16);
  const BackendScope scope(*backend, active_backend().threads());
  BM_GEMM(state, DType::BF16);
}
BENCHMARK(BM_GEMMBf16Compute)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GEMM, f32, DType::F32)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GEMM, q8_0, DType::Q8_0)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GEMM, q4_k, DType::Q4_K)->Apply(gemm_shapes);

// Block-quantized weights in int8 compute (--compute int8 / auto: linear_int8.cpp). "FLOP" counts
// 2·M·N·K integer-and-scale operations, the same work as the float paths.
void BM_GEMMInt8Compute(benchmark::State& state, DType dtype) {
  try {
    check_compute_supported(Compute::Int8);
  } catch (const Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  const std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Int8);
  const BackendScope scope(*backend, active_backend().threads());
  state.SetLabel(cpu::int8_kernel_name());
  BM_GEMM(state, dtype);
}
BENCHMARK_CAPTURE(BM_GEMMInt8Compute, q8_0, DType::Q8_0)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GEMMInt8Compute, q4_k, DType::Q4_K)->Apply(gemm_shapes);
BENCHMARK_CAPTURE(BM_GEMMInt8Compute, q6_k, DType::Q6_K)->Apply(gemm_shapes);

// ---- Runtime LoRA: W·x plus B·(A·x) accumulated into the same output (ops::ExtraProduct) --------
// Args: M (2176 = 512² CFG-packed: 2 × (1024 image + 64 text) rows), K, N, rank r (0: the plain
// linear). FLOP counts the base product only, so the rate drop against r = 0 is LoRA's cost.
void BM_LinearLora(benchmark::State& state) {
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2), r = state.range(3);
  const TensorView& w = weight(DType::BF16, N, K);
  const Tensor x = random_tensor({M, K}, 1);
  measure(state, 2.0 * double(M) * double(N) * double(K), 0, [&] {
    if (r == 0) {
      benchmark::DoNotOptimize(ops::linear(x, w));
      return;
    }
    const Tensor ax = ops::linear(x, weight(DType::BF16, r, K));
    const ops::ExtraProduct extra[] = {{&ax, weight(DType::BF16, N, r)}};
    benchmark::DoNotOptimize(ops::linear(x, w, {}, extra));
  });
}
void lora_shapes(benchmark::internal::Benchmark* b) {
  for (auto [K, N] : {std::pair<int64_t, int64_t>{3072, 3072}, {3072, 12288}, {12288, 3072}})
    for (int64_t r : {0, 16, 64}) b->Args({2176, K, N, r});
  b->ArgNames({"M", "K", "N", "r"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK(BM_LinearLora)->Apply(lora_shapes);

// ---- Single-block linear2: concat_cols + linear vs linear_concat --------------------------------
// [M, 3072] attention ++ [M, 12288] MLP → [M, 3072], bf16 weight. Arg: M.
void BM_Linear2(benchmark::State& state, bool fused) {
  const int64_t M = state.range(0), C = 3072, H = 12288;
  const TensorView& w = weight(DType::BF16, C, C + H);
  const Tensor a = random_tensor({M, C}, 2), b = random_tensor({M, H}, 3);
  measure(state, 2.0 * double(M) * double(C) * double(C + H), 0, [&] {
    benchmark::DoNotOptimize(fused ? ops::linear_concat(a, b, w) : ops::linear(ops::concat_cols(a, b), w));
  });
}
BENCHMARK_CAPTURE(BM_Linear2, concat_then_linear, false)->Arg(272)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Linear2, linear_concat, true)->Arg(272)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- Attention -----------------------------------------------------------------------------------
// Args: L (one sequence), heads, head dim. DiT: 24 × 128 at L = 1024 (512²) and 4160 (1024² + text);
// VAE mid-block: 1 × 512 at L = 4096 (64² latent of a 512² image) and 16384 (128², 1024²).
void BM_Attention(benchmark::State& state) {
  const int64_t L = state.range(0), H = state.range(1), D = state.range(2);
  const Tensor q = random_tensor({L, H * D}, 4), k = random_tensor({L, H * D}, 5), v = random_tensor({L, H * D}, 6);
  const std::vector<int64_t> lens = {L};
  measure(state, 4.0 * double(L) * double(L) * double(D) * double(H), 0, [&] {
    benchmark::DoNotOptimize(ops::attention(q, k, v, int(H), lens, 1.0f / std::sqrt(float(D))));
  });
}
BENCHMARK(BM_Attention)
    ->Args({1024, 24, 128})
    ->Args({4160, 24, 128})
    ->Args({4096, 1, 512})
    ->Args({16384, 1, 512})
    ->ArgNames({"L", "H", "D"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// ---- VAE convolution ----------------------------------------------------------------------------
// Args: channels in, channels out, side. The decoder's 3×3 convs: 128 ch at 256² (level 0 of a 256²
// image), 256 ch at 128², 512 ch at 64² (mid blocks of a 512² image), and conv_out 128 → 3 at 512².
// Three algorithms on the same shapes: ops::conv2d (3×3 stride 1 padding 1 runs as Winograd
// F(4×4, 3×3)), the im2col + sgemm path (the input pre-padded, so conv2d sees a padding-free conv
// and does not take the Winograd path), and Winograd F(2×2, 3×3) called directly. FLOP is the direct
// conv's useful 2·O·C·9·H·W for all three, so the rates compare time for the same result.
enum class ConvAlgo { Conv2d, Im2col, WinogradF2 };

Tensor pad1(const Tensor& x) {
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
  Tensor p({C, H + 2, W + 2});
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(p.ptr() + (c * (H + 2) + h + 1) * (W + 2) + 1, x.ptr() + (c * H + h) * W, size_t(W) * 4);
  return p;
}

void BM_Conv2d(benchmark::State& state, ConvAlgo algo) {
  const int64_t C = state.range(0), O = state.range(1), S = state.range(2);
  const Tensor x = random_tensor({C, S, S}, 7), wt = random_tensor({O, C, 3, 3}, 8, -0.05f, 0.05f);
  const Tensor bt = random_tensor({O}, 9), xp = algo == ConvAlgo::Im2col ? pad1(x) : Tensor();
  const TensorView w = view_of(wt, "conv"), b = view_of(bt, "bias");
  measure(state, 2.0 * double(O * C * 9) * double(S * S), 0, [&] {
    switch (algo) {
      case ConvAlgo::Conv2d: benchmark::DoNotOptimize(ops::conv2d(x, w, b, 1, {1, 1, 1, 1})); break;
      case ConvAlgo::Im2col: benchmark::DoNotOptimize(ops::conv2d(xp, w, b, 1, {})); break;
      case ConvAlgo::WinogradF2: benchmark::DoNotOptimize(cpu::conv3x3_winograd(x, wt, bt.ptr(), 2)); break;
    }
  });
}

void conv_shapes(benchmark::internal::Benchmark* b) {
  b->Args({128, 128, 256})->Args({256, 256, 128})->Args({512, 512, 64})->Args({128, 3, 512});
  b->ArgNames({"C", "O", "S"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK_CAPTURE(BM_Conv2d, conv2d, ConvAlgo::Conv2d)->Apply(conv_shapes);
BENCHMARK_CAPTURE(BM_Conv2d, im2col, ConvAlgo::Im2col)->Apply(conv_shapes);
BENCHMARK_CAPTURE(BM_Conv2d, winograd_f2, ConvAlgo::WinogradF2)->Apply(conv_shapes);

// ---- Elementwise --------------------------------------------------------------------------------
// gelu_tanh on the DiT's MLP activations [M, 12288] (in place: each iteration re-applies it, which
// costs the same: the kernel is branch-free). Arg: M.
void BM_GeluTanh(benchmark::State& state) {
  Tensor x = random_tensor({state.range(0), 12288}, 9, -6, 6);
  measure(state, 0, 8.0 * double(x.numel()), [&] { x = ops::gelu_tanh(std::move(x)); });
}
BENCHMARK(BM_GeluTanh)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

// Norms at the model's shapes (bytes: the input read and the output written once). Args: rows, width.
// layer_norm [4160, 3072] (DiT, 1024²); rms_norm [4160·24, 128] (QK-norm per head).
void BM_LayerNorm(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), state.range(1)}, 10);
  measure(state, 0, 8.0 * double(x.numel()), [&] { benchmark::DoNotOptimize(ops::layer_norm(x, 1e-6f)); });
}
BENCHMARK(BM_LayerNorm)->Args({4160, 3072})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RmsNorm(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), state.range(1)}, 11), scale = random_tensor({state.range(1)}, 12);
  measure(state, 0, 8.0 * double(x.numel()),
          [&] { benchmark::DoNotOptimize(ops::rms_norm(x, view_of(scale, "scale"), 1e-6f)); });
}
BENCHMARK(BM_RmsNorm)->Args({4160 * 24, 128})->Unit(benchmark::kMillisecond)->UseRealTime();

// The DiT's pre-attention and pre-MLP norm: the fused layer_norm_modulate against layer_norm then
// modulate (two new tensors, as before the fusion). bytes: one read of x and one write of the
// result for both, so the rates compare time for the same result. Args: rows, width
// (2100 ≈ 2 × 1024 image tokens of a 512² image, CFG-packed, plus their text; 3072 = C).
void BM_LayerNormModulate(benchmark::State& state, bool fused) {
  const int64_t L = state.range(0), C = state.range(1);
  const Tensor x = random_tensor({L, C}, 10), shift = random_tensor({C}, 15), scale = random_tensor({C}, 16);
  measure(state, 0, 8.0 * double(x.numel()), [&] {
    if (fused)
      benchmark::DoNotOptimize(ops::layer_norm_modulate(x, shift, scale, 1e-6f));
    else
      benchmark::DoNotOptimize(ops::modulate(ops::layer_norm(x, 1e-6f), shift, scale));
  });
}
void norm_modulate_shapes(benchmark::internal::Benchmark* b) {
  b->Args({2100, 3072})->ArgNames({"L", "C"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK_CAPTURE(BM_LayerNormModulate, fused, true)->Apply(norm_modulate_shapes);
BENCHMARK_CAPTURE(BM_LayerNormModulate, separate, false)->Apply(norm_modulate_shapes);

// QK-norm then RoPE on Q (or K) [L, H·D]: the fused rms_norm_rope in place, against rms_norm per head
// (a new tensor) then rope in place, as before the fusion. Each iteration renormalises the previous
// result (the same cost: the kernels are branch-free). bytes: one read and one write of x, plus the
// table, for both. Args: L, H, D.
void BM_RmsNormRope(benchmark::State& state, bool fused) {
  const int64_t L = state.range(0), H = state.range(1), D = state.range(2);
  Tensor x = random_tensor({L, H * D}, 11);
  const Tensor s = random_tensor({D}, 12, 0.5f, 1.5f), theta = random_tensor({L, D / 2}, 17, -3, 3);
  Tensor table({L, D / 2, 2});
  for (int64_t i = 0; i < L * D / 2; ++i) {
    table.values()[size_t(2 * i)] = std::cos(theta.values()[size_t(i)]);
    table.values()[size_t(2 * i + 1)] = std::sin(theta.values()[size_t(i)]);
  }
  const TensorView scale = view_of(s, "query_norm.scale");
  measure(state, 0, 4.0 * double(2 * x.numel() + table.numel()), [&] {
    if (fused) {
      ops::rms_norm_rope(x, scale, 1e-6f, int(H), table);
    } else {
      x.reshape({L * H, D});  // [L, (H D)] is [L·H, D] row-major (no copy, as the model did)
      x = ops::rms_norm(x, scale, 1e-6f);
      x.reshape({L, H * D});
      ops::rope(x, int(H), table);
    }
  });
}
void norm_rope_shapes(benchmark::internal::Benchmark* b) {
  b->Args({2100, 24, 128})->ArgNames({"L", "H", "D"})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK_CAPTURE(BM_RmsNormRope, fused, true)->Apply(norm_rope_shapes);
BENCHMARK_CAPTURE(BM_RmsNormRope, separate, false)->Apply(norm_rope_shapes);

// group_norm of a VAE image [C, S, S], 32 groups. Args: C, S.
void BM_GroupNorm(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), state.range(1), state.range(1)}, 13);
  const Tensor g = random_tensor({state.range(0)}, 14);
  measure(state, 0, 8.0 * double(x.numel()),
          [&] { benchmark::DoNotOptimize(ops::group_norm(x, 32, view_of(g, "gamma"), view_of(g, "beta"), 1e-6f)); });
}
BENCHMARK(BM_GroupNorm)->Args({128, 256})->Unit(benchmark::kMillisecond)->UseRealTime();

// GroupNorm → SiLU as in the VAE's resnet blocks: the fused op, in place on its input (as the VAE
// calls it on a tensor it no longer needs; each iteration renormalises the previous result, which
// costs the same), against group_norm then silu (a new image, as before the fusion).
// bytes: one read of x and one write of y for both. Args: C, S.
void BM_GroupNormSilu(benchmark::State& state, bool fused) {
  Tensor x = random_tensor({state.range(0), state.range(1), state.range(1)}, 13);
  const Tensor g = random_tensor({state.range(0)}, 14);
  const TensorView w = view_of(g, "gamma"), b = view_of(g, "beta");
  measure(state, 0, 8.0 * double(x.numel()), [&] {
    if (fused)
      x = ops::group_norm_silu(std::move(x), 32, w, b, 1e-6f);
    else
      benchmark::DoNotOptimize(ops::silu(ops::group_norm(x, 32, w, b, 1e-6f)));
  });
}
void norm_silu_shapes(benchmark::internal::Benchmark* b) {
  b->Args({128, 256})->Args({512, 64})->Unit(benchmark::kMillisecond)->UseRealTime();
}
BENCHMARK_CAPTURE(BM_GroupNormSilu, fused, true)->Apply(norm_silu_shapes);
BENCHMARK_CAPTURE(BM_GroupNormSilu, separate, false)->Apply(norm_silu_shapes);

}  // namespace
}  // namespace chroma

int main(int argc, char** argv) {
  // The heap policy runs use (pipeline/heap.h): without it each fresh output of 32+ MiB is a new
  // mapping, page-faulted and zeroed on every call, which the products' timings would include.
  chroma::pipeline::reuse_freed_activations();
  const char* threads = std::getenv("CHROMA_THREADS");
  chroma::active_backend().set_threads(threads ? std::atoi(threads) : 0);
  benchmark::AddCustomContext("threads", std::to_string(chroma::active_backend().threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

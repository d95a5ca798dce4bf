// Elementwise ops, broadcasts and nearest upsampling (RoPE is in norm.cpp, with the QK-norm).
#include <algorithm>
#include <cmath>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec_math.h"

namespace chroma::cpu {
namespace {

// Checks x is [L, C] and v holds C values (a row to broadcast).
void require_row(const char* op, const Tensor& x, const Tensor& v, const char* what) {
  if (x.rank() < 1) throw Error(std::string(op) + ": input must have at least one dimension");
  if (v.numel() != x.dim(-1))
    throw Error(std::string(op) + ": " + what + " has shape " + shape_str(v.shape) + ", expected " +
                std::to_string(x.dim(-1)) + " values for input " + shape_str(x.shape));
}

}  // namespace

Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  require_row("modulate", x, shift, "shift");
  require_row("modulate", x, scale, "scale");
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y(x.shape);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.ptr() + r * C;
    float* yr = y.ptr() + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = (1.0f + scale.ptr()[c]) * xr[c] + shift.ptr()[c];
  }
  return y;
}

void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) {
  require_row("add_gated", x, gate, "gate");
  if (x.shape != y.shape)
    throw Error("add_gated: shapes differ: " + shape_str(x.shape) + " vs " + shape_str(y.shape));
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x.ptr() + r * C;
    const float* yr = y.ptr() + r * C;
    for (int64_t c = 0; c < C; ++c) xr[c] += gate.ptr()[c] * yr[c];
  }
}

void add(Tensor& x, const Tensor& y) {
  if (x.shape != y.shape) throw Error("add: shapes differ: " + shape_str(x.shape) + " vs " + shape_str(y.shape));
  const int64_t n = x.numel();
  float* xp = x.ptr();
  const float* yp = y.ptr();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) xp[i] += yp[i];
}

void mul(Tensor& x, const Tensor& y) {
  if (x.shape != y.shape) throw Error("mul: shapes differ: " + shape_str(x.shape) + " vs " + shape_str(y.shape));
  const int64_t n = x.numel();
  float* xp = x.ptr();
  const float* yp = y.ptr();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) xp[i] *= yp[i];
}

namespace {

// 0.5·x·(1 + tanh(u)) over a span, u = √(2/π)·(x + 0.044715·x³). With tanh(u) = 1 − 2/(1 + e^{2u})
// this is x·e^{2u}/(1 + e^{2u}) = x / (1 + e^{−2u}): the same value without the cancellation of
// 1 + tanh(u) for negative x, and one exp and one division per value instead of a libm tanh call,
// so the loop vectorises. x is clamped to ≥ −10, which bounds the exp argument by 87.3 (e^{−2u}
// stays finite) and keeps x / e^{−2u} tiny: gelu(x) for x ≤ −10 is below 2e-37 in magnitude, and so
// is the −1.6e-37 returned there. NaN stays NaN (std::max keeps its first argument).
// Compiled for AVX-512, AVX2 and baseline x86-64 (chosen at load time), like silu_span.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void gelu_tanh_span(float* p, int64_t n) {
  constexpr float kTwoSqrt2OverPi = 1.5957691216057308f;  // 2·√(2/π)
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::max(p[i], -10.0f);
    p[i] = v / (1.0f + exp_f32(-kTwoSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

}  // namespace

void gelu_tanh(Tensor& x) {
  constexpr int64_t kChunk = 16384;  // values per OpenMP task
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kChunk) gelu_tanh_span(x.ptr() + i, std::min(kChunk, n - i));
}

namespace {

// x · sigmoid(x) = x / (1 + e^−x) over a span; compiled for AVX-512, AVX2 and baseline x86-64
// (chosen at load time): convolutional decoders apply it to hundreds of millions of values.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void silu_span(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] / (1.0f + exp_f32(-p[i]));
}

}  // namespace

void silu(Tensor& x) {
  constexpr int64_t kChunk = 16384;  // values per OpenMP task
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += kChunk) silu_span(x.ptr() + i, std::min(kChunk, n - i));
}

Tensor upsample_nearest2x(const Tensor& x) {
  if (x.rank() != 3) throw Error("upsample_nearest2x: input must be an image [C, H, W], got " + shape_str(x.shape));
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
  Tensor y({C, 2 * H, 2 * W});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H; ++i) {
      const float* xr = x.ptr() + (c * H + i) * W;
      float* y0 = y.ptr() + (c * 2 * H + 2 * i) * 2 * W;
      for (int64_t j = 0; j < W; ++j) y0[2 * j] = y0[2 * j + 1] = xr[j];
      std::copy_n(y0, 2 * W, y0 + 2 * W);  // the second output row repeats the first
    }
  return y;
}

Tensor downsample_nearest2x(const Tensor& x) {
  if (x.rank() != 3 || x.dim(1) % 2 || x.dim(2) % 2)
    throw Error("downsample_nearest2x: input must be an image [C, H, W] with H and W even, got " + shape_str(x.shape));
  const int64_t C = x.dim(0), H = x.dim(1) / 2, W = x.dim(2) / 2;
  Tensor y({C, H, W});
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < H; ++i) {
      const float* xr = x.ptr() + (c * 2 * H + 2 * i) * 2 * W;
      float* yr = y.ptr() + (c * H + i) * W;
      for (int64_t j = 0; j < W; ++j) yr[j] = xr[2 * j];
    }
  return y;
}

}  // namespace chroma::cpu

// Normalisations. Statistics are accumulated in double: rows are a few thousand values, but a
// group of GroupNorm on a large image holds millions, where float32 sums would drift. The sums are
// `omp simd` reductions: several partial sums in vector lanes instead of one serial chain of
// dependent double additions (which ran at ~2–3 GB/s), still in double.
#include <algorithm>
#include <cmath>

#include "backend/cpu/kernels.h"
#include "backend/cpu/vec_math.h"

namespace chroma::cpu {
namespace {

void require_vector(const char* op, const TensorView& v, int64_t n, const char* what) {
  check_float_view(op, v);
  if (v.numel() != n)
    throw Error(std::string(op) + ": " + what + " " + describe(v) + " has shape " + shape_str(v.shape) +
                ", expected " + std::to_string(n) + " values");
}

}  // namespace

Tensor layer_norm(const Tensor& x, float eps) {
  if (x.rank() < 1) throw Error("layer_norm: input must have at least one dimension");
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y(x.shape);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.ptr() + r * C;
    float* yr = y.ptr() + r * C;
    double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const double mean = sum / double(C);
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
    const float inv = float(1.0 / std::sqrt(sq / double(C) + eps));  // biased variance, like PyTorch
    const float m = float(mean);
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * inv;
  }
  return y;
}

Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps) {
  if (x.rank() < 1) throw Error("rms_norm: input must have at least one dimension");
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  require_vector("rms_norm", scale, C, "scale");
  const Tensor s = widen(scale);
  Tensor y(x.shape);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.ptr() + r * C;
    float* yr = y.ptr() + r * C;
    double sq = 0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) sq += double(xr[c]) * xr[c];
    const float inv = float(1.0 / std::sqrt(sq / double(C) + eps));
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * s.data[size_t(c)];
  }
  return y;
}

namespace {

// Σ (x − k) and Σ (x − k)² over a span, in double, with k a value of the span: shifted by a
// representative value, the single-pass variance S₂/n − (S₁/n)² does not cancel digits even when
// the mean is large beside the spread. Compiled for AVX-512, AVX2 and baseline x86-64.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void shifted_sums(const float* x, int64_t n, double k, double& s1, double& s2) {
  double a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - k;
    a += d;
    b += d * d;
  }
  s1 += a;
  s2 += b;
}

// y = (x − mean)·scale + shift, then SiLU y / (1 + e^−y) if asked; y may be x (in place). Centred
// in double: with a large mean, folding it into a float32 shift would cancel digits.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void normalize_span(const float* x, float* y, int64_t n, double mean, double scale, float shift, bool silu) {
  if (silu) {
#pragma GCC ivdep  // y is x or disjoint from it: no run-time overlap check (and no scalar fallback)
    for (int64_t i = 0; i < n; ++i) {
      const float v = float((x[i] - mean) * scale) + shift;
      y[i] = v / (1.0f + exp_f32(-v));
    }
  } else {
#pragma GCC ivdep
    for (int64_t i = 0; i < n; ++i) y[i] = float((x[i] - mean) * scale) + shift;
  }
}

// y = group_norm(x), followed by SiLU when `silu`: one pass over each group for its statistics, one
// writing the result. y has x's shape and may be x.
void group_norm_into(const char* op, const Tensor& x, Tensor& y, int groups, const TensorView& weight,
                     const TensorView& bias, float eps, bool silu) {
  if (x.rank() != 3) throw Error(std::string(op) + ": input must be an image [C, H, W], got " + shape_str(x.shape));
  const int64_t C = x.dim(0), HW = x.dim(1) * x.dim(2);
  if (groups <= 0 || C % groups != 0)
    throw Error(std::string(op) + ": " + std::to_string(C) + " channels cannot be split into " +
                std::to_string(groups) + " groups");
  const bool affine = bool(weight);
  if (affine) require_vector(op, weight, C, "weight");
  if (bias) require_vector(op, bias, C, "bias");
  const Tensor w = affine ? widen(weight) : Tensor(), b = bias ? widen(bias) : Tensor();
  const int64_t Cg = C / groups, n = Cg * HW;
#pragma omp parallel for schedule(dynamic)
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x.ptr() + g * n;
    const double k = n ? xg[0] : 0.0;
    double s1 = 0, s2 = 0;
    shifted_sums(xg, n, k, s1, s2);
    const double d = s1 / double(n), mean = k + d;
    const double var = std::max(0.0, s2 / double(n) - d * d);  // biased, like PyTorch
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c)
      normalize_span(x.ptr() + c * HW, y.ptr() + c * HW, HW, mean, inv * (affine ? w.data[size_t(c)] : 1.0f),
                     bias ? b.data[size_t(c)] : 0.0f, silu);
  }
}

}  // namespace

Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  Tensor y(x.shape);
  group_norm_into("group_norm", x, y, groups, weight, bias, eps, false);
  return y;
}

void group_norm_silu(Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  group_norm_into("group_norm_silu", x, x, groups, weight, bias, eps, true);
}

}  // namespace chroma::cpu

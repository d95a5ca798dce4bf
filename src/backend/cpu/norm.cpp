// Normalisations. Statistics are accumulated in double: rows are a few thousand values, but a
// group of GroupNorm on a large image holds millions, where float32 sums would drift. The sums are
// `omp simd` reductions: several partial sums in vector lanes instead of one serial chain of
// dependent double additions (which ran at ~2–3 GB/s), still in double.
#include <cmath>

#include "backend/cpu/kernels.h"

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

Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  if (x.rank() != 3) throw Error("group_norm: input must be an image [C, H, W], got " + shape_str(x.shape));
  const int64_t C = x.dim(0), HW = x.dim(1) * x.dim(2);
  if (groups <= 0 || C % groups != 0)
    throw Error("group_norm: " + std::to_string(C) + " channels cannot be split into " + std::to_string(groups) +
                " groups");
  const bool affine = bool(weight);
  if (affine) require_vector("group_norm", weight, C, "weight");
  if (bias) require_vector("group_norm", bias, C, "bias");
  const Tensor w = affine ? widen(weight) : Tensor(), b = bias ? widen(bias) : Tensor();
  const int64_t Cg = C / groups, n = Cg * HW;
  Tensor y(x.shape);
#pragma omp parallel for schedule(dynamic)
  for (int64_t g = 0; g < groups; ++g) {
    const float* xg = x.ptr() + g * n;
    double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += xg[i];
    const double mean = sum / double(n);
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < n; ++i) sq += (xg[i] - mean) * (xg[i] - mean);
    const double inv = 1.0 / std::sqrt(sq / double(n) + eps);
    for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
      // Centre in double: with a large mean, folding it into a float32 shift would cancel digits.
      const double a = inv * (affine ? w.data[size_t(c)] : 1.0f);
      const float s = bias ? b.data[size_t(c)] : 0.0f;
      const float* xc = x.ptr() + c * HW;
      float* yc = y.ptr() + c * HW;
      for (int64_t i = 0; i < HW; ++i) yc[i] = float((xc[i] - mean) * a) + s;
    }
  }
  return y;
}

}  // namespace chroma::cpu

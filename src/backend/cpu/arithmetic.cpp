// Elementwise arithmetic of the samplers and the model's scalar steps, and small reductions.
// Compiled with -ffp-contract=off (CMakeLists.txt): every product and sum rounds as written, the way
// PyTorch's separate tensor ops round, so the sampler's steps match the reference bit for bit.
#include <cmath>
#include <string>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

void require_same_shape(const char* op, const Tensor& x, const Tensor& y) {
  if (x.shape != y.shape) throw Error(std::string(op) + ": shapes " + shape_str(x.shape) + " and " + shape_str(y.shape) + " differ");
}

}  // namespace

Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) {
  require_same_shape("axpby", x, y);
  Tensor out(x.shape);
  const float* xp = x.ptr();
  const float* yp = y.ptr();
  float* o = out.ptr();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) o[i] = a * xp[i] + b * yp[i];
  return out;
}

void affine(Tensor& x, float a, float b) {
  float* p = x.ptr();
  const int64_t n = x.numel();
  if (b == 0.0f) {
    for (int64_t i = 0; i < n; ++i) p[i] = a * p[i];
  } else {
    for (int64_t i = 0; i < n; ++i) p[i] = a * p[i] + b;
  }
}

void divide(Tensor& x, float d) {
  float* p = x.ptr();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = p[i] / d;
}

void round_values_bf16(Tensor& x) {
  float* p = x.ptr();
  const int64_t n = x.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = round_bf16(p[i]);
}

void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask) {
  require_same_shape("mask_blend", x, y);
  const int64_t plane = mask.numel();
  if (plane == 0 || x.numel() % plane != 0)
    throw Error("mask_blend: mask " + shape_str(mask.shape) + " does not tile " + shape_str(x.shape));
  float* xp = x.ptr();
  const float* yp = y.ptr();
  const float* m = mask.ptr();
  for (int64_t c = 0; c < x.numel() / plane; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      const int64_t k = c * plane + i;
      xp[k] = m[i] * xp[k] + (1.0f - m[i]) * yp[k];
    }
}

// Sequential sums: the same value whatever the thread count.
double sum_abs(const Tensor& x) {
  const float* p = x.ptr();
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += std::abs(double(p[i]));
  return s;
}

double sum_abs_diff(const Tensor& x, const Tensor& y) {
  require_same_shape("sum_abs_diff", x, y);
  const float* xp = x.ptr();
  const float* yp = y.ptr();
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += std::abs(double(xp[i]) - double(yp[i]));
  return s;
}

bool all_finite(const Tensor& x) {
  const float* p = x.ptr();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

}  // namespace chroma::cpu

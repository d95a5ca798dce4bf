// Normalisations, and RoPE (the DiT rotates Q and K right after their RMSNorm: one kernel does
// both; rope alone is the same kernel without the norm). Statistics are accumulated in double:
// rows are a few thousand values, but a group of GroupNorm on a large image holds millions, where
// float32 sums would drift. The sums are `omp simd` reductions: several partial sums in vector
// lanes instead of one serial chain of dependent double additions (which ran at ~2–3 GB/s), still
// in double.
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

namespace {

// Checks v holds C values, a row broadcast over x [..., C].
void require_row(const char* op, const Tensor& x, const Tensor& v, const char* what) {
  if (v.numel() != x.dim(-1))
    throw Error(std::string(op) + ": " + what + " has shape " + shape_str(v.shape) + ", expected " +
                std::to_string(x.dim(-1)) + " values for input " + shape_str(x.shape));
}

// LayerNorm's statistics of n values: the mean, then the biased variance about it (like PyTorch),
// both summed in double. Returns mean and 1/√(var + eps), rounded to float32.
struct RowMoments {
  float mean, inv;
};
inline RowMoments layer_norm_moments(const float* x, int64_t n, float eps) {
  double sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < n; ++c) sum += x[c];
  const double mean = sum / double(n);
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < n; ++c) sq += (x[c] - mean) * (x[c] - mean);
  return {float(mean), float(1.0 / std::sqrt(sq / double(n) + eps))};
}

// RMSNorm's statistic of n values: 1/√(mean(x²) + eps), the sum of squares in double.
inline float rms_inverse(const float* x, int64_t n, float eps) {
  double sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < n; ++c) sq += double(x[c]) * x[c];
  return float(1.0 / std::sqrt(sq / double(n) + eps));
}

// One row of n values: y = (x − mean)·rstd, and when shift is given the DiT's modulation on top,
// y = (1 + scale)·(x − mean)·rstd + shift (shift, scale: [n]). The row is read from cache for the
// statistics and written once. Compiled for AVX-512, AVX2 and baseline x86-64.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void layer_norm_row(const float* x, float* y, int64_t n, float eps, const float* shift, const float* scale) {
  const RowMoments m = layer_norm_moments(x, n, eps);
  if (shift) {
#pragma GCC ivdep  // y is disjoint from x, shift and scale
    for (int64_t c = 0; c < n; ++c) y[c] = (1.0f + scale[c]) * ((x[c] - m.mean) * m.inv) + shift[c];
  } else {
#pragma GCC ivdep
    for (int64_t c = 0; c < n; ++c) y[c] = (x[c] - m.mean) * m.inv;
  }
}

// layer_norm (shift null) or layer_norm_modulate of x [..., C] into a new tensor.
Tensor layer_norm_rows(const Tensor& x, float eps, const Tensor* shift, const Tensor* scale) {
  const int64_t C = x.dim(-1), rows = C ? x.numel() / C : 0;
  Tensor y(x.shape);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    layer_norm_row(x.ptr() + r * C, y.ptr() + r * C, C, eps, shift ? shift->ptr() : nullptr,
                   scale ? scale->ptr() : nullptr);
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, float eps) {
  if (x.rank() < 1) throw Error("layer_norm: input must have at least one dimension");
  return layer_norm_rows(x, eps, nullptr, nullptr);
}

Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps) {
  if (x.rank() < 1) throw Error("layer_norm_modulate: input must have at least one dimension");
  require_row("layer_norm_modulate", x, shift, "shift");
  require_row("layer_norm_modulate", x, scale, "scale");
  return layer_norm_rows(x, eps, &shift, &scale);
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
    const float inv = rms_inverse(xr, C, eps);
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * inv * s.ptr()[c];
  }
  return y;
}

// ---- RoPE, alone or after the QK-norm -----------------------------------------------------------
namespace {

// One token's H heads of D values, in place: each head RMS-normalised and multiplied by scale [D]
// when `normalise` (otherwise scale is all ones), then rotated on adjacent pairs with the token's
// RoPE row [D/2, 2] = (cos θ, sin θ) per pair. The token (12 KiB in the DiT) stays in L1 between
// the two passes. The statistics of a batch of heads come first: their sums are independent chains
// the core overlaps, where normalising each head before the next waited on its reduction and
// square root (≈ 20 % of the op). Compiled for AVX-512, AVX2 and baseline x86-64.
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void rms_norm_rope_token(float* x, int64_t heads, int64_t D, bool normalise, const float* scale, float eps,
                         const float* table) {
  constexpr int64_t kBatch = 32;  // heads per batch (the DiT has 24)
  float inv[kBatch];
  for (int64_t h0 = 0; h0 < heads; h0 += kBatch) {
    const int64_t n = std::min(kBatch, heads - h0);
    for (int64_t h = 0; h < n; ++h) inv[h] = normalise ? rms_inverse(x + (h0 + h) * D, D, eps) : 1.0f;
    for (int64_t h = 0; h < n; ++h) {
      float* xh = x + (h0 + h) * D;
#pragma GCC ivdep  // xh is disjoint from scale and table
      for (int64_t i = 0; i < D; i += 2) {
        const float x0 = xh[i] * inv[h] * scale[i], x1 = xh[i + 1] * inv[h] * scale[i + 1];
        const float c = table[i], s = table[i + 1];
        xh[i] = c * x0 - s * x1;
        xh[i + 1] = s * x0 + c * x1;
      }
    }
  }
}

// Checks x [L, H·D] splits into heads of even width and the table is [L, D/2, 2]; returns D.
int64_t require_rope_shapes(const char* op, const Tensor& x, int heads, const Tensor& rope_table) {
  if (x.rank() != 2 || heads <= 0 || x.dim(1) % (2 * heads) != 0)
    throw Error(std::string(op) + ": input " + shape_str(x.shape) + " cannot be split into " +
                std::to_string(heads) + " heads of even width");
  const int64_t L = x.dim(0), D = x.dim(1) / heads;
  if (rope_table.numel() != L * D || rope_table.dim(-1) != 2)
    throw Error(std::string(op) + ": table " + shape_str(rope_table.shape) + " does not match [" +
                std::to_string(L) + ", " + std::to_string(D / 2) + ", 2] for input " + shape_str(x.shape));
  return D;
}

void rms_norm_rope_rows(Tensor& x, int heads, bool normalise, const Tensor& scale, float eps,
                        const Tensor& rope_table) {
  const int64_t L = x.dim(0), C = x.dim(1), D = C / heads;
#pragma omp parallel for schedule(static)
  for (int64_t l = 0; l < L; ++l)
    rms_norm_rope_token(x.ptr() + l * C, heads, D, normalise, scale.ptr(), eps, rope_table.ptr() + l * D);
}

}  // namespace

void rope(Tensor& x, int heads, const Tensor& rope_table) {
  const int64_t D = require_rope_shapes("rope", x, heads, rope_table);
  Tensor ones({D});
  std::fill(ones.values().begin(), ones.values().end(), 1.0f);
  rms_norm_rope_rows(x, heads, false, ones, 0.0f, rope_table);
}

void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table) {
  const int64_t D = require_rope_shapes("rms_norm_rope", x, heads, rope_table);
  require_vector("rms_norm_rope", scale, D, "scale");
  rms_norm_rope_rows(x, heads, true, widen(scale), eps, rope_table);
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
      normalize_span(x.ptr() + c * HW, y.ptr() + c * HW, HW, mean, inv * (affine ? w.ptr()[c] : 1.0f),
                     bias ? b.ptr()[c] : 0.0f, silu);
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

// Plain double-precision reference implementations of the ops (the definitions in ops.h written
// as loops), plus helpers to make random activations and stored-dtype weights for the tests.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "backend/ops.h"
#include "tensor/tensor.h"
#include "testdata.h"

namespace chroma::test {

inline Tensor random_tensor(Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  Tensor t(std::move(shape));
  for (float& v : t.values()) v = u(rng);
  return t;
}

// A weight stored in a given dtype with random values of magnitude ≲ 1, plus its exact float values
// (decoded with the scalar converters of tensor.h, independently of the backend's widening code).
struct StoredWeight {
  std::vector<uint8_t> bytes;
  TensorView view;
  Tensor values;
};

inline StoredWeight random_weight(DType dtype, Shape shape, uint32_t seed, const std::string& name = "w") {
  StoredWeight s;
  const int64_t n = shape_numel(shape);
  s.bytes.resize(size_t(n) * dtype_size(dtype));
  s.values = Tensor(shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    float v = 0;
    switch (dtype) {
      case DType::F32: v = u(rng); std::memcpy(&s.bytes[size_t(i) * 4], &v, 4); break;
      case DType::BF16: {
        uint16_t h = f32_to_bf16(u(rng));
        std::memcpy(&s.bytes[size_t(i) * 2], &h, 2);
        v = bf16_to_f32(h);
        break;
      }
      case DType::F16: {
        // Random sign and mantissa, exponent 8..15: magnitudes in [2^-7, 2), including subnormal-free range.
        uint16_t h = uint16_t((rng() & 0x8000) | ((8 + rng() % 8) << 10) | (rng() & 0x3ff));
        std::memcpy(&s.bytes[size_t(i) * 2], &h, 2);
        v = f16_to_f32(h);
        break;
      }
      case DType::F8_E4M3: {
        uint8_t b = uint8_t(rng() % 0x78);  // exponents 0..14 (includes subnormals), no NaN
        b |= uint8_t(rng() & 0x80);
        s.bytes[size_t(i)] = b;
        v = f8e4m3_to_f32(b);
        break;
      }
      default: break;
    }
    s.values.values()[size_t(i)] = v;
  }
  s.view.name = name;
  s.view.file = "test.safetensors";
  s.view.dtype = dtype;
  s.view.shape = shape;
  s.view.data = s.bytes.data();
  s.view.nbytes = s.bytes.size();
  return s;
}

// ---- reference ops (double accumulation) ----

inline Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor* b) {
  const int64_t K = w.dim(1), N = w.dim(0), M = x.numel() / K;
  Shape s = x.shape;
  s.back() = N;
  Tensor y(s);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = b ? b->ptr()[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += double(x.values()[size_t(m * K + k)]) * w.values()[size_t(n * K + k)];
      y.values()[size_t(m * N + n)] = float(acc);
    }
  return y;
}

inline Tensor ref_layer_norm(const Tensor& x, double eps) {
  const int64_t C = x.dim(-1), R = x.numel() / C;
  Tensor y(x.shape);
  for (int64_t r = 0; r < R; ++r) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; ++c) mean += x.values()[size_t(r * C + c)];
    mean /= double(C);
    for (int64_t c = 0; c < C; ++c) var += std::pow(x.values()[size_t(r * C + c)] - mean, 2);
    var /= double(C);
    for (int64_t c = 0; c < C; ++c) y.values()[size_t(r * C + c)] = float((x.values()[size_t(r * C + c)] - mean) / std::sqrt(var + eps));
  }
  return y;
}

inline Tensor ref_rms_norm(const Tensor& x, const Tensor& scale, double eps) {
  const int64_t C = x.dim(-1), R = x.numel() / C;
  Tensor y(x.shape);
  for (int64_t r = 0; r < R; ++r) {
    double ms = 0;
    for (int64_t c = 0; c < C; ++c) ms += double(x.values()[size_t(r * C + c)]) * x.values()[size_t(r * C + c)];
    ms /= double(C);
    for (int64_t c = 0; c < C; ++c)
      y.values()[size_t(r * C + c)] = float(x.values()[size_t(r * C + c)] / std::sqrt(ms + eps) * scale.values()[size_t(c)]);
  }
  return y;
}

inline Tensor ref_group_norm(const Tensor& x, int G, const Tensor* w, const Tensor* b, double eps) {
  const int64_t C = x.dim(0), HW = x.dim(1) * x.dim(2), n = C / G * HW;
  Tensor y(x.shape);
  for (int64_t g = 0; g < G; ++g) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += x.values()[size_t(g * n + i)];
    mean /= double(n);
    for (int64_t i = 0; i < n; ++i) var += std::pow(x.values()[size_t(g * n + i)] - mean, 2);
    var /= double(n);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = (g * n + i) / HW;
      double v = (x.values()[size_t(g * n + i)] - mean) / std::sqrt(var + eps);
      if (w) v *= w->ptr()[c];
      if (b) v += b->ptr()[c];
      y.values()[size_t(g * n + i)] = float(v);
    }
  }
  return y;
}

// softmax(q·kᵀ·scale + bias)·v per sequence and head, for the query rows listed (all when empty);
// rows not listed are left zero.
inline Tensor ref_attention(const Tensor& q, const Tensor& k, const Tensor& v, int H, std::span<const int64_t> lens,
                            double scale, const Tensor* bias, const std::vector<int64_t>& only_rows = {}) {
  const int64_t L = q.dim(0), C = q.dim(1), D = C / H;
  Tensor out(q.shape);
  std::vector<int64_t> seq_begin(static_cast<size_t>(L)), seq_len(static_cast<size_t>(L));
  for (int64_t b = 0, s = 0; s < int64_t(lens.size()); b += lens[size_t(s)], ++s)
    for (int64_t i = b; i < b + lens[size_t(s)]; ++i) seq_begin[size_t(i)] = b, seq_len[size_t(i)] = lens[size_t(s)];
  std::vector<int64_t> rows = only_rows;
  if (rows.empty())
    for (int64_t i = 0; i < L; ++i) rows.push_back(i);
  std::vector<double> p;
  for (int64_t i : rows)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t b0 = seq_begin[size_t(i)], n = seq_len[size_t(i)];
      p.assign(size_t(n), 0.0);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += double(q.values()[size_t(i * C + h * D + d)]) * k.values()[size_t((b0 + j) * C + h * D + d)];
        s *= scale;
        if (bias) s += bias->ptr()[(h * L + i) * L + j];
        p[size_t(j)] = s;
        mx = std::max(mx, s);
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      for (int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int64_t j = 0; j < n; ++j) acc += p[size_t(j)] * v.values()[size_t((b0 + j) * C + h * D + d)];
        out.values()[size_t(i * C + h * D + d)] = float(acc / sum);
      }
    }
  return out;
}

inline Tensor ref_conv2d(const Tensor& x, const Tensor& w, const Tensor* b, int stride, ops::Padding pad) {
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2), O = w.dim(0), KH = w.dim(2), KW = w.dim(3);
  const int64_t Ho = (H + pad.top + pad.bottom - KH) / stride + 1, Wo = (W + pad.left + pad.right - KW) / stride + 1;
  Tensor y({O, Ho, Wo});
  for (int64_t o = 0; o < O; ++o)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double acc = b ? b->ptr()[o] : 0.0;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < KH; ++i)
            for (int64_t j = 0; j < KW; ++j) {
              const int64_t ih = oh * stride - pad.top + i, iw = ow * stride - pad.left + j;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              acc += double(x.values()[size_t((c * H + ih) * W + iw)]) * w.values()[size_t(((o * C + c) * KH + i) * KW + j)];
            }
        y.values()[size_t((o * Ho + oh) * Wo + ow)] = float(acc);
      }
  return y;
}

}  // namespace chroma::test

namespace chroma::test {

// Tolerances of the backend-vs-reference comparisons (relative to max(1, max|ref|), see testdata.h).
// float32 sums of ≤ a few thousand terms against double: rounding grows like √K·2⁻²⁴ (≈ 3e-6 at
// K = 3000) with any summation order, so 1e-5 has margin and still catches a wrong term.
inline constexpr Tolerance kSumTol{1e-5};
// A handful of float32 roundings per value (exp/tanh from libm are within a few ulps): ≈ 1e-7.
inline constexpr Tolerance kElementwiseTol{1e-6};

}  // namespace chroma::test

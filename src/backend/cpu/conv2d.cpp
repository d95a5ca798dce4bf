// conv2d: 3×3 "same" convolutions (stride 1, padding 1: nearly all of a VAE's work) by Winograd
// F(4×4, 3×3) (winograd.cpp, 4× fewer multiplies); every other shape as im2col + sgemm. The im2col
// matrix is built a band of output rows at a time (one band per thread), so its size stays bounded
// (a full one for a 128-channel 3×3 conv on 1024×1024 would be 4.6 GB).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

// im2col band per thread: enough columns for sgemm to run at speed, small enough to stay in cache.
constexpr int64_t kColumnBytes = 4 << 20;

// Winograd output tile: F(4×4, 3×3), 2.5–2.9× faster than im2col here (F(2×2): 1.8–2×). Its float32
// error, 4e-6 of max |y| at 256 channels (10× the direct conv's; tests/backend/test_conv2d.cpp), is
// far inside the VAE's reference tolerance (1e-4 per forward).
constexpr int kWinogradTile = 4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, ops::Padding pad) {
  check_float_view("conv2d", w);
  if (x.rank() != 3) throw Error("conv2d: input must be an image [C, H, W], got " + shape_str(x.shape));
  if (w.shape.size() != 4 || w.dim(1) != x.dim(0))
    throw Error("conv2d: weight " + describe(w) + " of shape " + shape_str(w.shape) + " does not fit input " +
                shape_str(x.shape) + " (expected [O, " + std::to_string(x.dim(0)) + ", kh, kw])");
  if (b) {
    check_float_view("conv2d", b);
    if (b.numel() != w.dim(0))
      throw Error("conv2d: bias " + describe(b) + " has shape " + shape_str(b.shape) + ", expected [" +
                  std::to_string(w.dim(0)) + "]");
  }
  if (stride <= 0 || pad.top < 0 || pad.left < 0 || pad.bottom < 0 || pad.right < 0)
    throw Error("conv2d: weight " + describe(w) + ": stride must be positive and padding non-negative");
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2);
  const int64_t O = w.dim(0), KH = w.dim(2), KW = w.dim(3), Kc = C * KH * KW;
  const int64_t Ho = (H + pad.top + pad.bottom - KH) / stride + 1, Wo = (W + pad.left + pad.right - KW) / stride + 1;
  if (H + pad.top + pad.bottom < KH || W + pad.left + pad.right < KW)
    throw Error("conv2d: weight " + describe(w) + " kernel is larger than the padded input " + shape_str(x.shape));
  const Tensor wf = widen(w);  // conv kernels are small (≤ a few MB widened)
  if (KH == 3 && KW == 3 && stride == 1 && pad.top == 1 && pad.left == 1 && pad.bottom == 1 && pad.right == 1) {
    const Tensor bf = b ? widen(b) : Tensor();
    return conv3x3_winograd(x, wf, b ? bf.ptr() : nullptr, kWinogradTile);
  }
  Tensor y({O, Ho, Wo});

  const int64_t threads = omp_get_max_threads();
  if (KH == 1 && KW == 1 && stride == 1 && pad.top == 0 && pad.left == 0 && pad.bottom == 0 && pad.right == 0) {
    // 1×1: the input is already the im2col matrix [C, H·W]; threads take blocks of columns.
    const int64_t HW = H * W, cols = std::max<int64_t>(256, (HW + threads - 1) / threads);
#pragma omp parallel for schedule(dynamic)
    for (int64_t c0 = 0; c0 < HW; c0 += cols)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(O), int(std::min(cols, HW - c0)), int(C), 1.0f,
                  wf.ptr(), int(C), x.ptr() + c0, int(HW), 0.0f, y.ptr() + c0, int(HW));
  } else {
    // Threads take bands of output rows, each with its own im2col buffer and sgemm.
    int64_t band = std::clamp<int64_t>(kColumnBytes / (4 * Kc * Wo), 1, Ho);
    band = std::min(band, (Ho + threads - 1) / threads);
#pragma omp parallel for schedule(dynamic)
    for (int64_t oh0 = 0; oh0 < Ho; oh0 += band) {
      const int64_t rows = std::min(band, Ho - oh0), n = rows * Wo;
      thread_local std::vector<float> col;  // reused across calls by each pool thread
      if (col.size() < size_t(Kc * n)) col.resize(size_t(Kc * n));
      // col[(c, i, j), (r, ow)] = x[c, (oh0 + r)·stride − top + i, ow·stride − left + j], zero outside.
      for (int64_t kc = 0; kc < Kc; ++kc) {
        const int64_t c = kc / (KH * KW), i = kc / KW % KH, j = kc % KW;
        float* dst = col.data() + kc * n;
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t ih = (oh0 + r) * stride - pad.top + i;
          float* d = dst + r * Wo;
          if (ih < 0 || ih >= H) {
            std::fill_n(d, Wo, 0.0f);
            continue;
          }
          // Output columns [lo, hi) read inside the row (iw = ow·stride − left + j ∈ [0, W)); the
          // padding columns outside are zeros. With stride 1 the inside is one contiguous copy.
          const float* src = x.ptr() + (c * H + ih) * W;
          const int64_t off = j - pad.left;  // iw = ow·stride + off
          const int64_t lo = std::min(Wo, ceil_div(std::max<int64_t>(-off, 0), stride));
          const int64_t hi = std::max(lo, std::min(Wo, ceil_div(W - off, stride)));
          std::fill_n(d, lo, 0.0f);
          if (stride == 1) {
            std::copy_n(src + lo + off, hi - lo, d + lo);
          } else {
            for (int64_t ow = lo; ow < hi; ++ow) d[ow] = src[ow * stride + off];
          }
          std::fill_n(d + hi, Wo - hi, 0.0f);
        }
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(O), int(n), int(Kc), 1.0f, wf.ptr(), int(Kc),
                  col.data(), int(n), 0.0f, y.ptr() + oh0 * Wo, int(Ho * Wo));
    }
  }

  if (b) {
    const Tensor bf = widen(b);
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < O; ++o) {
      float* yo = y.ptr() + o * Ho * Wo;
      for (int64_t i = 0; i < Ho * Wo; ++i) yo[i] += bf.ptr()[o];
    }
  }
  return y;
}

}  // namespace chroma::cpu

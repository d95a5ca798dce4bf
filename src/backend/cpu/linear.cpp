// linear: y[M, N] = x[M, K] · wᵀ + b with w [N, K] in its stored dtype.
// F32 weights go straight to sgemm. Other dtypes are widened a panel of output rows at a time into
// a reusable float buffer (sized to stay in cache) and multiplied panel by panel, so a weight is
// never copied whole.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

// Bytes of widened weight per panel: large enough for sgemm to run at full speed, small enough to
// stay in L2/L3 while every row block of x streams past it.
constexpr int64_t kPanelBytes = 4 << 20;

void check_linear_shapes(const Tensor& x, const TensorView& w, const TensorView& b) {
  check_float_view("linear", w);
  if (w.shape.size() != 2)
    throw Error("linear: weight " + describe(w) + " must be 2-D [N, K], got " + shape_str(w.shape));
  if (x.rank() < 1 || x.dim(-1) != w.dim(1))
    throw Error("linear: weight " + describe(w) + " of shape " + shape_str(w.shape) + " cannot multiply input " +
                shape_str(x.shape) + " (last dim must be " + std::to_string(w.dim(1)) + ")");
  if (b) {
    check_float_view("linear", b);
    if (b.shape.size() != 1 || b.dim(0) != w.dim(0))
      throw Error("linear: bias " + describe(b) + " has shape " + shape_str(b.shape) + ", expected [" +
                  std::to_string(w.dim(0)) + "] for weight " + describe(w));
  }
}

}  // namespace

Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b) {
  check_linear_shapes(x, w, b);
  const int64_t K = w.dim(1), N = w.dim(0), M = K ? x.numel() / K : 0;
  Shape out_shape = x.shape;
  out_shape.back() = N;
  Tensor y(out_shape);
  if (M == 0 || N == 0) return y;

  if (w.dtype == DType::F32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x.ptr(), int(K),
                static_cast<const float*>(w.data), int(K), 0.0f, y.ptr(), int(N));
  } else {
    const int64_t panel = std::clamp<int64_t>(kPanelBytes / (4 * std::max<int64_t>(K, 1)), 16, N);
    std::vector<float> wf(size_t(panel * K));
    for (int64_t n0 = 0; n0 < N; n0 += panel) {
      const int64_t rows = std::min(panel, N - n0);
      // Widen in parallel slices of rows; sgemm then runs on OpenBLAS's own threads.
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; r += 16)
        widen_rows(w, n0 + r, std::min<int64_t>(16, rows - r), wf.data() + r * K);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(rows), int(K), 1.0f, x.ptr(), int(K),
                  wf.data(), int(K), 0.0f, y.ptr() + n0, int(N));
    }
  }

  if (b) {
    Tensor bias = widen(b);
    const float* bp = bias.ptr();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      float* row = y.ptr() + m * N;
      for (int64_t n = 0; n < N; ++n) row[n] += bp[n];
    }
  }
  return y;
}

}  // namespace chroma::cpu

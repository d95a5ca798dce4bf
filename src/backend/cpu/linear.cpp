// linear: y[M, N] = x[M, K] · wᵀ + b with w [N, K] in its stored dtype.
// The output columns are split into panels of weight rows; each OpenMP thread takes a panel, widens
// it (unless F32) into its own reusable float buffer sized to stay in cache, and multiplies it with
// a single-threaded sgemm. A weight is thus never copied whole, widening overlaps the products,
// and one thread pool (OpenMP) does all the work.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

// Widened weight per panel: enough rows that re-packing x per panel costs little next to the
// product (≈ 1/(2·rows) of it), few enough to stay in L2/L3.
constexpr int64_t kPanelBytes = 4 << 20;
constexpr int64_t kMinPanelRows = 16;
constexpr int64_t kMinChunkRows = 32;  // smallest block of x rows worth a task of its own

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

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b) {
  check_linear_shapes(x, w, b);
  const int64_t K = w.dim(1), N = w.dim(0), M = K ? x.numel() / K : 0;
  Shape out_shape = x.shape;
  out_shape.back() = N;
  Tensor y(out_shape);
  if (M == 0 || N == 0) return y;
  const Tensor bias = b ? widen(b) : Tensor();

  // Tasks: panels of weight rows, and when there are fewer panels than threads, blocks of x rows too.
  const int64_t threads = omp_get_max_threads();
  int64_t panel = std::max<int64_t>(kPanelBytes / (4 * std::max<int64_t>(K, 1)), kMinPanelRows);
  panel = std::min(panel, ceil_div(ceil_div(N, threads), kMinPanelRows) * kMinPanelRows);
  const int64_t n_panels = ceil_div(N, panel);
  const int64_t m_chunks =
      n_panels >= threads ? 1 : std::clamp<int64_t>(ceil_div(threads, n_panels), 1, ceil_div(M, kMinChunkRows));
  const int64_t chunk = ceil_div(M, m_chunks);

#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t p = 0; p < n_panels; ++p)
    for (int64_t c = 0; c < m_chunks; ++c) {
      const int64_t n0 = p * panel, rows = std::min(panel, N - n0);
      const int64_t m0 = c * chunk, mr = std::min(chunk, M - m0);
      if (mr <= 0) continue;
      const float* wp;
      thread_local std::vector<float> widened;  // reused across calls by each pool thread
      if (w.dtype == DType::F32 && w.scale == 1.0f && !w.parts) {  // used in place
        wp = static_cast<const float*>(w.data) + n0 * K;
      } else {
        if (widened.size() < size_t(rows * K)) widened.resize(size_t(rows * K));
        widen_rows(w, n0, rows, widened.data());
        wp = widened.data();
      }
      float* yp = y.ptr() + m0 * N + n0;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(mr), int(rows), int(K), 1.0f, x.ptr() + m0 * K,
                  int(K), wp, int(K), 0.0f, yp, int(N));
      if (b)
        for (int64_t m = 0; m < mr; ++m)
          for (int64_t n = 0; n < rows; ++n) yp[m * N + n] += bias.data[size_t(n0 + n)];
    }
  return y;
}

}  // namespace chroma::cpu

// linear: y[M, N] = x[M, K] · wᵀ + b with w [N, K] in its stored dtype.
// The output columns are split into panels of weight rows; each OpenMP thread takes a panel, widens
// it (unless F32) into its own reusable float buffer sized to stay in cache, and multiplies it with
// a single-threaded sgemm. A weight is thus never copied whole, widening overlaps the products,
// and one thread pool (OpenMP) does all the work. linear_concat(a, b, w) runs the same panels with
// two products per panel, a against the first a.dim(1) columns of w and b against the rest.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <span>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

// Weight rows per panel. Each sgemm call re-packs its whole block of x (M·K floats) for the panel's
// rows·K weights, so x traffic per flop is ∝ 1/rows. Measured with chroma_bench (bf16, 2 threads,
// DiT shapes): 4 MiB / ≥ 256-row panels 150–168 GFLOP/s, 16 MiB / ≥ 512 rows 156–185, 32 MiB /
// ≥ 1024 rows 152–191. Panels are therefore at least kMinPanelRows rows (when x has that many
// rows) and grow to kPanelBytes of widened floats for small K: at most 1024 · 15360 floats
// (63 MB) per thread, reused across calls (linear_scratch_bytes).
constexpr int64_t kPanelBytes = 32 << 20;
constexpr int64_t kMinPanelRows = 1024;
constexpr int64_t kRowAlign = 16;  // panel rows are a multiple of this
constexpr int64_t kMinChunkRows = 32;  // smallest block of x rows worth a task of its own

// x_shape: the input's shape (for linear_concat, of the concatenation).
void check_linear_shapes(const Shape& x_shape, const TensorView& w, const TensorView& b) {
  check_float_view("linear", w);
  if (w.shape.size() != 2)
    throw Error("linear: weight " + describe(w) + " must be 2-D [N, K], got " + shape_str(w.shape));
  if (x_shape.empty() || x_shape.back() != w.dim(1))
    throw Error("linear: weight " + describe(w) + " of shape " + shape_str(w.shape) + " cannot multiply input " +
                shape_str(x_shape) + " (last dim must be " + std::to_string(w.dim(1)) + ")");
  if (b) {
    check_float_view("linear", b);
    if (b.shape.size() != 1 || b.dim(0) != w.dim(0))
      throw Error("linear: bias " + describe(b) + " has shape " + shape_str(b.shape) + ", expected [" +
                  std::to_string(w.dim(0)) + "] for weight " + describe(w));
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// y[M, N] = Σ_i x_i · w[:, k_i : k_i + K_i]ᵀ + b: the inputs x_i [M, K_i] are consecutive column
// ranges of one logical input [M, ΣK_i = K] (linear of a concatenation, without building it).
// Each panel of weight rows is widened once; the first input's sgemm writes y, the others
// accumulate into it (beta = 1) reading their columns of the widened panel (leading dimension K).
// Then each extra product u_j · v_jᵀ (ops.h) accumulates into the same block of y, its panel of v_j
// rows widened alike, while that block is still in cache.
// With `accumulate` (and no xs), only the extra products run, added to y as it is.
void linear_into(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b,
                 std::span<const ops::ExtraProduct> extra, Tensor& y, bool accumulate = false) {
  const int64_t K = w.dim(1), N = w.dim(0), M = N ? y.numel() / N : 0;
  if (M == 0 || N == 0) return;
  const Tensor bias = b ? widen(b) : Tensor();

  // Tasks: panels of weight rows, and when there are fewer panels than threads, blocks of x rows too.
  const int64_t threads = omp_get_max_threads();
  int64_t panel = std::max(kPanelBytes / (4 * std::max<int64_t>(K, 1)), std::min(M, kMinPanelRows));
  panel = std::min(panel, ceil_div(N, threads));  // every thread gets a panel
  // Equal panels, as many as a multiple of the thread count (the last one may be partial).
  const int64_t want_panels = ceil_div(ceil_div(N, std::max<int64_t>(panel, 1)), threads) * threads;
  panel = ceil_div(ceil_div(N, want_panels), kRowAlign) * kRowAlign;
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
      const float* wp = nullptr;
      thread_local std::vector<float> widened;  // reused across calls by each pool thread
      if (w.dtype == DType::F32 && w.scale == 1.0f && !w.parts) {  // used in place
        wp = static_cast<const float*>(w.data) + n0 * K;
      } else if (!xs.empty()) {
        if (widened.size() < size_t(rows * K)) widened.resize(size_t(rows * K));
        widen_rows(w, n0, rows, widened.data());
        wp = widened.data();
      }
      float* yp = y.ptr() + m0 * N + n0;
      int64_t k0 = 0;
      float beta = accumulate ? 1.0f : 0.0f;  // the first product overwrites y's block, later ones add to it
      for (const Tensor* x : xs) {
        const int64_t Ki = x->dim(-1);
        if (Ki > 0) {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(mr), int(rows), int(Ki), 1.0f, x->ptr() + m0 * Ki,
                      int(Ki), wp + k0, int(K), beta, yp, int(N));
          beta = 1.0f;
        }
        k0 += Ki;
      }
      for (const ops::ExtraProduct& e : extra) {
        const int64_t r = e.v.dim(1);
        thread_local std::vector<float> widened_v;
        if (widened_v.size() < size_t(rows * r)) widened_v.resize(size_t(rows * r));
        widen_rows(e.v, n0, rows, widened_v.data());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(mr), int(rows), int(r), 1.0f, e.u->ptr() + m0 * r,
                    int(r), widened_v.data(), int(r), beta, yp, int(N));
        beta = 1.0f;
      }
      if (b)
        for (int64_t m = 0; m < mr; ++m)
          for (int64_t n = 0; n < rows; ++n) yp[m * N + n] += bias.ptr()[n0 + n];
    }
}

}  // namespace

// Each extra u [M, r] with v [N, r]: M the linear's rows (x's elements / K), N the weight's.
void check_extra(int64_t M, const TensorView& w, std::span<const ops::ExtraProduct> extra) {
  for (const ops::ExtraProduct& e : extra) {
    check_float_view("linear", e.v);
    if (e.v.shape.size() != 2 || e.v.dim(0) != w.dim(0) || e.u->rank() != 2 || e.u->dim(0) != M ||
        e.u->dim(1) != e.v.dim(1))
      throw Error("linear: extra product " + shape_str(e.u->shape) + " · " + describe(e.v) + " " +
                  shape_str(e.v.shape) + "ᵀ does not fit the output [" + std::to_string(M) + ", " +
                  std::to_string(w.dim(0)) + "]");
  }
}

namespace {

// The product in the arithmetic `compute` asks for, where the weight's type has it.
void linear_in(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b,
               std::span<const ops::ExtraProduct> extra, Compute compute, Tensor& y) {
  if (compute == Compute::Bf16 && takes_bf16_compute(w) && y.numel() > 0) {
    if (bf16_dot_supported()) {
      linear_bf16(xs, w, b, y);
    } else {  // the same arithmetic without the instruction: bf16 × bf16 products are exact in float32
      std::vector<Tensor> rounded;
      std::vector<const Tensor*> inputs;
      rounded.reserve(xs.size());
      for (const Tensor* x : xs) {
        rounded.push_back(*x);
        for (float& v : rounded.back().values()) v = round_bf16(v);
        inputs.push_back(&rounded.back());
      }
      linear_into(inputs, w, b, {}, y);
    }
    if (!extra.empty()) linear_into({}, w, {}, extra, y, /*accumulate=*/true);
    return;
  }
  if ((compute == Compute::Int8 || (compute == Compute::Auto && int8_dot_fast())) && takes_int8_compute(w) &&
      y.numel() > 0) {
    linear_int8(xs, w, b, y);
    if (!extra.empty()) linear_into({}, w, {}, extra, y, /*accumulate=*/true);
    return;
  }
  linear_into(xs, w, b, extra, y);
}

}  // namespace

Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b, std::span<const ops::ExtraProduct> extra,
              Compute compute) {
  check_linear_shapes(x.shape, w, b);
  check_extra(w.dim(1) ? x.numel() / w.dim(1) : 0, w, extra);
  Shape out_shape = x.shape;
  out_shape.back() = w.dim(0);
  Tensor y(out_shape);
  const Tensor* xs[] = {&x};
  linear_in(xs, w, b, extra, compute, y);
  return y;
}

Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                     std::span<const ops::ExtraProduct> extra, Compute compute) {
  if (a.rank() != 2 || b.rank() != 2 || a.dim(0) != b.dim(0))
    throw Error("linear_concat: inputs " + shape_str(a.shape) + " and " + shape_str(b.shape) +
                " must be 2-D with the same number of rows");
  check_linear_shapes({a.dim(0), a.dim(1) + b.dim(1)}, w, bias);
  check_extra(a.dim(0), w, extra);
  Tensor y({a.dim(0), w.dim(0)});
  const Tensor* xs[] = {&a, &b};
  linear_in(xs, w, bias, extra, compute, y);
  return y;
}

size_t linear_scratch_bytes(int64_t K) { return size_t(std::max(kPanelBytes, 4 * kMinPanelRows * K)); }
// bf16: 2 bytes per value; int8: 1 byte per code and two floats per 32 values (1.25): the larger.
size_t linear_input_bytes(int64_t rows, int64_t K) { return size_t(2 * rows * K); }

}  // namespace chroma::cpu

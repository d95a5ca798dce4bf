// The calling thread's backend and worker-thread setting.
#include "backend/backend.h"

#include <cblas.h>
#include <omp.h>


namespace chroma {
namespace {
thread_local Backend* t_backend = nullptr;  // bound by a BackendScope; null: the shared CPU backend
}  // namespace

Tensor Backend::linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                              std::span<const ops::ExtraProduct> extra) {
  return linear(ops::concat_cols(a, b), w, bias, extra);
}

Tensor Backend::layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps) {
  return modulate(layer_norm(x, eps), shift, scale);
}

void Backend::rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table) {
  // x [L, H·D] is [L·H, D] row-major: rms_norm over each head's D values.
  if (x.rank() != 2 || heads <= 0 || x.dim(1) % heads != 0)
    throw Error("rms_norm_rope: input " + shape_str(x.shape) + " cannot be split into " + std::to_string(heads) +
                " heads");
  const Shape shape = x.shape;
  x.reshape({x.dim(0) * heads, x.dim(1) / heads});  // in place: reshaped() would copy x
  try {
    x = rms_norm(x, scale, eps);
  } catch (...) {
    x.reshape(shape);
    throw;
  }
  x.reshape(shape);
  rope(x, heads, rope_table);
}

Backend& active_backend() {
  if (t_backend) return *t_backend;
  static const std::unique_ptr<Backend> shared_cpu = make_cpu_backend();  // thread-safe initialisation
  return *shared_cpu;
}

BackendScope::BackendScope(Backend& backend, int threads) : saved_backend_(t_backend), saved_threads_(num_threads()) {
  set_num_threads(threads);
  t_backend = &backend;
}

BackendScope::~BackendScope() {
  t_backend = saved_backend_;
  set_num_threads(saved_threads_);
}

void set_num_threads(int n) {
  if (n < 0) throw Error("set_num_threads: thread count " + std::to_string(n) + " is negative");
  if (n == 0) n = available_cores();
  omp_set_num_threads(n);  // the calling thread's setting (an OpenMP per-thread variable)
  // OpenBLAS stays single-threaded: the kernels call sgemm from inside their OpenMP loops (one
  // product per thread), and a second busy-waiting pool would fight OpenMP's for the cores.
  openblas_set_num_threads(1);
}

int num_threads() { return omp_get_max_threads(); }

int available_cores() { return omp_get_num_procs(); }

}  // namespace chroma

// The active-backend registry and the worker-thread setting.
#include "backend/backend.h"

#include <cblas.h>
#include <omp.h>

#include <mutex>

namespace chroma {
namespace {

std::mutex g_mutex;
std::unique_ptr<Backend> g_backend;
int g_threads = 0;  // 0 until set_num_threads is called: OpenMP's and OpenBLAS's own default (all cores)

}  // namespace

Tensor Backend::linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias) {
  return linear(ops::concat_cols(a, b), w, bias);
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
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_backend) g_backend = make_cpu_backend();
  return *g_backend;
}

void set_active_backend(std::unique_ptr<Backend> backend) {
  if (!backend) throw Error("set_active_backend: null backend");
  std::lock_guard<std::mutex> lock(g_mutex);
  g_backend = std::move(backend);
}

void set_num_threads(int n) {
  if (n < 0) throw Error("set_num_threads: thread count " + std::to_string(n) + " is negative");
  if (n == 0) n = omp_get_num_procs();
  g_threads = n;
  omp_set_num_threads(n);
  // OpenBLAS stays single-threaded: the kernels call sgemm from inside their OpenMP loops (one
  // product per thread), and a second busy-waiting pool would fight OpenMP's for the cores.
  openblas_set_num_threads(1);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

}  // namespace chroma

// The calling thread's backend and worker-thread setting.
#include "backend/backend.h"

#include <sched.h>

#include <algorithm>

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

BackendScope::BackendScope(Backend& backend, int threads)
    : saved_backend_(t_backend), backend_(backend), saved_threads_(backend.threads()) {
  backend.set_threads(threads);
  t_backend = &backend;
}

BackendScope::~BackendScope() {
  t_backend = saved_backend_;
  backend_.set_threads(saved_threads_);
}

int available_cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return 1;
}

}  // namespace chroma

// Batched products and column normalisation on float32 activations (weights generated at run time,
// e.g. per-patch MLPs): many small matrices, so threads take whole matrices, each one sgemm.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {

Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  if (a.rank() != 3 || b.rank() != 3 || a.dim(0) != b.dim(0) || a.dim(2) != b.dim(1))
    throw Error("batched_matmul: shapes " + shape_str(a.shape) + " and " + shape_str(b.shape) +
                " do not fit [B, M, K] · [B, K, N]");
  const int64_t B = a.dim(0), M = a.dim(1), K = a.dim(2), N = b.dim(2);
  Tensor y({B, M, N});
  if (y.numel() == 0) return y;
  if (K == 0) return y;  // empty sums: zeros
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < B; ++i)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(N), int(K), 1.0f, a.ptr() + i * M * K, int(K),
                b.ptr() + i * K * N, int(N), 0.0f, y.ptr() + i * M * N, int(N));
  return y;
}

void normalize_columns(Tensor& x, float eps) {
  if (x.rank() != 3) throw Error("normalize_columns: input must be [B, K, N], got " + shape_str(x.shape));
  const int64_t B = x.dim(0), K = x.dim(1), N = x.dim(2);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < B; ++i) {
    float* m = x.ptr() + i * K * N;
    std::vector<double> sum(size_t(N), 0.0);  // squares per column, accumulated row by row (contiguous reads)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) sum[size_t(n)] += double(m[k * N + n]) * double(m[k * N + n]);
    std::vector<float> inv(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) inv[size_t(n)] = float(1.0 / std::max(std::sqrt(sum[size_t(n)]), double(eps)));
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) m[k * N + n] *= inv[size_t(n)];
  }
}

}  // namespace chroma::cpu

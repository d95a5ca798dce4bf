// Worker threads of the CPU backend: OpenMP's per-thread setting; OpenBLAS kept single-threaded.
#include <cblas.h>
#include <omp.h>

#include <string>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {

void set_threads(int n) {
  if (n < 0) throw Error("threads: count " + std::to_string(n) + " is negative");
  if (n == 0) n = available_cores();
  omp_set_num_threads(n);  // the calling thread's setting (an OpenMP per-thread variable)
  // OpenBLAS stays single-threaded: the kernels call sgemm from inside their OpenMP loops (one
  // product per thread), and a second busy-waiting pool would fight OpenMP's for the cores.
  openblas_set_num_threads(1);
}

int threads() { return omp_get_max_threads(); }

}  // namespace chroma::cpu

// Initial noise identical to PyTorch's CPU generator (chroma-spec.md §4.6, ComfyUI convention):
// `torch.manual_seed(seed); torch.randn(shape)` in float32, bit for bit, on any CPU.
//
// PyTorch (testdata/reference/README.md case g):
//   1. mt19937 seeded with seed & 0xffffffff (only the low 32 bits count: 2³²+7 ≡ 7);
//   2. one 32-bit draw per element, u = (r & 0xffffff)·2⁻²⁴ ∈ [0, 1), for the whole tensor first;
//   3. Box–Muller on blocks of 16: for j < 8, with u1 = 1 − u[j], u2 = u[j+8],
//        out[j] = sqrt(−2·log u1)·cos(2π·u2),  out[j+8] = sqrt(−2·log u1)·sin(2π·u2);
//      when numel is not a multiple of 16, the last 16 elements are redrawn and transformed again.
// The log/cos/sin differ between PyTorch's CPU kernels (outputs differ by ≤ 2.2e-6), hence two
// kernels here, both exact re-implementations in portable scalar code.
#pragma once
#include <cstdint>
#include <random>

#include "tensor/tensor.h"

namespace chroma::sampling {

enum class RandnKernel {
  // PyTorch's AVX2 kernel: Cephes-style polynomial log and sincos (as in the classic SSE/AVX
  // "mathfun" routines), θ = float32(2π)·u2, fused multiply-adds as PyTorch's AVX2 build compiles
  // them. What PyTorch produces on any AVX2 x86-64 CPU, i.e. what ComfyUI users get. The default.
  Avx2,
  // PyTorch's scalar kernel (no AVX2, or ATEN_CPU_CAPABILITY=default): float32 std::log, std::cos,
  // std::sin, std::sqrt, θ = 2π·u2 in double rounded to float. Exact with glibc's float functions.
  Scalar,
};

// A PyTorch CPU generator: torch.Generator().manual_seed(seed), then each randn(shape) continues
// the stream as torch.randn(shape, generator=g) does (ComfyUI's ancestral noise, samplers.h).
class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed, RandnKernel kernel = RandnKernel::Avx2);
  // Throws chroma::Error when the shape has fewer than 16 elements (PyTorch takes another path there).
  Tensor randn(const Shape& shape);

 private:
  std::mt19937 gen_;
  RandnKernel kernel_;
};

// torch.manual_seed(seed); torch.randn(shape) → float32 tensor of `shape`, row-major.
// Throws chroma::Error when the shape has fewer than 16 elements (PyTorch takes another path there).
Tensor torch_randn(uint64_t seed, const Shape& shape, RandnKernel kernel = RandnKernel::Avx2);

}  // namespace chroma::sampling

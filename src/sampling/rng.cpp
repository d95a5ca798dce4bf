// chroma-spec.md §4.6 — PyTorch CPU `randn` (ATen `normal_fill` / `normal_fill_AVX2`), reproduced
// bit for bit; recipe in testdata/reference/README.md case g.
#include "sampling/rng.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>
#include <random>

// (Compiled with -ffp-contract=off, see CMakeLists.txt: each float op rounds where PyTorch rounds.)

namespace chroma::sampling {
namespace {

// randn(mean = 0, std = 1): kept as named operands because `n·std + mean` turns −0 into +0.
constexpr float kMean = 0.0f, kStd = 1.0f;

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float float_of(uint32_t u) { return std::bit_cast<float>(u); }

// ---- PyTorch's scalar kernel (normal_fill_16) ----------------------------------------------

void box_muller_16_scalar(float* data) {  // [16] uniforms in, normals out
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) → (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * std::log(u1));
    const float theta = float(2.0 * std::numbers::pi * double(u2));  // `2.0f * c10::pi<double> * u2`
    data[j] = radius * std::cos(theta) * kStd + kMean;
    data[j + 8] = radius * std::sin(theta) * kStd + kMean;
  }
}

// ---- PyTorch's AVX2 kernel (normal_fill_16_AVX2), one lane at a time -------------------------
// The vector code calls Cephes-derived log and sincos approximations (the "avx_mathfun" routines).
// PyTorch's AVX2 translation unit is compiled with FMA contraction, so every multiply whose only
// use is an add becomes one fused operation; the std::fma calls below mark those places (found by
// matching all case-g tensors bit for bit; without the FMAs ~1% of values differ, by up to 2.4e-7).

// Natural log for x in (0, 1] (the only inputs here): x = m·2^e with m in [√½, √2), then
// log(m) by a degree-8 polynomial in (m − 1), and e·ln 2 split into two constants q1 + q2.
float cephes_logf(float x) {
  const float kMinNormPos = float_of(0x00800000u);
  x = std::max(x, kMinNormPos);
  int32_t exponent_bits = int32_t(bits_of(x) >> 23);
  x = float_of((bits_of(x) & ~0x7f800000u) | bits_of(0.5f));  // mantissa in [0.5, 1)
  float e = float(exponent_bits - 0x7f) + 1.0f;
  // For m < √½ use 2m and e − 1, so that x − 1 stays in [√½ − 1, √2 − 1).
  const bool small = x < float(0.707106781186547524);
  const float tmp = small ? x : 0.0f;
  x = x - 1.0f;
  e = e - (small ? 1.0f : 0.0f);
  x = x + tmp;

  const float z = x * x;
  float y = float(7.0376836292E-2);
  y = std::fma(y, x, float(-1.1514610310E-1));
  y = std::fma(y, x, float(1.1676998740E-1));
  y = std::fma(y, x, float(-1.2420140846E-1));
  y = std::fma(y, x, float(1.4249322787E-1));
  y = std::fma(y, x, float(-1.6668057665E-1));
  y = std::fma(y, x, float(2.0000714765E-1));
  y = std::fma(y, x, float(-2.4999993993E-1));
  y = std::fma(y, x, float(3.3333331174E-1));
  y = y * x;
  y = std::fma(y, z, e * float(-2.12194440e-4));  // + e·q1
  y = std::fma(-0.5f, z, y);                       // − z/2
  x = x + y;
  x = std::fma(e, float(0.693359375), x);          // + e·q2
  return x;
}

// sin and cos of x ≥ 0 (θ ∈ [0, 2π) here): reduce by multiples of π/4 (Cody–Waite, three
// constants), then a cos and a sin polynomial on [−π/4, π/4], swapped and signed by octant.
void cephes_sincosf(float x, float* sin_out, float* cos_out) {
  uint32_t sign_sin = bits_of(x) & 0x80000000u;
  x = float_of(bits_of(x) & 0x7fffffffu);

  int32_t octant = int32_t(x * float(1.27323954473516));  // 4/π, truncated toward zero
  octant = (octant + 1) & ~1;                              // j = (j + 1) & ~1
  const float y = float(octant);
  const uint32_t swap_sign_sin = uint32_t(octant & 4) << 29;
  const bool sin_uses_sin_poly = (octant & 2) == 0;
  const uint32_t sign_cos = uint32_t(~(octant - 2) & 4) << 29;
  sign_sin ^= swap_sign_sin;

  x = std::fma(y, float(-0.78515625), x);  // x − y·π/4 in three parts
  x = std::fma(y, float(-2.4187564849853515625e-4), x);
  x = std::fma(y, float(-3.77489497744594108e-8), x);

  const float z = x * x;
  float cos_poly = float(2.443315711809948E-005);
  cos_poly = std::fma(cos_poly, z, float(-1.388731625493765E-003));
  cos_poly = std::fma(cos_poly, z, float(4.166664568298827E-002));
  cos_poly = cos_poly * z;
  cos_poly = std::fma(cos_poly, z, -(z * 0.5f));  // y·z − z/2: the y·z product is the fused one
  cos_poly = cos_poly + 1.0f;

  float sin_poly = float(-1.9515295891E-4);
  sin_poly = std::fma(sin_poly, z, float(8.3321608736E-3));
  sin_poly = std::fma(sin_poly, z, float(-1.6666654611E-1));
  sin_poly = sin_poly * z;
  sin_poly = std::fma(sin_poly, x, x);

  const float s = sin_uses_sin_poly ? sin_poly : cos_poly;
  const float c = sin_uses_sin_poly ? cos_poly : sin_poly;
  *sin_out = float_of(bits_of(s) ^ sign_sin);
  *cos_out = float_of(bits_of(c) ^ sign_cos);
}

void box_muller_16_avx2(float* data) {  // [16] uniforms in, normals out
  const float two_pi = float(2.0 * std::numbers::pi);  // _mm256_set1_ps(2π): rounded first
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_logf(u1));
    const float theta = two_pi * u2;
    float sin_theta, cos_theta;
    cephes_sincosf(theta, &sin_theta, &cos_theta);
    data[j] = std::fma(radius * cos_theta, kStd, kMean);  // _mm256_fmadd_ps(n, std, mean)
    data[j + 8] = std::fma(radius * sin_theta, kStd, kMean);
  }
}

// at::uniform_real_distribution<float>(0, 1): the low 24 bits of one 32-bit draw, times 2⁻²⁴.
float uniform24(std::mt19937& gen) { return float(gen() & 0xffffffu) * (1.0f / 16777216.0f); }

}  // namespace

// PyTorch's CPUGeneratorImpl is the standard mt19937 (init_genrand) on the low 32 seed bits.
TorchGenerator::TorchGenerator(uint64_t seed, RandnKernel kernel) : gen_(uint32_t(seed & 0xffffffffu)), kernel_(kernel) {}

Tensor TorchGenerator::randn(const Shape& shape) {
  Tensor out(shape);
  const int64_t n = out.numel();
  if (n < 16)
    throw Error("torch_randn: shape " + shape_str(shape) + " has fewer than 16 elements (unsupported)");
  auto box_muller_16 = kernel_ == RandnKernel::Avx2 ? box_muller_16_avx2 : box_muller_16_scalar;

  float* data = out.ptr();
  for (int64_t i = 0; i < n; ++i) data[i] = uniform24(gen_);  // all draws first
  for (int64_t i = 0; i + 16 <= n; i += 16) box_muller_16(data + i);
  if (n % 16 != 0) {
    // PyTorch redoes the last 16 values with fresh draws (overlapping the last full block).
    float* tail = data + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform24(gen_);
    box_muller_16(tail);
  }
  return out;
}

Tensor torch_randn(uint64_t seed, const Shape& shape, RandnKernel kernel) { return TorchGenerator(seed, kernel).randn(shape); }

}  // namespace chroma::sampling

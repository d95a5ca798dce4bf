// Vectorisable float32 math for the CPU kernels. libm's expf is a call the compiler cannot
// vectorise (without -ffast-math); this is plain branch-free arithmetic, so loops around it compile
// to SIMD code.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace chroma::cpu {

// e^x within ~2 ulp of std::exp (Cephes expf): x = n·ln2 + r with |r| ≤ ln2/2, a degree-6
// polynomial for e^r, and 2ⁿ built in the exponent bits. Results below ~1e-38 flush to 0,
// above e^88 become +∞.
inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5·2²³: adding it rounds to an integer in the low bits
  constexpr float kLo = -87.0f, kHi = 88.0f;
  const float xc = std::clamp(x, kLo, kHi);
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  const float r = xc - n * kLn2Hi - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n_int = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kRound);
  const float y = p * std::bit_cast<float>((n_int + 127) << 23);
  return x < kLo ? 0.0f : (x > kHi ? INFINITY : (x != x ? x : y));
}

}  // namespace chroma::cpu

// chroma-spec.md §4.2 — flow `sampling.py get_schedule / time_shift / get_lin_function`, with the
// float32 arithmetic PyTorch performs on the timestep tensor (testdata/reference/README.md case b).
#include "sampling/schedule.h"

#include <cmath>
#include <string>

#include "tensor/error.h"

// (Compiled with -ffp-contract=off, see CMakeLists.txt: each float op rounds where PyTorch rounds.)

namespace chroma::sampling {
namespace {

// torch.linspace(start, end, n) for float32 on an AVX2 CPU (ATen `LinspaceKernel`).
// Scalar rule: with step = (end − start)/(n − 1) and halfway = n/2, point i is
//   start + step·i         for i < halfway,
//   end − step·(n − 1 − i) for i ≥ halfway (so both ends are exact).
// But the kernel is vectorised: while at least two 8-float vectors remain, each vector takes its
// first point from the rule above and the next seven as base + k·step. The last n mod 16 points
// use the scalar rule. This changes the last bit of some points (e.g. 28 steps), which the
// reference schedules show. (Whether PyTorch's build fuses base + k·step into an FMA changes none
// of the case-b values; we keep the separate multiply and add of the source.)
std::vector<float> torch_linspace(float start, float end, int64_t n) {
  std::vector<float> out(size_t(n), start);
  if (n < 2) return out;
  const float step = (end - start) / float(n - 1);
  const int64_t halfway = n / 2;
  auto point = [&](int64_t i) {
    return i < halfway ? start + step * float(i) : end - step * float(n - 1 - i);
  };
  constexpr int64_t kVec = 8;  // floats per AVX2 vector; ATen's loop handles two vectors at a time
  int64_t i = 0;
  for (; i + 2 * kVec <= n; i += 2 * kVec) {
    for (int64_t v = i; v < i + 2 * kVec; v += kVec) {
      const float base = point(v);  // Vectorized<float>::arange(base, step)
      for (int64_t k = 0; k < kVec; ++k) out[size_t(v + k)] = base + float(k) * step;
    }
  }
  for (; i < n; ++i) out[size_t(i)] = point(i);
  return out;
}

}  // namespace

double schedule_mu(int64_t image_seq_len) {
  // flow get_lin_function(x1=256, y1=base_shift=0.5, x2=4096, y2=max_shift=1.15), in float64.
  const double x1 = 256, y1 = 0.5, x2 = 4096, y2 = 1.15;
  const double m = (y2 - y1) / (x2 - x1);
  const double b = y1 - m * x1;
  return m * double(image_seq_len) + b;
}

std::vector<float> flow_schedule(int steps, int64_t image_seq_len, bool shift) {
  if (steps < 1) throw Error("flow_schedule: steps must be at least 1, got " + std::to_string(steps));
  if (image_seq_len < 1)
    throw Error("flow_schedule: image_seq_len must be at least 1, got " + std::to_string(image_seq_len));

  std::vector<float> ts = torch_linspace(1.0f, 0.0f, steps + 1);
  if (!shift) return ts;

  // flow time_shift(mu, 1.0, t) = math.exp(mu) / (math.exp(mu) + (1/t − 1)**1) on a float32 tensor.
  // The Python float e^mu becomes float32 when it meets the tensor, and PyTorch evaluates
  // `scalar / tensor` as reciprocal(tensor)·scalar: two roundings, not one division.
  const float e_mu = float(std::exp(schedule_mu(image_seq_len)));
  for (float& t : ts) {
    const float inv_t = 1.0f / t;         // t = 0 gives +inf ...
    const float odds = inv_t - 1.0f;      // (1/t − 1)**1.0 is the identity
    const float denom = e_mu + odds;
    t = (1.0f / denom) * e_mu;            // ... and 1/inf = 0, so t = 0 stays 0
  }
  return ts;
}

}  // namespace chroma::sampling

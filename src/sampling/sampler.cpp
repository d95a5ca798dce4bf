// chroma-spec.md §4.1 (Euler), §4.3 (CFG) — flow `sampling.py denoise_cfg`:
//   pred_cfg = pred_neg + (pred - pred_neg) * cfg
//   img = img + (t_prev - t_curr) * pred_cfg
// Each line is a sequence of PyTorch tensor ops, each rounded to the tensor's dtype
// (float32, or bf16 in flow's inference). Matched bit for bit on testdata case e.
#include "sampling/sampler.h"

#include <string>

#include "backend/ops.h"
#include "tensor/error.h"

// (The ops' arithmetic is compiled with -ffp-contract=off, see CMakeLists.txt: each float op rounds
// where PyTorch rounds; a·x + b·y with a = 1 or b = −1 is exactly x + b·y or a·x − y.)

namespace chroma::sampling {
namespace {

void check_same_shape(const char* fn, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b) {
  if (a.shape != b.shape)
    throw Error(std::string(fn) + ": " + a_name + " " + shape_str(a.shape) + " and " + b_name + " " +
                shape_str(b.shape) + " differ in shape");
}

}  // namespace

Tensor round_state(const Tensor& x, SamplerPrecision precision) {
  if (precision == SamplerPrecision::F32) return x;
  Tensor out = x;
  ops::round_bf16(out);
  return out;
}

float round_state(float x, SamplerPrecision precision) {
  return precision == SamplerPrecision::F32 ? x : round_bf16(x);
}

bool uses_cfg(int step, int skip_cfg_steps, float cfg) {
  if (skip_cfg_steps == -1) return false;  // flow: first_n_steps_without_cfg == −1 means never
  if (step < skip_cfg_steps) return false;
  return cfg != 1.0f;                      // cfg = 1 is the positive velocity: skip the negative pass
}

Tensor cfg_combine(const Tensor& v_pos, const Tensor& v_neg, float cfg, SamplerPrecision precision) {
  check_same_shape("cfg_combine", "v_pos", v_pos, "v_neg", v_neg);
  if (precision == SamplerPrecision::F32)  // v_neg + (v_pos − v_neg)·cfg
    return ops::axpby(1.0f, v_neg, cfg, ops::axpby(1.0f, v_pos, -1.0f, v_neg));
  // bf16 tensors: each op computes in float32 and rounds its result to bf16; the Python scalar cfg
  // becomes bf16 first (exact for 4.0 or 3.5, not for e.g. 5.2).
  const Tensor pos = round_state(v_pos, precision), neg = round_state(v_neg, precision);
  Tensor scaled = ops::axpby(1.0f, pos, -1.0f, neg);  // diff
  ops::round_bf16(scaled);
  ops::affine(scaled, round_bf16(cfg), 0.0f);  // diff · cfg
  ops::round_bf16(scaled);
  Tensor out = ops::axpby(1.0f, neg, 1.0f, scaled);
  ops::round_bf16(out);
  return out;
}

Tensor euler_step(const Tensor& latent, const Tensor& v, float t, float t_next, SamplerPrecision precision) {
  check_same_shape("euler_step", "latent", latent, "v", v);
  // flow subtracts the Python floats of the float32 schedule in float64; rounding that difference
  // to float32 gives the float32 difference (both operands are float32, so it is exact in float64).
  const float dt = t_next - t;
  if (precision == SamplerPrecision::F32) return ops::axpby(1.0f, latent, dt, v);
  // bf16: the scalar dt is converted to bf16, dt·v is rounded, then the sum is rounded. Verified on
  // case-e-txt2img-bf16latent: dt from bf16-rounded t's, or an unrounded product, do not match.
  Tensor step = round_state(v, precision);
  ops::affine(step, round_bf16(dt), 0.0f);
  ops::round_bf16(step);
  Tensor out = ops::axpby(1.0f, round_state(latent, precision), 1.0f, step);
  ops::round_bf16(out);
  return out;
}

Tensor flow_noised(const Tensor& x0, const Tensor& noise, float t, SamplerPrecision precision) {
  check_same_shape("flow_noised", "x0", x0, "noise", noise);
  return round_state(ops::axpby(1.0f - t, x0, t, noise), precision);
}

}  // namespace chroma::sampling

// chroma-spec.md §4.1 (Euler), §4.3 (CFG) — flow `sampling.py denoise_cfg`:
//   pred_cfg = pred_neg + (pred - pred_neg) * cfg
//   img = img + (t_prev - t_curr) * pred_cfg
// Each line is a sequence of PyTorch tensor ops, each rounded to the tensor's dtype
// (float32, or bf16 in flow's inference). Matched bit for bit on testdata case e.
#include "sampling/sampler.h"

#include <string>

#include "tensor/error.h"

// (Compiled with -ffp-contract=off, see CMakeLists.txt: each float op rounds where PyTorch rounds.)

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
  for (float& v : out.data) v = round_bf16(v);
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
  Tensor out(v_pos.shape);
  if (precision == SamplerPrecision::F32) {
    for (size_t i = 0; i < out.data.size(); ++i)
      out.data[i] = v_neg.data[i] + (v_pos.data[i] - v_neg.data[i]) * cfg;
    return out;
  }
  // bf16 tensors: each op computes in float32 and rounds its result to bf16; the Python scalar cfg
  // becomes bf16 first (exact for 4.0 or 3.5, not for e.g. 5.2).
  const float cfg_b = round_bf16(cfg);
  for (size_t i = 0; i < out.data.size(); ++i) {
    const float pos = round_bf16(v_pos.data[i]), neg = round_bf16(v_neg.data[i]);
    const float diff = round_bf16(pos - neg);
    const float scaled = round_bf16(diff * cfg_b);
    out.data[i] = round_bf16(neg + scaled);
  }
  return out;
}

Tensor euler_step(const Tensor& latent, const Tensor& v, float t, float t_next, SamplerPrecision precision) {
  check_same_shape("euler_step", "latent", latent, "v", v);
  // flow subtracts the Python floats of the float32 schedule in float64; rounding that difference
  // to float32 gives the float32 difference (both operands are float32, so it is exact in float64).
  const float dt = t_next - t;
  Tensor out(latent.shape);
  if (precision == SamplerPrecision::F32) {
    for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = latent.data[i] + dt * v.data[i];
    return out;
  }
  // bf16: the scalar dt is converted to bf16, dt·v is rounded, then the sum is rounded. Verified on
  // case-e-txt2img-bf16latent: dt from bf16-rounded t's, or an unrounded product, do not match.
  const float dt_b = round_bf16(dt);
  for (size_t i = 0; i < out.data.size(); ++i) {
    const float step = round_bf16(dt_b * round_bf16(v.data[i]));
    out.data[i] = round_bf16(round_bf16(latent.data[i]) + step);
  }
  return out;
}

Tensor flow_noised(const Tensor& x0, const Tensor& noise, float t, SamplerPrecision precision) {
  check_same_shape("flow_noised", "x0", x0, "noise", noise);
  Tensor out(x0.shape);
  const float keep = 1.0f - t;
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = keep * x0.data[i] + t * noise.data[i];
  return round_state(out, precision);
}

}  // namespace chroma::sampling

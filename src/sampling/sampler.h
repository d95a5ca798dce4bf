// Sampler arithmetic (chroma-spec.md §4.1, §4.3): classifier-free guidance on velocities and the
// Euler step of the flow ODE, with the exact operation order and roundings of flow's
// `denoise_cfg` (testdata/reference/README.md case e, §6.1).
//
// Sampler state precision:
//   F32   latent, timesteps and CFG/Euler arithmetic in float32 — the port's default
//         (case-e-txt2img-fp32, bit-exact).
//   BF16  what flow's inference does: bf16 noise/latent, bf16 timestep tensor, network outputs
//         rounded to bf16, CFG and Euler in bf16 with one rounding per PyTorch op
//         (case-e-txt2img-bf16latent, bit-exact). Values stay float32 tensors holding bf16 values.
// In BF16 mode the caller rounds what enters the sampler (round_state on the initial noise, the
// timestep fed to the model); cfg_combine and euler_step round their own tensor inputs.
#pragma once

#include "tensor/tensor.h"

namespace chroma::sampling {

enum class SamplerPrecision { F32, BF16 };

// The sampler's state precision applied to a value: identity for F32, round-to-nearest-even
// bf16 for BF16 (e.g. the initial noise, or t = 0.826064 → 0.824219 for the model's timestep).
Tensor round_state(const Tensor& x, SamplerPrecision precision);
float round_state(float x, SamplerPrecision precision);

// Whether step `step` (0-based) runs the negative pass and CFG (flow `denoise_cfg`, §4.3):
// false when skip_cfg_steps == −1 (never CFG), when step < skip_cfg_steps, or when cfg == 1
// (then CFG would only return v_pos up to rounding; flow still runs the negative pass there).
bool uses_cfg(int step, int skip_cfg_steps, float cfg);

// v = v_neg + (v_pos − v_neg)·cfg, exactly this operation order.
// v_pos, v_neg: [1, 16, h, w] (any equal shapes) → same shape.
//   F32:  three float32 ops.
//   BF16: inputs and cfg rounded to bf16, then every op's result rounded to bf16.
// Throws chroma::Error when the shapes differ.
Tensor cfg_combine(const Tensor& v_pos, const Tensor& v_neg, float cfg,
                   SamplerPrecision precision = SamplerPrecision::F32);

// One Euler step of dx/dt = v from t to t_next (t_next < t): latent + dt·v, dt = f32(t_next − t),
// with t and t_next the float32 schedule values (flow_schedule), never the bf16-rounded ones.
// latent, v: [1, 16, h, w] (any equal shapes) → same shape.
//   F32:  dt·v and the sum in float32.
//   BF16: latent and v rounded to bf16; dt rounded to bf16; dt·v rounded; the sum rounded
//         (PyTorch converts the Python scalar dt to the tensor's dtype).
// Throws chroma::Error when the shapes differ.
Tensor euler_step(const Tensor& latent, const Tensor& v, float t, float t_next,
                  SamplerPrecision precision = SamplerPrecision::F32);

// The flow model's noised state at time t (spec §4.1): x_t = (1 − t)·x0 + t·noise, in float32 with
// this operation order, then in the sampler's precision. img2img starts from it mid-schedule;
// inpainting puts the unmasked latent back at each step's t with it. t = 1 gives `noise` exactly,
// t = 0 gives x0 exactly. Throws chroma::Error when the shapes differ.
Tensor flow_noised(const Tensor& x0, const Tensor& noise, float t, SamplerPrecision precision = SamplerPrecision::F32);

}  // namespace chroma::sampling

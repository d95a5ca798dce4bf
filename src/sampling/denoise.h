// The denoising loop and the sampler objects it runs (chroma-spec.md §4): a sampler integrates the
// flow ODE dx/dt = v(x, t) from the first to the last time of a schedule slice, calling the
// velocity function as often as its method needs (Euler once per step, Heun twice), or samples the
// flow's SDE (ancestral samplers, with noise). Each sampler owns its precision rules (sampler.h):
// how its state and the model's view of t are rounded.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "sampling/sampler.h"
#include "tensor/tensor.h"

namespace chroma::sampling {

// The velocity at state x and model time t (already in the sampler's precision). `step` is the
// index in the full schedule, for per-step choices such as whether to run CFG.
using VelocityFn = std::function<Tensor(const Tensor& x, float t, int step)>;

// Called after each step with the new state, which it may change (inpainting's mask blend);
// returns false to stop the loop (cancellation).
using StepHook = std::function<bool(int step, int steps, Tensor& x)>;

// The next tensor of N(0, 1) noise of a shape, for the ancestral samplers (the pipeline gives a
// PyTorch CPU generator seeded with the image's seed, as ComfyUI's default noise sampler is).
using NoiseFn = std::function<Tensor(const Shape& shape)>;

// What multistep samplers remember between the steps of one run; denoise() starts it empty.
struct StepHistory {
  Tensor denoised;   // the previous step's x0 prediction, D = x − t·v (dpm++2m, res_multistep)
  Tensor velocity;   // the previous step's velocity (gradient_estimation)
  float t = 0;       // the previous step's time
  bool empty() const { return denoised.numel() == 0 && velocity.numel() == 0; }
};

// Samplers work on the flow sigmas σ = t (chroma-spec.md §4.1, ComfyUI's CONST model sampling): the
// x0 prediction of velocity v at (x, σ) is D = x − σ·v, and dx/dσ = (x − D)/σ = v. The formulas are
// k-diffusion's (as ComfyUI runs them on flow models), written with v.
class Sampler {
 public:
  explicit Sampler(SamplerPrecision precision) : precision_(precision) {}
  virtual ~Sampler() = default;
  virtual const char* name() const = 0;
  SamplerPrecision precision() const { return precision_; }
  // The state as this sampler keeps it (e.g. the initial noise rounded to bf16).
  Tensor prepare(const Tensor& x) const { return round_state(x, precision_); }
  // One step of the schedule from t to t_next (float32 schedule values) at schedule index `step`.
  virtual Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                      StepHistory& history) const = 0;

 protected:
  SamplerPrecision precision_;
};

// Euler (spec §4.1): x + (t_next − t)·v(x, t), the model seeing t in the sampler's precision and dt
// taken from the float32 schedule (flow's denoise_cfg; sampler.h euler_step). 1st order.
class EulerSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "euler"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// The other samplers compute in float32; with SamplerPrecision::BF16 the model sees t rounded to
// bf16 and the state is rounded to bf16 after each step.
//
// Heun (k-diffusion sample_heun, no churn): d1 = v(x, t), x̃ = x + dt·d1, d2 = v(x̃, t_next),
// x + dt·(d1 + d2)/2; the last step (t_next = 0) is Euler. 2nd order, two evaluations per step.
class HeunSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "heun"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// DPM-Solver++(2M) (k-diffusion sample_dpmpp_2m): with h = log(t/t_next) and r = h_prev/h,
// D' = (1 + 1/(2r))·D − D_prev/(2r) (D' = D on the first step), x_next = (t_next/t)·x + (1 − t_next/t)·D';
// the last step (t_next = 0) gives D. 2nd order, one evaluation per step.
class DpmPP2MSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "dpm++2m"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// RES multistep (ComfyUI sample_res_multistep, deterministic; arXiv 2308.02157): in λ = −log t with
// h = λ_next − λ and c2 = −h_prev/h, x_next = e^(−h)·x + h·(b1·D + b2·D_prev), b1 = φ1(−h) − φ2(−h)/c2,
// b2 = φ2(−h)/c2, φ1(z) = (e^z − 1)/z, φ2(z) = (φ1(z) − 1)/z; the first and the last step are Euler.
// 2nd order, one evaluation per step.
class ResMultistepSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "res_multistep"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// Gradient estimation (ComfyUI sample_gradient_estimation, γ = 2; openreview o2ND9v0CeK): Euler with
// the velocity extrapolated from the previous one, v̄ = γ·v + (1 − γ)·v_prev (plain v on the first step).
class GradientEstimationSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "gradient_estimation"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// A sampler that takes fresh noise at every step (the ancestral and SDE ones): its noise source and
// η, the share of each step's noise it renews (1 by default; 0 takes none and is an ODE method).
class NoisySampler : public Sampler {
 public:
  NoisySampler(SamplerPrecision precision, NoiseFn noise, float eta = 1.0f)
      : Sampler(precision), noise_(std::move(noise)), eta_(eta) {}

 protected:
  NoiseFn noise_;
  float eta_;
};

// Euler ancestral for flow models (ComfyUI sample_euler_ancestral_RF, eta η, s_noise 1): a step down to
// t_down = t_next·(1 + (t_next/t − 1)·η), x' = (t_down/t)·x + (1 − t_down/t)·D, then renoised to
// t_next: (1 − t_next)/(1 − t_down)·x' + c·ε, c = sqrt(t_next² − t_down²·(1 − t_next)²/(1 − t_down)²),
// which keeps x on the flow marginal (1 − t)·x0 + t·ε. The last step gives D. η = 0 is Euler.
class EulerAncestralSampler final : public NoisySampler {
 public:
  using NoisySampler::NoisySampler;
  const char* name() const override { return "euler_a"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// DPM-Solver++(2S) ancestral for flow models (ComfyUI sample_dpmpp_2s_ancestral_RF, η, s_noise 1): the
// step down to t_down as euler_a, taken with D evaluated at the midpoint in λ = log((1 − t)/t)
// between t and t_down (t_s = 1/(e^λ_s + 1); 0.9999 when t = 1, where λ is −∞):
// u = (t_s/t)·x + (1 − t_s/t)·D, D_s = D(u, t_s), x' = (t_down/t)·x + (1 − t_down/t)·D_s, then renoised
// to t_next as euler_a. The last step gives D. Two evaluations per step (one on the last); η = 0 is a
// 2nd-order ODE method.
class DpmPP2SAncestralSampler final : public NoisySampler {
 public:
  using NoisySampler::NoisySampler;
  const char* name() const override { return "dpm++2s_a"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// DPM-Solver++ SDE (ComfyUI sample_dpmpp_sde, η, s_noise 1, r = 1/2) in the flow's half log-SNR
// λ = log(α/t), α = 1 − t: a first stochastic DPM-Solver++ step from t to the λ-midpoint t_1, a model
// evaluation there, and a second from t to t_next with D_1 (fac = 1/(2r) = 1); each step is
// x' = (α'/α)·e^(−h')·x − α'·expm1(−h')·D + α'·σ_up·ε with (σ_down, σ_up) k-diffusion's ancestral
// split of e^(−λ) and h' = −log σ_down − λ. A first time t ≥ 1 is taken as 0.9999 (ComfyUI's offset for
// a finite λ at shift 1). The last step gives D. The two noises of a step are increments of one
// Brownian path over t (the second's interval [t_next, t] holds the first's [t_1, t]), drawn as two
// independent normals and combined, as ComfyUI's Brownian tree correlates them (not its samples).
// η = 0 is a 2nd-order ODE method.
class DpmPPSdeSampler final : public NoisySampler {
 public:
  using NoisySampler::NoisySampler;
  const char* name() const override { return "dpm++sde"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
              StepHistory& history) const override;
};

// The samplers by name; throws chroma::Error for an unknown name, or an ancestral sampler without
// a noise source.
std::unique_ptr<Sampler> make_sampler(const std::string& name, SamplerPrecision precision, NoiseFn noise = {});

// The sampler names (sampler_names.cpp: the one table, without the samplers' arithmetic, so request
// parsing links without a backend).
enum class SamplerKind { Euler, Heun, DpmPP2M, ResMultistep, GradientEstimation, EulerAncestral, DpmPP2SAncestral, DpmPPSde };
struct SamplerInfo {
  const char* name;
  SamplerKind kind;
  bool ancestral;  // takes noise at every step
};
const SamplerInfo* find_sampler(const std::string& name);  // null for an unknown name
bool is_sampler_name(const std::string& name);
bool is_ancestral(const std::string& name);
std::string sampler_names();  // "euler, heun, …"

// Integrates from schedule.front() to schedule.back() (schedule.size() − 1 steps, times
// decreasing); `first_step` is the index of schedule[0] in the full schedule (img2img starts
// mid-schedule). Returns the final state, or an empty tensor when the hook stopped the loop.
Tensor denoise(const Sampler& sampler, const Tensor& x, std::span<const float> schedule, const VelocityFn& velocity,
               const StepHook& after_step = {}, int first_step = 0);

}  // namespace chroma::sampling

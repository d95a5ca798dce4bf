#include "sampling/denoise.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "backend/ops.h"
#include "tensor/error.h"

namespace chroma::sampling {

Tensor EulerSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                          StepHistory&) const {
  const Tensor v = velocity(x, round_state(t, precision_), step);
  return euler_step(x, v, t, t_next, precision_);
}

namespace {

// a·x + b·y elementwise, in float32 (the arithmetic of the samplers below).
Tensor combine(float a, const Tensor& x, float b, const Tensor& y) {
  if (x.shape != y.shape) throw Error("sampler: shapes " + shape_str(x.shape) + " and " + shape_str(y.shape) + " differ");
  return ops::axpby(a, x, b, y);
}

// Noise of `shape` (drawn on the host) where the sampler's tensors are.
Tensor draw(const NoiseFn& noise, const Shape& shape) { return ops::to_backend(noise(shape)); }

// D = x − t·v: the x0 prediction.
Tensor denoised(const Tensor& x, const Tensor& v, float t) { return combine(1.0f, x, -t, v); }

// The flow ancestral samplers' step-down time (ComfyUI's *_RF): t_next·(1 + (t_next/t − 1)·η).
double flow_down(double t, double t_next, double eta) { return t_next * (1.0 + (t_next / t - 1.0) * eta); }

// The flow ancestral samplers' renoising (ComfyUI's *_RF): x_down at t_down back to t_next,
// (1 − t_next)/(1 − t_down)·x_down + c·ε with c chosen to keep the flow marginal (denoise.h euler_a).
Tensor renoise(const Tensor& x_down, double down, double t_next, const NoiseFn& noise) {
  const double alpha_next = 1.0 - t_next, alpha_down = 1.0 - down;
  const double c = std::sqrt(
      std::max(0.0, t_next * t_next - down * down * alpha_next * alpha_next / (alpha_down * alpha_down)));
  return combine(float(alpha_next / alpha_down), x_down, float(c), draw(noise, x_down.shape));
}

}  // namespace

Tensor HeunSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                         StepHistory&) const {
  const float dt = t_next - t;
  const Tensor d1 = velocity(x, round_state(t, precision_), step);
  const Tensor euler = combine(1.0f, x, dt, d1);
  if (t_next == 0.0f) return round_state(euler, precision_);
  const Tensor d2 = velocity(round_state(euler, precision_), round_state(t_next, precision_), step);
  // x + dt·(½(d1 + d2)): ½d1 + ½d2 is that half sum exactly (halving is exact in binary floats).
  return round_state(combine(1.0f, x, dt, combine(0.5f, d1, 0.5f, d2)), precision_);
}

Tensor DpmPP2MSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                            StepHistory& history) const {
  const Tensor d = denoised(x, velocity(x, round_state(t, precision_), step), t);
  Tensor out;
  if (t_next == 0.0f) {
    out = d;
  } else {
    const double h = std::log(double(t) / double(t_next));
    Tensor d_prime = d;
    if (!history.empty()) {
      const double r = std::log(double(history.t) / double(t)) / h;
      d_prime = combine(float(1.0 + 1.0 / (2.0 * r)), d, float(-1.0 / (2.0 * r)), history.denoised);
    }
    const float ratio = float(double(t_next) / double(t));
    out = combine(ratio, x, 1.0f - ratio, d_prime);
  }
  history.denoised = d;
  history.t = t;
  return round_state(out, precision_);
}

Tensor ResMultistepSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                                 StepHistory& history) const {
  const Tensor v = velocity(x, round_state(t, precision_), step);
  const Tensor d = denoised(x, v, t);
  Tensor out;
  if (t_next == 0.0f || history.empty()) {
    out = combine(1.0f, x, t_next - t, v);
  } else {
    const double h = std::log(double(t) / double(t_next));
    const double c2 = -std::log(double(history.t) / double(t)) / h;
    const double phi1 = std::expm1(-h) / -h, phi2 = (phi1 - 1.0) / -h;
    const double b1 = phi1 - phi2 / c2, b2 = phi2 / c2;
    out = combine(float(std::exp(-h)), x, 1.0f, combine(float(h * b1), d, float(h * b2), history.denoised));
  }
  history.denoised = d;
  history.t = t;
  return round_state(out, precision_);
}

Tensor GradientEstimationSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                                       StepHistory& history) const {
  constexpr float kGamma = 2.0f;
  const Tensor v = velocity(x, round_state(t, precision_), step);
  const Tensor v_bar = history.empty() ? v : combine(kGamma, v, 1.0f - kGamma, history.velocity);
  history.velocity = v;
  history.t = t;
  return round_state(combine(1.0f, x, t_next - t, v_bar), precision_);
}

Tensor EulerAncestralSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                                   StepHistory&) const {
  const Tensor d = denoised(x, velocity(x, round_state(t, precision_), step), t);
  if (t_next == 0.0f) return round_state(d, precision_);
  const double sn = t_next, s = t, down = flow_down(s, sn, eta_);
  Tensor out = combine(float(down / s), x, float(1.0 - down / s), d);
  if (eta_ > 0.0f) out = renoise(out, down, sn, noise_);
  return round_state(out, precision_);
}

namespace {

// The flow's half log-SNR λ = log((1 − t)/t) and its inverse t = 1/(e^λ + 1).
double half_log_snr(double t) { return std::log((1.0 - t) / t); }
double time_of_half_log_snr(double lambda) { return 1.0 / (std::exp(lambda) + 1.0); }

// k-diffusion get_ancestral_step: (σ_down, σ_up) for a step from σ to σ_next with noise share η.
std::pair<double, double> ancestral_split(double sigma, double sigma_next, double eta) {
  if (eta == 0.0) return {sigma_next, 0.0};
  const double up = std::min(
      sigma_next, eta * std::sqrt(std::max(0.0, sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) /
                                                    (sigma * sigma))));
  return {std::sqrt(std::max(0.0, sigma_next * sigma_next - up * up)), up};
}

}  // namespace

Tensor DpmPP2SAncestralSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                                     StepHistory&) const {
  const Tensor d = denoised(x, velocity(x, round_state(t, precision_), step), t);
  if (t_next == 0.0f) return round_state(d, precision_);
  const double s = t, sn = t_next, down = flow_down(s, sn, eta_);
  const double t_mid =
      s == 1.0 ? 0.9999 : time_of_half_log_snr(0.5 * (half_log_snr(s) + half_log_snr(down)));
  const auto t_s = float(t_mid);
  const Tensor u = combine(float(t_mid / s), x, float(1.0 - t_mid / s), d);
  const Tensor d_s = denoised(u, velocity(round_state(u, precision_), round_state(t_s, precision_), step), t_s);
  Tensor out = combine(float(down / s), x, float(1.0 - down / s), d_s);
  if (eta_ > 0.0f) out = renoise(out, down, sn, noise_);
  return round_state(out, precision_);
}

Tensor DpmPPSdeSampler::step(const Tensor& x, float t_in, float t_next, int step, const VelocityFn& velocity,
                             StepHistory&) const {
  const float t = t_in >= 1.0f ? 0.9999f : t_in;
  const Tensor d = denoised(x, velocity(x, round_state(t, precision_), step), t);
  if (t_next == 0.0f) return round_state(d, precision_);
  const double s = t, sn = t_next;
  const double lambda_s = half_log_snr(s), lambda_t = half_log_snr(sn);
  const double lambda_1 = 0.5 * (lambda_s + lambda_t), t_1 = time_of_half_log_snr(lambda_1);
  const double alpha_s = 1.0 - s, alpha_1 = 1.0 - t_1, alpha_t = 1.0 - sn;
  // One stochastic DPM-Solver++ step from (x at λ_s, D) to λ_to, whose α is alpha_to.
  auto solver_step = [&](double lambda_to, double alpha_to, const Tensor& d_use, const Tensor* noise) {
    const auto [down, up] = ancestral_split(std::exp(-lambda_s), std::exp(-lambda_to), eta_);
    const double h = -std::log(down) - lambda_s;
    Tensor out = combine(float(alpha_to / alpha_s * std::exp(-h)), x, float(-alpha_to * std::expm1(-h)), d_use);
    if (noise) out = combine(1.0f, out, float(alpha_to * up), *noise);
    return out;
  };
  Tensor noise_1, noise_2;
  if (eta_ > 0.0f) {
    // Brownian increments over t: W(t_1) − W(t) and W(t_next) − W(t), each divided by √|Δt|.
    const double a = s - t_1, b = t_1 - sn;
    noise_1 = draw(noise_, x.shape);
    noise_2 = combine(float(std::sqrt(a / (a + b))), noise_1, float(std::sqrt(b / (a + b))), draw(noise_, x.shape));
  }
  const Tensor x_1 = solver_step(lambda_1, alpha_1, d, eta_ > 0.0f ? &noise_1 : nullptr);
  const auto t_1f = float(t_1);
  const Tensor d_1 = denoised(x_1, velocity(round_state(x_1, precision_), round_state(t_1f, precision_), step), t_1f);
  return round_state(solver_step(lambda_t, alpha_t, d_1, eta_ > 0.0f ? &noise_2 : nullptr), precision_);
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, SamplerPrecision precision, NoiseFn noise) {
  const SamplerInfo* s = find_sampler(name);
  if (!s) throw Error("unknown sampler '" + name + "' (known: " + sampler_names() + ")");
  if (s->ancestral && !noise) throw Error("sampler " + name + " needs a noise source");
  switch (s->kind) {
    case SamplerKind::Euler: return std::make_unique<EulerSampler>(precision);
    case SamplerKind::Heun: return std::make_unique<HeunSampler>(precision);
    case SamplerKind::DpmPP2M: return std::make_unique<DpmPP2MSampler>(precision);
    case SamplerKind::ResMultistep: return std::make_unique<ResMultistepSampler>(precision);
    case SamplerKind::GradientEstimation: return std::make_unique<GradientEstimationSampler>(precision);
    case SamplerKind::EulerAncestral: return std::make_unique<EulerAncestralSampler>(precision, std::move(noise));
    case SamplerKind::DpmPP2SAncestral: return std::make_unique<DpmPP2SAncestralSampler>(precision, std::move(noise));
    case SamplerKind::DpmPPSde: return std::make_unique<DpmPPSdeSampler>(precision, std::move(noise));
  }
  throw Error("sampler " + name + " has no implementation");
}

Tensor denoise(const Sampler& sampler, const Tensor& x0, std::span<const float> schedule, const VelocityFn& velocity,
               const StepHook& after_step, int first_step) {
  if (schedule.size() < 2) throw Error("denoise: a schedule needs at least two times, got " + std::to_string(schedule.size()));
  const int steps = int(schedule.size()) - 1;
  Tensor x = sampler.prepare(x0);
  StepHistory history;
  for (int i = 0; i < steps; ++i) {
    x = sampler.step(x, schedule[size_t(i)], schedule[size_t(i) + 1], first_step + i, velocity, history);
    if (after_step && !after_step(first_step + i, first_step + steps, x)) return Tensor();
  }
  return x;
}

}  // namespace chroma::sampling

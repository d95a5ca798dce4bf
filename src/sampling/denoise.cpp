#include "sampling/denoise.h"

#include <algorithm>
#include <cmath>

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
  Tensor out(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) out.data[size_t(i)] = a * x.data[size_t(i)] + b * y.data[size_t(i)];
  return out;
}

// D = x − t·v: the x0 prediction.
Tensor denoised(const Tensor& x, const Tensor& v, float t) { return combine(1.0f, x, -t, v); }

}  // namespace

Tensor HeunSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity,
                         StepHistory&) const {
  const float dt = t_next - t;
  const Tensor d1 = velocity(x, round_state(t, precision_), step);
  const Tensor euler = combine(1.0f, x, dt, d1);
  if (t_next == 0.0f) return round_state(euler, precision_);
  const Tensor d2 = velocity(round_state(euler, precision_), round_state(t_next, precision_), step);
  Tensor out(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i)
    out.data[size_t(i)] = x.data[size_t(i)] + dt * (0.5f * (d1.data[size_t(i)] + d2.data[size_t(i)]));
  return round_state(out, precision_);
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
  const double sn = t_next, s = t;
  const double down = sn * (1.0 + (sn / s - 1.0) * eta_);
  const double alpha_next = 1.0 - sn, alpha_down = 1.0 - down;
  Tensor out = combine(float(down / s), x, float(1.0 - down / s), d);
  if (eta_ > 0.0f) {
    const double renoise =
        std::sqrt(std::max(0.0, sn * sn - down * down * alpha_next * alpha_next / (alpha_down * alpha_down)));
    out = combine(float(alpha_next / alpha_down), out, float(renoise), noise_(x.shape));
  }
  return round_state(out, precision_);
}

namespace {
struct NamedSampler {
  const char* name;
  bool ancestral;
  std::unique_ptr<Sampler> (*make)(SamplerPrecision, NoiseFn);
};
template <typename S>
std::unique_ptr<Sampler> make_ode(SamplerPrecision p, NoiseFn) {
  return std::make_unique<S>(p);
}
const NamedSampler kSamplers[] = {
    {"euler", false, make_ode<EulerSampler>},
    {"heun", false, make_ode<HeunSampler>},
    {"dpm++2m", false, make_ode<DpmPP2MSampler>},
    {"res_multistep", false, make_ode<ResMultistepSampler>},
    {"gradient_estimation", false, make_ode<GradientEstimationSampler>},
    {"euler_a", true,
     [](SamplerPrecision p, NoiseFn noise) -> std::unique_ptr<Sampler> {
       return std::make_unique<EulerAncestralSampler>(p, std::move(noise));
     }},
};
const NamedSampler* find_sampler(const std::string& name) {
  for (const NamedSampler& s : kSamplers)
    if (name == s.name) return &s;
  return nullptr;
}
}  // namespace

std::unique_ptr<Sampler> make_sampler(const std::string& name, SamplerPrecision precision, NoiseFn noise) {
  const NamedSampler* s = find_sampler(name);
  if (!s) throw Error("unknown sampler '" + name + "' (known: " + sampler_names() + ")");
  if (s->ancestral && !noise) throw Error("sampler " + name + " needs a noise source");
  return s->make(precision, std::move(noise));
}

bool is_sampler_name(const std::string& name) { return find_sampler(name) != nullptr; }

bool is_ancestral(const std::string& name) {
  const NamedSampler* s = find_sampler(name);
  return s && s->ancestral;
}

std::string sampler_names() {
  std::string names;
  for (const NamedSampler& s : kSamplers) names += (names.empty() ? "" : ", ") + std::string(s.name);
  return names;
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

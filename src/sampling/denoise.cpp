#include "sampling/denoise.h"

#include "tensor/error.h"

namespace chroma::sampling {

Tensor EulerSampler::step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity) const {
  const Tensor v = velocity(x, round_state(t, precision_), step);
  return euler_step(x, v, t, t_next, precision_);
}

namespace {
struct NamedSampler {
  const char* name;
  std::unique_ptr<Sampler> (*make)(SamplerPrecision);
};
const NamedSampler kSamplers[] = {
    {"euler", [](SamplerPrecision p) -> std::unique_ptr<Sampler> { return std::make_unique<EulerSampler>(p); }},
};
}  // namespace

std::unique_ptr<Sampler> make_sampler(const std::string& name, SamplerPrecision precision) {
  for (const NamedSampler& s : kSamplers)
    if (name == s.name) return s.make(precision);
  throw Error("unknown sampler '" + name + "' (known: " + sampler_names() + ")");
}

bool is_sampler_name(const std::string& name) {
  for (const NamedSampler& s : kSamplers)
    if (name == s.name) return true;
  return false;
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
  for (int i = 0; i < steps; ++i) {
    x = sampler.step(x, schedule[size_t(i)], schedule[size_t(i) + 1], first_step + i, velocity);
    if (after_step && !after_step(first_step + i, first_step + steps, x)) return Tensor();
  }
  return x;
}

}  // namespace chroma::sampling

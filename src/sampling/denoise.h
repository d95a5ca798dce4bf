// The denoising loop and the sampler objects it runs (chroma-spec.md §4): a sampler integrates the
// flow ODE dx/dt = v(x, t) from the first to the last time of a schedule slice, calling the
// velocity function as often as its method needs (Euler once per step, Heun twice). Each sampler
// owns its precision rules (sampler.h): how its state and the model's view of t are rounded.
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

class Sampler {
 public:
  explicit Sampler(SamplerPrecision precision) : precision_(precision) {}
  virtual ~Sampler() = default;
  virtual const char* name() const = 0;
  SamplerPrecision precision() const { return precision_; }
  // The state as this sampler keeps it (e.g. the initial noise rounded to bf16).
  Tensor prepare(const Tensor& x) const { return round_state(x, precision_); }
  // One step of the schedule from t to t_next (float32 schedule values) at schedule index `step`.
  virtual Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity) const = 0;

 protected:
  SamplerPrecision precision_;
};

// Euler (spec §4.1): x + (t_next − t)·v(x, t), the model seeing t in the sampler's precision and dt
// taken from the float32 schedule (flow's denoise_cfg; sampler.h euler_step).
class EulerSampler final : public Sampler {
 public:
  using Sampler::Sampler;
  const char* name() const override { return "euler"; }
  Tensor step(const Tensor& x, float t, float t_next, int step, const VelocityFn& velocity) const override;
};

// The samplers by name; throws chroma::Error for an unknown name.
std::unique_ptr<Sampler> make_sampler(const std::string& name, SamplerPrecision precision);
bool is_sampler_name(const std::string& name);
std::string sampler_names();  // "euler", comma-separated

// Integrates from schedule.front() to schedule.back() (schedule.size() − 1 steps, times
// decreasing); `first_step` is the index of schedule[0] in the full schedule (img2img starts
// mid-schedule). Returns the final state, or an empty tensor when the hook stopped the loop.
Tensor denoise(const Sampler& sampler, const Tensor& x, std::span<const float> schedule, const VelocityFn& velocity,
               const StepHook& after_step = {}, int first_step = 0);

}  // namespace chroma::sampling

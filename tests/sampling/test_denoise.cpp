// The denoising loop and the Euler sampler against exact math: the Euler recurrence on a linear
// velocity field, its first order of convergence against the closed-form solution, and the loop's
// contract (schedule indices, the model's view of t, hooks that change the state or stop).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "sampling/denoise.h"
#include "tensor/error.h"

namespace chroma::sampling {
namespace {

// dx/dt = λ·x: from t = 1 to t = 0 the solution is x(0) = x(1)·e^(−λ).
VelocityFn linear_field(double lambda) {
  return [lambda](const Tensor& x, float, int) {
    Tensor v = x;
    for (float& e : v.values()) e = float(lambda * double(e));
    return v;
  };
}

std::vector<float> uniform_schedule(int steps) {
  std::vector<float> ts(size_t(steps) + 1);
  for (int i = 0; i <= steps; ++i) ts[size_t(i)] = 1.0f - float(i) / float(steps);
  return ts;
}

TEST(Euler, FollowsItsRecurrenceOnALinearField) {
  // x_{i+1} = x_i + (t_{i+1} − t_i)·λ·x_i, i.e. x_N = x_0 · Π (1 + λ·dt_i), worked out in double.
  const double lambda = 0.7;
  const std::vector<float> ts = {1.0f, 0.826064f, 0.612866f, 0.345419f, 0.0f};
  const Tensor x0({1, 2, 1, 2}, {1.0f, -2.0f, 0.5f, 3.0f});
  const Tensor x = denoise(EulerSampler(SamplerPrecision::F32), x0, ts, linear_field(lambda));
  double factor = 1;
  for (size_t i = 0; i + 1 < ts.size(); ++i) factor *= 1 + lambda * double(ts[i + 1] - ts[i]);
  for (size_t i = 0; i < x0.values().size(); ++i)
    EXPECT_NEAR(x.values()[i], double(x0.values()[i]) * factor, 1e-6 * std::abs(double(x0.values()[i]))) << i;
}

TEST(Euler, ConvergesAtFirstOrder) {
  // Halving the step halves the global error of a first-order method: e(N) / e(2N) → 2.
  const double lambda = 1.0, exact = std::exp(-lambda);
  auto error = [&](int steps) {
    const Tensor x = denoise(EulerSampler(SamplerPrecision::F32), Tensor({1}, {1.0f}), uniform_schedule(steps),
                             linear_field(lambda));
    return std::abs(double(x.values()[0]) - exact);
  };
  const double ratio = error(64) / error(128);
  EXPECT_NEAR(ratio, 2.0, 0.05) << "e(64) = " << error(64) << ", e(128) = " << error(128);
}

TEST(Denoise, PassesScheduleIndicesAndTheSamplersViewOfT) {
  // A slice of a 4-step schedule starting at index 1 (img2img's mid-schedule start); the bf16
  // sampler shows the model bf16(t): 0.826064 → 0.824219 (reference case e, step 1).
  const std::vector<float> slice = {0.826064f, 0.612866f, 0.0f};
  std::vector<int> steps;
  std::vector<float> times;
  const VelocityFn v = [&](const Tensor& x, float t, int step) {
    steps.push_back(step);
    times.push_back(t);
    return Tensor(x.shape);
  };
  std::vector<std::pair<int, int>> hooks;
  denoise(EulerSampler(SamplerPrecision::BF16), Tensor({1}, {0.5f}), slice, v,
          [&](int step, int total, Tensor&) {
            hooks.push_back({step, total});
            return true;
          },
          /*first_step=*/1);
  EXPECT_EQ(steps, (std::vector<int>{1, 2}));
  EXPECT_EQ(times, (std::vector<float>{0.82421875f, 0.61328125f}));
  EXPECT_EQ(hooks, (std::vector<std::pair<int, int>>{{1, 3}, {2, 3}}));
}

TEST(Denoise, HookMayChangeTheStateOrStop) {
  // v = 0 keeps the state; the hook adds 1 after every step (as a mask blend would change it).
  const VelocityFn zero = [](const Tensor& x, float, int) { return Tensor(x.shape); };
  int calls = 0;
  const VelocityFn counted = [&](const Tensor& x, float t, int s) {
    ++calls;
    return zero(x, t, s);
  };
  const Tensor x = denoise(EulerSampler(SamplerPrecision::F32), Tensor({1}, {0.0f}), uniform_schedule(3), counted,
                           [](int, int, Tensor& state) {
                             state.values()[0] += 1.0f;
                             return true;
                           });
  EXPECT_EQ(x.to_vector(), std::vector<float>{3.0f});
  calls = 0;
  const Tensor stopped = denoise(EulerSampler(SamplerPrecision::F32), Tensor({1}, {0.0f}), uniform_schedule(3), counted,
                                 [](int step, int, Tensor&) { return step < 1; });
  EXPECT_EQ(stopped.numel(), 0) << "a stopped loop returns no state";
  EXPECT_EQ(calls, 2) << "the loop stops right after the step whose hook said so";
}

TEST(Samplers, KnownByName) {
  EXPECT_TRUE(is_sampler_name("euler"));
  EXPECT_FALSE(is_sampler_name("Euler"));
  EXPECT_STREQ(make_sampler("euler", SamplerPrecision::BF16)->name(), "euler");
  EXPECT_EQ(make_sampler("euler", SamplerPrecision::BF16)->precision(), SamplerPrecision::BF16);
  EXPECT_THROW(make_sampler("nope", SamplerPrecision::F32), Error);
  EXPECT_THROW(denoise(EulerSampler(SamplerPrecision::F32), Tensor({1}), std::vector<float>{1.0f}, linear_field(1)),
               Error);
}

}  // namespace
}  // namespace chroma::sampling

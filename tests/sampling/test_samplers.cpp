// The samplers beyond Euler and the schedulers of other front ends (denoise.h, schedule.h) against
// exact math: each ODE sampler's order of convergence on a linear field with a closed-form solution,
// every sampler exact on a point-mass data distribution (whose flow velocity is known), the ancestral
// sampler keeping the flow marginal; the schedulers against their defining formulas and the Beta
// quantile against closed forms.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <vector>

#include "sampling/denoise.h"
#include "sampling/rng.h"
#include "sampling/schedule.h"
#include "tensor/error.h"

namespace chroma::sampling {
namespace {

// dx/dt = λ·x: from t = 1 to t = 0 the solution is x(0) = x(1)·e^(−λ).
VelocityFn linear_field(double lambda, int* calls = nullptr) {
  return [lambda, calls](const Tensor& x, float, int) {
    if (calls) ++*calls;
    Tensor v = x;
    for (float& e : v.values()) e = float(lambda * double(e));
    return v;
  };
}

// Data that is the single point x0: x_t = (1 − t)·x0 + t·ε has velocity ε − x0 = (x − x0)/t exactly.
VelocityFn point_mass_field(const Tensor& x0) {
  return [x0](const Tensor& x, float t, int) {
    Tensor v = x;
    for (size_t i = 0; i < v.values().size(); ++i) v.values()[i] = (x.values()[i] - x0.values()[i]) / t;
    return v;
  };
}

std::vector<float> uniform_schedule(int steps) {
  std::vector<float> ts(size_t(steps) + 1);
  for (int i = 0; i <= steps; ++i) ts[size_t(i)] = 1.0f - float(i) / float(steps);
  return ts;
}

NoiseFn generator_noise(uint64_t seed) {
  auto g = std::make_shared<TorchGenerator>(seed);
  return [g](const Shape& s) { return g->randn(s); };
}

// The error at t = 0.2 of N uniform steps from t = 1 on dx/dt = λ·x (exact: e^(−0.8λ)). The order is
// measured away from t = 0: dpm++2m steps in log t, where steps towards 0 do not shrink with N.
double linear_field_error(const std::string& name, int steps) {
  const double lambda = 2.0;
  std::vector<float> ts(size_t(steps) + 1);
  for (int i = 0; i <= steps; ++i) ts[size_t(i)] = 1.0f - 0.8f * float(i) / float(steps);
  const Tensor x = denoise(*make_sampler(name, SamplerPrecision::F32), Tensor({1}, {1.0f}), ts, linear_field(lambda));
  return std::abs(double(x.values()[0]) - std::exp(-0.8 * lambda));
}

// Halving the step divides the global error by 2^order.
TEST(Samplers, OrderOfConvergence) {
  struct Case {
    const char* name;
    double order;
  };
  for (const Case c : {Case{"euler", 1}, Case{"heun", 2}, Case{"dpm++2m", 2}, Case{"res_multistep", 2}}) {
    const double e32 = linear_field_error(c.name, 32), e64 = linear_field_error(c.name, 64);
    const double measured = std::log2(e32 / e64);
    std::printf("  %-8s e(32) %.3g  e(64) %.3g  order %.3f\n", c.name, e32, e64, measured);
    EXPECT_NEAR(measured, c.order, 0.1) << c.name;
  }
}

// The two noisy DPM-Solver++ samplers without noise (η = 0) are 2nd-order ODE methods. They start
// at t = 0.95: from t = 1 ComfyUI's rules move their first time to 0.9999, an offset that does not
// shrink with the step.
TEST(Samplers, NoiselessDpmSolverSamplersAreSecondOrder) {
  const NoiseFn no_noise = [](const Shape&) -> Tensor { throw Error("no noise expected"); };
  const DpmPP2SAncestralSampler two_s(SamplerPrecision::F32, no_noise, 0.0f);
  const DpmPPSdeSampler sde(SamplerPrecision::F32, no_noise, 0.0f);
  for (const Sampler* sampler : {static_cast<const Sampler*>(&two_s), static_cast<const Sampler*>(&sde)}) {
    auto error = [&](int steps) {
      std::vector<float> ts(size_t(steps) + 1);
      for (int i = 0; i <= steps; ++i) ts[size_t(i)] = 0.95f - 0.75f * float(i) / float(steps);
      const Tensor x = denoise(*sampler, Tensor({1}, {1.0f}), ts, linear_field(2.0));
      return std::abs(double(x.values()[0]) - std::exp(-0.75 * 2.0));
    };
    const double e16 = error(16), e32 = error(32), measured = std::log2(e16 / e32);
    std::printf("  %-9s e(16) %.3g  e(32) %.3g  order %.3f\n", sampler->name(), e16, e32, measured);
    EXPECT_NEAR(measured, 2.0, 0.15) << sampler->name();
  }
}

TEST(Samplers, HeunEvaluatesTwicePerStepButOnceOnTheLast) {
  int calls = 0;
  denoise(HeunSampler(SamplerPrecision::F32), Tensor({1}, {1.0f}), uniform_schedule(5), linear_field(1.0, &calls));
  EXPECT_EQ(calls, 2 * 5 - 1);
  calls = 0;
  denoise(DpmPP2MSampler(SamplerPrecision::F32), Tensor({1}, {1.0f}), uniform_schedule(5), linear_field(1.0, &calls));
  EXPECT_EQ(calls, 5);
}

// Gradient estimation against its recurrence, worked out in double: v̄_0 = v_0, v̄_i = 2·v_i − v_{i−1}.
TEST(Samplers, GradientEstimationFollowsItsRecurrence) {
  const double lambda = 0.9;
  const std::vector<float> ts = {1.0f, 0.7f, 0.45f, 0.2f, 0.0f};
  const Tensor x = denoise(GradientEstimationSampler(SamplerPrecision::F32), Tensor({1}, {1.0f}), ts, linear_field(lambda));
  double want = 1, v_prev = 0;
  for (size_t i = 0; i + 1 < ts.size(); ++i) {
    const double v = lambda * want, v_bar = i == 0 ? v : 2 * v - v_prev;
    want += double(ts[i + 1] - ts[i]) * v_bar;
    v_prev = v;
  }
  EXPECT_NEAR(x.values()[0], want, 1e-6);
}

// With point-mass data every sampler reaches x0 (the field's x0 prediction is x0 at every step), and
// the ODE samplers stay on the straight path (1 − t)·x0 + t·ε.
TEST(Samplers, PointMassDataIsReachedExactly) {
  const Tensor x0({1, 16, 2, 2}, std::vector<float>(64, 0.0f));
  Tensor target = x0;
  for (size_t i = 0; i < target.values().size(); ++i) target.values()[i] = 0.25f * float(int(i % 9) - 4);
  const Tensor eps = torch_randn(3, {1, 16, 2, 2});
  const std::vector<float> ts = {1.0f, 0.9f, 0.7f, 0.45f, 0.2f, 0.0f};
  for (const char* name :
       {"euler", "heun", "dpm++2m", "res_multistep", "gradient_estimation", "euler_a", "dpm++2s_a", "dpm++sde"}) {
    const auto sampler = make_sampler(name, SamplerPrecision::F32, generator_noise(5));
    const StepHook on_path = [&](int step, int, Tensor& x) {
      if (is_ancestral(name)) return true;  // stochastic path, checked below
      const float t = ts[size_t(step) + 1];
      for (size_t i = 0; i < x.values().size(); ++i)
        EXPECT_NEAR(x.values()[i], (1 - t) * target.values()[i] + t * eps.values()[i], 2e-6) << name << " step " << step;
      return true;
    };
    const Tensor x = denoise(*sampler, eps, ts, point_mass_field(target), on_path);
    for (size_t i = 0; i < x.values().size(); ++i) EXPECT_NEAR(x.values()[i], target.values()[i], 2e-6) << name << " " << i;
  }
}

// The noisy samplers keep the flow marginal: after each step x = (1 − t)·x0 + t·z with z standard
// normal (the renoise coefficients are chosen for that), so over 64k values z has mean 0 and variance 1.
TEST(Samplers, NoisySamplersKeepTheFlowMarginal) {
  const Shape shape = {1, 16, 64, 64};
  Tensor target(shape);
  for (size_t i = 0; i < target.values().size(); ++i) target.values()[i] = std::sin(0.01f * float(i));
  const std::vector<float> ts = {1.0f, 0.8f, 0.55f, 0.3f, 0.1f, 0.0f};
  for (const char* name : {"euler_a", "dpm++2s_a", "dpm++sde"}) {
  SCOPED_TRACE(name);
  const auto sampler = make_sampler(name, SamplerPrecision::F32, generator_noise(11));
  const StepHook check = [&](int step, int, Tensor& x) {
    const double t = ts[size_t(step) + 1];
    if (t == 0) return true;
    double sum = 0, sq = 0;
    for (size_t i = 0; i < x.values().size(); ++i) {
      const double z = (x.values()[i] - (1 - t) * target.values()[i]) / t;
      sum += z;
      sq += z * z;
    }
    const double n = double(x.values().size()), mean = sum / n, var = sq / n - mean * mean;
    EXPECT_NEAR(mean, 0.0, 0.02) << "step " << step;
    EXPECT_NEAR(var, 1.0, 0.03) << "step " << step;
    return true;
  };
  const Tensor x = denoise(*sampler, torch_randn(10, shape), ts, point_mass_field(target), check);
  for (size_t i = 0; i < x.values().size(); i += 997) EXPECT_NEAR(x.values()[i], target.values()[i], 1e-5) << i;
  }
}

// dpm++sde's two noises in a step are increments of one Brownian path: W(t_1) − W(t) over [t_1, t] and
// W(t_next) − W(t) over [t_next, t] ⊃ [t_1, t], each divided by the square root of its length. With
// point-mass data its last noise alone reaches x, so x = (1 − t_next)·x0 + α·(σ_down·z + σ_up·n₂)
// (point_mass: D = x0 everywhere) with n₂ = √(a/(a+b))·n_a + √(b/(a+b))·n_b, a = t − t_1, b = t_1 − t_next,
// t_1 the λ-midpoint, λ = log((1 − t)/t).
TEST(Samplers, DpmSdeNoisesAreIncrementsOfOneBrownianPath) {
  const Tensor x0({1}, {0.25f}), eps({1}, {0.5f});
  std::vector<float> draws = {1.5f, -0.75f};
  size_t drawn = 0;
  const NoiseFn noise = [&](const Shape& s) { return Tensor(s, {draws.at(drawn++)}); };
  const float t = 0.6f, t_next = 0.3f;
  const Tensor x_t({1}, {(1 - t) * x0.values()[0] + t * eps.values()[0]});
  StepHistory history;
  const Tensor x = DpmPPSdeSampler(SamplerPrecision::F32, noise).step(x_t, t, t_next, 0, point_mass_field(x0), history);
  EXPECT_EQ(drawn, 2u);
  const double lt = std::log((1.0 - t) / t), ln = std::log((1.0 - t_next) / t_next);
  const double t1 = 1.0 / (std::exp(0.5 * (lt + ln)) + 1.0), a = t - t1, b = t1 - t_next;
  const double n2 = std::sqrt(a / (a + b)) * 1.5 + std::sqrt(b / (a + b)) * -0.75;
  // k-diffusion's ancestral split of the VE sigmas s = t/(1 − t) → s_next (η = 1).
  const double s = t / (1.0 - t), sn = t_next / (1.0 - t_next);
  const double up = std::sqrt(sn * sn * (s * s - sn * sn) / (s * s)), down = std::sqrt(sn * sn - up * up);
  const double z = eps.values()[0];  // x_t = (1 − t)·(x0 + s·z)
  const double want = (1.0 - t_next) * (x0.values()[0] + down * z + up * n2);
  EXPECT_NEAR(x.values()[0], want, 1e-6);
}

// η = 0 takes no noise and is Euler (up to float32 rounding); the noise comes from the generator.
TEST(Samplers, EulerAncestralWithoutNoiseIsEuler) {
  const Tensor x0 = torch_randn(1, {1, 16, 2, 2});
  const std::vector<float> ts = uniform_schedule(6);
  const NoiseFn no_noise = [](const Shape&) -> Tensor { throw Error("no noise expected"); };
  const Tensor a = denoise(EulerAncestralSampler(SamplerPrecision::F32, no_noise, 0.0f), x0, ts, linear_field(0.8));
  const Tensor e = denoise(EulerSampler(SamplerPrecision::F32), x0, ts, linear_field(0.8));
  for (size_t i = 0; i < a.values().size(); ++i) EXPECT_NEAR(a.values()[i], e.values()[i], 1e-6) << i;
  EXPECT_THROW(make_sampler("euler_a", SamplerPrecision::F32), Error);  // no noise source
  EXPECT_TRUE(is_ancestral("euler_a"));
  EXPECT_FALSE(is_ancestral("dpm++2m"));
}

// Successive draws continue PyTorch's stream: two [32] draws are one [64] draw split (32 is a whole
// number of Box–Muller blocks, so the blocks line up).
TEST(TorchGenerator, SuccessiveDrawsContinueTheStream) {
  TorchGenerator g(7);
  const Tensor a = g.randn({32}), b = g.randn({2, 16});
  const Tensor whole = torch_randn(7, {64});
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_EQ(a.values()[i], whole.values()[i]) << i;
    EXPECT_EQ(b.values()[i], whole.values()[32 + i]) << i;
  }
}

// ---- schedulers ----------------------------------------------------------------------------------

std::vector<float> schedule(Scheduler s, int steps, bool shift = false, double a = 0.6, double b = 0.6,
                            int64_t tokens = 4096) {
  ScheduleOptions o;
  o.scheduler = s;
  o.steps = steps;
  o.shift = shift;
  o.beta_alpha = a;
  o.beta_beta = b;
  o.image_seq_len = tokens;
  return make_schedule(o);
}

TEST(Schedulers, BetaQuantileMatchesClosedForms) {
  for (double p : {0.0, 0.1, 0.25, 0.5, 0.8, 0.999, 1.0}) {
    EXPECT_NEAR(beta_ppf(p, 1, 1), p, 1e-14) << p;                                          // uniform
    EXPECT_NEAR(beta_ppf(p, 2, 1), std::sqrt(p), 1e-14) << p;                               // I_x = x²
    EXPECT_NEAR(beta_ppf(p, 1, 3), 1 - std::cbrt(1 - p), 1e-14) << p;                       // I_x = 1 − (1 − x)³
    EXPECT_NEAR(beta_ppf(p, 0.5, 0.5), std::pow(std::sin(std::numbers::pi * p / 2), 2), 1e-12) << p;  // arcsine
    EXPECT_NEAR(beta_ppf(p, 0.6, 0.6) + beta_ppf(1 - p, 0.6, 0.6), 1.0, 1e-12) << p;       // symmetric
  }
}

TEST(Schedulers, SimplePicksEvenlyFromTheTable) {
  // No shift: σ_k = k/1000; 4 steps take k = 1000, 750, 500, 250.
  EXPECT_EQ(schedule(Scheduler::Simple, 4), (std::vector<float>{1.0f, 0.75f, 0.5f, 0.25f, 0.0f}));
  // With the author's shift the table is the author's time_shift, so 4 simple steps land on the
  // author's 4-step schedule (spec §4.2: mu 1.15 → 1, 0.904531, 0.759511, 0.512844, 0).
  const std::vector<float> shifted = schedule(Scheduler::Simple, 4, true);
  const std::vector<float> author = flow_schedule(4, 4096, true);
  ASSERT_EQ(shifted.size(), author.size());
  for (size_t i = 0; i < author.size(); ++i) EXPECT_NEAR(shifted[i], author[i], 1e-6) << i;
  EXPECT_NEAR(author[1], 0.904531f, 1e-6);
  // 3 steps: stride 333.33…, k = 1000, 667 (1000 − 333), 334 (1000 − 666).
  EXPECT_EQ(schedule(Scheduler::Simple, 3), (std::vector<float>{1.0f, 0.667f, 0.334f, 0.0f}));
}

TEST(Schedulers, BetaUsesTheQuantileOnTheTable) {
  // α = β = 1: the quantile is p itself; index rint(p·999) (half to even: 499.5 → 500), σ = (index + 1)/1000.
  EXPECT_EQ(schedule(Scheduler::Beta, 4, false, 1, 1), (std::vector<float>{1.0f, 0.75f, 0.501f, 0.251f, 0.0f}));
  // α = β = 1/2: the quantile is sin²(πp/2).
  const std::vector<float> arcsine = schedule(Scheduler::Beta, 5, false, 0.5, 0.5);
  ASSERT_EQ(arcsine.size(), 6u);
  for (int i = 0; i < 5; ++i) {
    const double p = 1.0 - i / 5.0, q = std::pow(std::sin(std::numbers::pi * p / 2), 2);
    EXPECT_FLOAT_EQ(arcsine[size_t(i)], float((std::nearbyint(q * 999) + 1) / 1000)) << i;
  }
  // Many steps: repeated table indices are dropped (ComfyUI's rule), the times stay strictly decreasing.
  const std::vector<float> many = schedule(Scheduler::Beta, 200);
  EXPECT_LT(many.size(), 201u);
  for (size_t i = 0; i + 1 < many.size(); ++i) EXPECT_GT(many[i], many[i + 1]) << i;
  EXPECT_THROW(schedule(Scheduler::Beta, 4, false, 0, 0.6), Error);
  EXPECT_THROW(schedule(Scheduler::Beta, 4, false, 0.6, 101), Error);
  EXPECT_THROW(schedule(Scheduler::Beta, 4, false, std::nan(""), 0.6), Error);
}

TEST(Schedulers, KarrasAndExponentialSpanTheTable) {
  // No shift: σmin = 0.001, σmax = 1.
  const std::vector<float> k = schedule(Scheduler::Karras, 4);
  ASSERT_EQ(k.size(), 5u);
  const double lo = std::pow(0.001, 1 / 7.0);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(k[size_t(i)], float(std::pow(1 + i / 3.0 * (lo - 1), 7))) << i;
  EXPECT_FLOAT_EQ(k[3], 0.001f);
  EXPECT_EQ(k[4], 0.0f);
  // Exponential: a constant ratio (σmin/σmax)^(1/(n−1)) from 1 to 0.001.
  const std::vector<float> e = schedule(Scheduler::Exponential, 4);
  ASSERT_EQ(e.size(), 5u);
  EXPECT_FLOAT_EQ(e[0], 1.0f);
  for (int i = 1; i < 4; ++i) EXPECT_NEAR(e[size_t(i)] / e[size_t(i - 1)], 0.1, 1e-6) << i;
  EXPECT_EQ(e[4], 0.0f);
}

TEST(Schedulers, SigmoidOffsetResamplesTheTableAlongALogistic) {
  // 5 steps, no shift (σ_k = k/1000), k = 1, c = ½: x = i/5, s(x) = (1 + tanh((8x − 4)/2))/2; the
  // normalised logistic S gives 1 − S = 1, .932381, .697065, .302935, .067619, 0, indices
  // rint(·999) = 999, 931, 696, 303, 68, 0, and σ = (index + 1)/1000 with the last one 0.
  const std::vector<float> got = schedule(Scheduler::SigmoidOffset, 5);
  EXPECT_EQ(got, (std::vector<float>{1.0f, 0.932f, 0.697f, 0.304f, 0.069f, 0.0f}));
  auto s = [](double x) { return 0.5 * (1.0 + std::tanh((8.0 * x - 4.0) / 2.0)); };
  for (int i = 0; i < 5; ++i) {
    const double S = (s(i / 5.0) - s(0)) / (s(1) - s(0));
    EXPECT_FLOAT_EQ(got[size_t(i)], float((std::nearbyint((1 - S) * 999) + 1) / 1000)) << i;
  }
  // Many steps: repeats dropped, strictly decreasing, ends with 0.
  const std::vector<float> many = schedule(Scheduler::SigmoidOffset, 400);
  EXPECT_LT(many.size(), 401u);
  for (size_t i = 0; i + 1 < many.size(); ++i) EXPECT_GT(many[i], many[i + 1]) << i;
}

TEST(Schedulers, BongTangentJoinsTwoArctangentStagesAtOneHalf) {
  // 20 steps: n = 22 points, stage 1 is the first ⌊13.2⌋ = 13 (1 → ½), stage 2 the other 9 (½ → 0),
  // slope 0.2·40/22, pivot 13 (stage 2: 0); 12 + 9 = 21 times. Within a stage the affine map of the
  // arctangent cancels: f(x) = end + (start − end)·(atan(−k(x − p)) − atan(−k(L − p)))/(atan(kp) − atan(−k(L − p))).
  const std::vector<float> got = schedule(Scheduler::BongTangent, 20, true, 0.6, 0.6, 1024);
  ASSERT_EQ(got.size(), 21u);
  const double k = 0.2 / (22 / 40.0);
  auto stage = [k](double x, double p, double last, double start, double end) {
    const double lo = std::atan(-k * (last - p)), hi = std::atan(k * p);
    return end + (start - end) * (std::atan(-k * (x - p)) - lo) / (hi - lo);
  };
  for (int x = 0; x < 12; ++x) EXPECT_FLOAT_EQ(got[size_t(x)], float(stage(x, 13, 12, 1.0, 0.5))) << x;
  for (int x = 0; x < 9; ++x) EXPECT_NEAR(got[size_t(12 + x)], float(stage(x, 0, 8, 0.5, 0.0)), 1e-7) << x;
  EXPECT_EQ(got.front(), 1.0f);
  EXPECT_FLOAT_EQ(got[12], 0.5f);
  EXPECT_EQ(got.back(), 0.0f);
  for (size_t i = 0; i + 1 < got.size(); ++i) EXPECT_GT(got[i], got[i + 1]) << i;
  // Flow times directly: the shift and the image size do not enter.
  EXPECT_EQ(got, schedule(Scheduler::BongTangent, 20, false));
}

TEST(Schedulers, AuthorIsTheFlowScheduleAndNamesParse) {
  EXPECT_EQ(schedule(Scheduler::Author, 28, true, 0.6, 0.6, 1024), flow_schedule(28, 1024, true));
  EXPECT_EQ(schedule(Scheduler::Author, 7, false), flow_schedule(7, 4096, false));
  Scheduler s;
  for (const char* name : {"author", "simple", "beta", "karras", "exponential", "sigmoid_offset", "bong_tangent"}) {
    ASSERT_TRUE(parse_scheduler(name, &s)) << name;
    EXPECT_STREQ(scheduler_name(s), name);
  }
  EXPECT_FALSE(parse_scheduler("Beta", &s));
  EXPECT_THROW(schedule(Scheduler::Simple, 0), Error);
}

}  // namespace
}  // namespace chroma::sampling

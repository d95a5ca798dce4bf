// The schedulers of other front ends (schedule.h make_schedule): ComfyUI's rules (comfy/samplers.py
// simple_scheduler, beta_scheduler; k-diffusion get_sigmas_karras, get_sigmas_exponential; the
// community's sigmoid_offset node; RES4LYF's bong_tangent) on the flow sigma table, chroma-spec.md §4.2.
#include <boost/math/special_functions/beta.hpp>
#include <algorithm>
#include <cmath>
#include <numbers>

#include "sampling/schedule.h"
#include "tensor/error.h"

namespace chroma::sampling {
namespace {

constexpr int kTableSize = 1000;

struct NamedScheduler {
  Scheduler scheduler;
  const char* name;
};
const NamedScheduler kSchedulers[] = {
    {Scheduler::Author, "author"}, {Scheduler::Simple, "simple"}, {Scheduler::Beta, "beta"},
    {Scheduler::Karras, "karras"}, {Scheduler::Exponential, "exponential"},
    {Scheduler::SigmoidOffset, "sigmoid_offset"}, {Scheduler::BongTangent, "bong_tangent"},
};

// σ_k for k = 1…1000 (index k − 1), increasing.
std::vector<double> sigma_table(const ScheduleOptions& o) {
  const double alpha = o.shift ? std::exp(schedule_mu(o.image_seq_len)) : 1.0;
  std::vector<double> table(kTableSize);
  for (int k = 1; k <= kTableSize; ++k) {
    const double u = double(k) / kTableSize;
    table[size_t(k - 1)] = alpha * u / (1.0 + (alpha - 1.0) * u);
  }
  return table;
}

// start + i/(n − 1)·(end − start), i = 0…n−1 (numpy/torch linspace with both ends; n = 1 gives start).
double lerp_point(double start, double end, int i, int n) {
  return n == 1 ? start : start + (end - start) * double(i) / double(n - 1);
}

// One arctangent stage of bong_tangent: `points` values from `start` to `end` (schedule.h).
std::vector<double> tangent_stage(int points, double slope, double pivot, double start, double end) {
  const double pi = std::numbers::pi;
  auto a = [&](double x) { return ((2.0 / pi) * std::atan(-slope * (x - pivot)) + 1.0) / 2.0; };
  const double a_first = a(0.0), a_last = a(double(points - 1));
  std::vector<double> out;
  for (int x = 0; x < points; ++x) out.push_back((a(double(x)) - a_last) / (a_first - a_last) * (start - end) + end);
  return out;
}

std::vector<double> bong_tangent(int steps) {
  constexpr double kPivot = 0.6, kSlope = 0.2;
  const int n = steps + 2;
  const auto midpoint = int((n * kPivot + n * kPivot) / 2.0), pivot = int(n * kPivot);
  const double slope = kSlope / (n / 40.0);
  const int stage_1 = midpoint, stage_2 = n - midpoint;
  std::vector<double> times = tangent_stage(stage_1, slope, pivot, 1.0, 0.5);
  times.pop_back();  // the first point of stage 2
  for (double t : tangent_stage(stage_2, slope, pivot - stage_1, 0.5, 0.0)) times.push_back(t);
  return times;  // steps + 1 values, the last 0
}

// The logistic of sigmoid_offset (schedule.h) at x in [0, 1].
double offset_sigmoid(double x, double k, double c) {
  const double z = std::clamp(-k * ((8.0 * x - 4.0) + 4.0 * (2.0 * (c - 0.5))), -700.0, 700.0);
  return 1.0 / (1.0 + std::exp(z));
}

}  // namespace

double beta_ppf(double p, double a, double b) { return boost::math::ibeta_inv(a, b, p); }

const char* scheduler_name(Scheduler s) {
  for (const NamedScheduler& n : kSchedulers)
    if (n.scheduler == s) return n.name;
  return "?";
}

bool parse_scheduler(const std::string& name, Scheduler* out) {
  for (const NamedScheduler& n : kSchedulers)
    if (name == n.name) {
      *out = n.scheduler;
      return true;
    }
  return false;
}

std::string scheduler_names() {
  std::string names;
  for (const NamedScheduler& n : kSchedulers) names += (names.empty() ? "" : ", ") + std::string(n.name);
  return names;
}

std::vector<float> make_schedule(const ScheduleOptions& o) {
  if (o.steps < 1) throw Error("schedule: steps must be at least 1, got " + std::to_string(o.steps));
  if (o.scheduler == Scheduler::Author) return flow_schedule(o.steps, o.image_seq_len, o.shift);
  if (o.image_seq_len < 1)
    throw Error("schedule: image_seq_len must be at least 1, got " + std::to_string(o.image_seq_len));
  const std::vector<double> table = sigma_table(o);
  const double sigma_min = table.front(), sigma_max = table.back();
  std::vector<double> sigmas;
  switch (o.scheduler) {
    case Scheduler::Author: break;
    case Scheduler::Simple: {
      const double stride = double(kTableSize) / o.steps;
      for (int i = 0; i < o.steps; ++i) sigmas.push_back(table[size_t(kTableSize - 1 - int64_t(i * stride))]);
      break;
    }
    case Scheduler::Beta: {
      for (double v : {o.beta_alpha, o.beta_beta})
        if (!(v > 0.0 && v <= 100.0))
          throw Error("beta scheduler: alpha and beta must be in (0, 100], got " + std::to_string(v));
      int64_t last = -1;
      for (int i = 0; i < o.steps; ++i) {
        const double p = 1.0 - double(i) / o.steps;
        const auto index = int64_t(std::nearbyint(beta_ppf(p, o.beta_alpha, o.beta_beta) * (kTableSize - 1)));
        if (index != last) sigmas.push_back(table[size_t(index)]);
        last = index;
      }
      break;
    }
    case Scheduler::Karras: {
      const double rho = 7.0, min_inv = std::pow(sigma_min, 1.0 / rho), max_inv = std::pow(sigma_max, 1.0 / rho);
      for (int i = 0; i < o.steps; ++i) sigmas.push_back(std::pow(lerp_point(max_inv, min_inv, i, o.steps), rho));
      break;
    }
    case Scheduler::Exponential:
      for (int i = 0; i < o.steps; ++i)
        sigmas.push_back(std::exp(lerp_point(std::log(sigma_max), std::log(sigma_min), i, o.steps)));
      break;
    case Scheduler::SigmoidOffset: {
      constexpr double k = 1.0, c = 0.5;
      const double s0 = offset_sigmoid(0.0, k, c), s1 = offset_sigmoid(1.0, k, c);
      int64_t last = -1;
      for (int i = 0; i <= o.steps; ++i) {
        const double x = i == o.steps ? 1.0 : i * (1.0 / o.steps);  // numpy's linspace
        const double normalized = (offset_sigmoid(x, k, c) - s0) / (s1 - s0);
        const auto index = std::clamp<int64_t>(int64_t(std::nearbyint((1.0 - normalized) * (kTableSize - 1))), 0,
                                                kTableSize - 1);
        if (index != last || sigmas.empty()) sigmas.push_back(table[size_t(index)]);
        last = index;
      }
      if (sigmas.back() <= sigma_min) sigmas.pop_back();  // replaced by the final 0 below
      break;
    }
    case Scheduler::BongTangent: {
      sigmas = bong_tangent(o.steps);
      sigmas.pop_back();  // its 0
      break;
    }
  }
  std::vector<float> out(sigmas.begin(), sigmas.end());
  out.push_back(0.0f);
  return out;
}

}  // namespace chroma::sampling

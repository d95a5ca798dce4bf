#include "pipeline/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "backend/backend.h"
#include "sampling/sampler.h"

namespace chroma::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
using ops::profile::OpClass;

double in_gib(size_t bytes) { return double(bytes) / (1024.0 * 1024.0 * 1024.0); }

std::string format(const char* fmt, auto... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

double phase_seconds(const BenchResult& r, const std::string& name) {
  for (const PhaseStats& p : r.phases)
    if (p.name == name) return p.seconds;
  return 0;
}

ProcessCounters phase_used(const BenchResult& r, const std::string& name) {
  for (const PhaseStats& p : r.phases)
    if (p.name == name) return p.used;
  return {};
}

// CPU time over wall time, in percent: 200 % = both cores of a 2-core machine busy the whole time.
double cpu_percent(const ProcessCounters& used, double seconds) {
  return seconds > 0 ? 100.0 * used.cpu_seconds / seconds : 0.0;
}

}  // namespace

BenchResult run_benchmark(const PipelineConfig& config, const GenerationRequest& request,
                          const ProgressCallback& progress) {
  BenchResult r;
  r.request = request;
  std::vector<Clock::time_point> step_ends;
  std::vector<ProcessCounters> step_counters;
  GenerationResult g;
  ops::profile::Profiler profiler;
  const Clock::time_point start = Clock::now();
  {
    Pipeline pipeline(config);
    r.phases = pipeline.open_phases();
    r.threads = pipeline.threads();
    r.compute = compute_name(pipeline.compute());
    RunHooks hooks;
    hooks.profiler = &profiler;
    hooks.progress = [&](const Progress& p) {
      if (p.phase == Progress::Phase::Denoising && p.step > 0) {
        step_ends.push_back(Clock::now());
        step_counters.push_back(ProcessCounters::now());
      }
      return !progress || progress(p);
    };
    g = pipeline.generate(request, hooks);
    r.ops = profiler.totals();
  }
  r.total_seconds = std::chrono::duration<double>(Clock::now() - start).count();
  r.phases.insert(r.phases.end(), g.phases.begin(), g.phases.end());

  // The callback marks each step's end; the first step starts with the denoising phase, so its time
  // is what the phase has left after the later steps.
  double later = 0;
  ProcessCounters later_used;
  for (size_t i = 1; i < step_ends.size(); ++i) {
    r.step_seconds.push_back(std::chrono::duration<double>(step_ends[i] - step_ends[i - 1]).count());
    r.step_used.push_back(step_counters[i] - step_counters[i - 1]);
    later += r.step_seconds.back();
    later_used.cpu_seconds += r.step_used.back().cpu_seconds;
    later_used.minor_faults += r.step_used.back().minor_faults;
  }
  if (!step_ends.empty()) {
    r.step_seconds.insert(r.step_seconds.begin(), phase_seconds(r, "denoising") - later);
    r.step_used.insert(r.step_used.begin(), phase_used(r, "denoising") - later_used);
  }
  for (int i = 0; i < int(r.step_seconds.size()); ++i)
    r.step_cfg.push_back(sampling::uses_cfg(i, request.skip_cfg_steps, request.cfg));
  return r;
}

std::string bench_table(const BenchResult& r) {
  const GenerationRequest& o = r.request;
  std::string s = format("chromacpp bench: %dx%d, %d steps, cfg %g, %d threads, %s compute\n", o.width, o.height,
                         o.steps, double(o.cfg), r.threads, r.compute.c_str());
  // CPU % tells how much of the machine the run got (on a shared machine, less than threads × 100);
  // page faults count fresh memory mapped by the kernel (≈ 0 once a step loop reuses its memory).
  s += format("%-16s %10s %7s %12s %14s\n", "phase", "seconds", "CPU %", "page faults", "peak RSS GiB");
  size_t peak = 0;
  ProcessCounters total;
  for (const PhaseStats& p : r.phases) {
    s += format("%-16s %10.2f %7.0f %12lld %14.2f\n", p.name.c_str(), p.seconds, cpu_percent(p.used, p.seconds),
                (long long)p.used.minor_faults, in_gib(p.peak_rss_bytes));
    peak = std::max(peak, p.peak_rss_bytes);
    total.cpu_seconds += p.used.cpu_seconds;
    total.minor_faults += p.used.minor_faults;
  }
  s += format("%-16s %10.2f %7.0f %12lld %14.2f\n", "total", r.total_seconds, cpu_percent(total, r.total_seconds),
              (long long)total.minor_faults, in_gib(peak));
  for (size_t i = 0; i < r.step_seconds.size(); ++i)
    s += format("  step %-9zu %10.2f %7.0f %12lld   %s\n", i + 1, r.step_seconds[i],
                cpu_percent(r.step_used[i], r.step_seconds[i]), (long long)r.step_used[i].minor_faults,
                r.step_cfg[i] ? "(pos + neg, packed)" : "(pos)");

  // Per phase: the op classes, then the individual ops (slowest first).
  auto row = [&](const std::string& section, const std::string& what, const ops::profile::OpTotals& t, double phase) {
    const std::string gflops = t.flops > 0 ? format("%9.1f", t.flops / t.seconds * 1e-9) : format("%9s", "-");
    const std::string gbs = t.bytes > 0 ? format("%8.1f", t.bytes / t.seconds * 1e-9) : format("%8s", "-");
    const std::string share = phase > 0 ? format("%6.1f%%", 100.0 * t.seconds / phase) : format("%7s", "-");
    s += format("%-14s %-20s %7lld %10.2f %s %s %s\n", section.c_str(), what.c_str(), (long long)t.calls, t.seconds,
                share.c_str(), gflops.c_str(), gbs.c_str());
  };
  const char* header = "%-14s %-20s %7s %10s %7s %9s %8s\n";
  s += "\n" + format(header, "phase", "op class", "calls", "seconds", "share", "GFLOP/s", "GB/s");
  for (const auto& [section, totals] : r.ops)
    for (size_t c = 0; c < totals.classes.size(); ++c)
      if (totals.classes[c].calls) row(section, op_class_name(OpClass(c)), totals.classes[c], phase_seconds(r, section));
  s += "\n" + format(header, "phase", "op", "calls", "seconds", "share", "GFLOP/s", "GB/s");
  for (const auto& [section, totals] : r.ops) {
    std::vector<std::pair<std::string, ops::profile::OpTotals>> by_time(totals.ops.begin(), totals.ops.end());
    std::sort(by_time.begin(), by_time.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    for (const auto& [op, t] : by_time) row(section, op, t, phase_seconds(r, section));
  }
  return s;
}

nlohmann::json bench_json(const BenchResult& r) {
  const GenerationRequest& o = r.request;
  nlohmann::json j = {{"width", o.width},   {"height", o.height},   {"steps", o.steps},
                      {"cfg", o.cfg},       {"threads", r.threads}, {"compute", r.compute}, {"total_seconds", r.total_seconds},
                      {"step_seconds", r.step_seconds}, {"step_cfg", r.step_cfg}};
  for (const ProcessCounters& u : r.step_used) {
    j["step_cpu_seconds"].push_back(u.cpu_seconds);
    j["step_minor_faults"].push_back(u.minor_faults);
  }
  for (const PhaseStats& p : r.phases)
    j["phases"].push_back({{"name", p.name},
                           {"seconds", p.seconds},
                           {"cpu_seconds", p.used.cpu_seconds},
                           {"minor_faults", p.used.minor_faults},
                           {"peak_rss_bytes", p.peak_rss_bytes}});
  auto totals_json = [](const ops::profile::OpTotals& t) {
    return nlohmann::json{{"calls", t.calls},
                          {"seconds", t.seconds},
                          {"flops", t.flops},
                          {"bytes", t.bytes},
                          {"gflops_per_s", t.seconds > 0 ? t.flops / t.seconds * 1e-9 : 0.0}};
  };
  for (const auto& [section, totals] : r.ops) {
    for (size_t c = 0; c < totals.classes.size(); ++c)
      if (totals.classes[c].calls) j["op_classes"][section][op_class_name(OpClass(c))] = totals_json(totals.classes[c]);
    for (const auto& [op, t] : totals.ops) j["ops"][section][op] = totals_json(t);
  }
  return j;
}

}  // namespace chroma::pipeline

// `chromacpp bench`: one full text-to-image run (generate()) with per-phase time and peak RSS,
// per-step denoising time, and per-operator-class time and throughput (backend/op_profile.h).
// docs/PERFORMANCE.md records the results.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/op_profile.h"
#include "pipeline/phase_stats.h"
#include "pipeline/txt2img.h"

namespace chroma::pipeline {

struct BenchResult {
  GenerateOptions options;
  int threads = 0;
  double total_seconds = 0;            // the whole generate() call
  std::vector<PhaseStats> phases;      // load T5, text encoding, load DiT, denoising, load VAE, decoding
  std::vector<double> step_seconds;    // each denoising step
  std::vector<bool> step_cfg;          // whether the step ran the negative prompt too
  std::vector<ProcessCounters> step_used;  // each step's CPU time and page faults
  ops::profile::Profile ops;           // per phase ("text encoding", "denoising", "decoding")
};

// Runs generate() once with op profiling on (it is switched off again afterwards); on_step is
// passed through (progress display).
BenchResult run_benchmark(const ModelFiles& files, const GenerateOptions& options, const StepCallback& on_step = {});

// Human-readable tables: phases, steps, then per phase the op classes (seconds, share, GFLOP/s, GB/s).
std::string bench_table(const BenchResult& r);
nlohmann::json bench_json(const BenchResult& r);

}  // namespace chroma::pipeline

// `chromacpp bench`: opening the models and one full text-to-image run with per-phase time and peak RSS,
// per-step denoising time, and per-operator-class time and throughput (backend/op_profile.h).
// docs/PERFORMANCE.md records the results.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/op_profile.h"
#include "pipeline/phase_stats.h"
#include "pipeline/pipeline.h"

namespace chroma::pipeline {

struct BenchResult {
  GenerationRequest request;
  int threads = 0;
  std::string compute = "f32";         // the large products' arithmetic (--compute)
  double total_seconds = 0;            // opening the models and the whole generate() call
  std::vector<PhaseStats> phases;      // open models, text encoding, denoising, decoding
  std::vector<double> step_seconds;    // each denoising step
  std::vector<bool> step_cfg;          // whether the step ran the negative prompt too
  std::vector<ProcessCounters> step_used;  // each step's CPU time and page faults
  ops::profile::Profile ops;           // per phase ("text encoding", "denoising", "decoding")
};

// Opens a Pipeline for `config` and runs `request` once with op profiling; progress is passed
// through (progress display).
BenchResult run_benchmark(const PipelineConfig& config, const GenerationRequest& request,
                          const ProgressCallback& progress = {});

// Human-readable tables: phases, steps, then per phase the op classes (seconds, share, GFLOP/s, GB/s).
std::string bench_table(const BenchResult& r);
nlohmann::json bench_json(const BenchResult& r);

}  // namespace chroma::pipeline

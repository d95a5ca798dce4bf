// Time and peak resident memory of each phase of a run (loading, text encoding, denoising,
// decoding), for `generate -v` and the benchmark.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace chroma::pipeline {

// What this process has used so far: CPU time of all its threads, and minor page faults (each a
// fresh page the kernel had to map; a loop that reuses its memory takes none).
struct ProcessCounters {
  double cpu_seconds = 0;
  int64_t minor_faults = 0;
  static ProcessCounters now();
  ProcessCounters operator-(const ProcessCounters& earlier) const {
    return {cpu_seconds - earlier.cpu_seconds, minor_faults - earlier.minor_faults};
  }
};

struct PhaseStats {
  std::string name;
  double seconds = 0;
  size_t peak_rss_bytes = 0;  // highest resident set size seen during the phase
  ProcessCounters used;       // CPU time (cpu_seconds / seconds = cores busy) and page faults of the phase
};

// Current and peak resident set size of this process (Linux /proc; 0 where unavailable).
size_t current_rss_bytes();
size_t peak_rss_bytes();
// Resets the kernel's peak-RSS counter to the current RSS (so each phase gets its own peak).
void reset_peak_rss();

// Measures one phase from construction to finish().
class PhaseTimer {
 public:
  PhaseTimer(std::vector<PhaseStats>* out, std::string name);
  ~PhaseTimer() { finish(); }
  void finish();

 private:
  std::vector<PhaseStats>* out_;
  std::string name_;
  std::chrono::steady_clock::time_point start_;
  ProcessCounters start_counters_;
  bool done_ = false;
};

}  // namespace chroma::pipeline

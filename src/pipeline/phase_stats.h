// Time and peak resident memory of each phase of a run (loading, text encoding, denoising,
// decoding), for `generate -v` and the benchmark.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace chroma::pipeline {

struct PhaseStats {
  std::string name;
  double seconds = 0;
  size_t peak_rss_bytes = 0;  // highest resident set size seen during the phase
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
  bool done_ = false;
};

}  // namespace chroma::pipeline

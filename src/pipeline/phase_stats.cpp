#include "pipeline/phase_stats.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace chroma::pipeline {
namespace {
// Reads a "VmRSS:  1234 kB" style field of /proc/self/status.
size_t status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(field);
  while (std::getline(in, line))
    if (line.compare(0, n, field) == 0) return size_t(std::stoull(line.substr(n + 1))) * 1024;
  return 0;
}
}  // namespace

size_t current_rss_bytes() { return status_kb("VmRSS:"); }
size_t peak_rss_bytes() { return status_kb("VmHWM:"); }

ProcessCounters ProcessCounters::now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return double(t.tv_sec) + 1e-6 * double(t.tv_usec); };
  return {sec(u.ru_utime) + sec(u.ru_stime), int64_t(u.ru_minflt)};
}

void reset_peak_rss() {
  // Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0); harmless if not permitted.
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
}

PhaseTimer::PhaseTimer(std::vector<PhaseStats>* out, std::string name)
    : out_(out), name_(std::move(name)), start_(std::chrono::steady_clock::now()), start_counters_(ProcessCounters::now()) {
  reset_peak_rss();
}

void PhaseTimer::finish() {
  if (done_) return;
  done_ = true;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (out_) out_->push_back({name_, s, peak_rss_bytes(), ProcessCounters::now() - start_counters_});
}

}  // namespace chroma::pipeline

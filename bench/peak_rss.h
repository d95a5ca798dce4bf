// Peak resident memory of the calling process so far (VmHWM of /proc/self/status), in GiB; 0 when
// unreadable. For the stand-alone bench programs (the pipeline's own is pipeline/phase_stats.h).
#pragma once
#include <cstdio>

inline double peak_rss_gib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return double(kb) / (1024.0 * 1024.0);
}

// Optional per-operator-class timing for the benchmark (`chromacpp bench`): while a Profiler is bound
// to the calling thread, every call through ops.h adds its wall time, call count and useful work to
// the accumulator of its class under the current section (e.g. "denoising"). Without one (the
// default), an op pays one branch on a thread-local pointer and nothing else.
//
// A profiler is used by one thread at a time: ops are called from the run's thread (kernels
// parallelise inside a call).
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace chroma::ops::profile {

enum class OpClass {
  Linear,       // linear (GEMM)
  Attention,    // attention
  Norm,         // norms, modulate, residual adds, activations, RoPE, upsampling
  Conv,         // conv2d
  DataMovement, // transpose, concat, slice
  Count
};
const char* op_class_name(OpClass c);

struct OpTotals {
  double seconds = 0;
  double flops = 0;   // useful floating-point operations: linear 2·M·N·K, attention 4·Lq·Lk·D per head,
                      // conv 2·O·C·kh·kw·Hout·Wout; 0 for the other classes
  double bytes = 0;   // float32 bytes read + written (norm and data-movement classes)
  int64_t calls = 0;
};
using ClassTotals = std::array<OpTotals, size_t(OpClass::Count)>;
struct SectionTotals {
  ClassTotals classes;
  std::map<std::string, OpTotals> ops;  // the same calls, per op name ("linear", "gelu_tanh", …)
};
using Profile = std::map<std::string, SectionTotals>;  // per section

// One run's accumulators. A run binds its profiler to the thread that calls the ops (Scope); ops on
// a thread without one record nothing.
class Profiler {
 public:
  // Clears every accumulator.
  void reset() { profile_.clear(); }
  // The totals so far, per section.
  const Profile& totals() const { return profile_; }
  void record(OpClass c, const char* op, double seconds, double flops, double bytes);

 private:
  friend class Section;
  Profile profile_;
  std::string section_ = "other";
};

// Binds `profiler` (may be null: profiling off) to the calling thread for the lifetime of the
// object, restoring the previous binding after.
class Scope {
 public:
  explicit Scope(Profiler* profiler);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Profiler* saved_;
};

// Whether a profiler is bound to the calling thread.
bool enabled();

// Ops from now on count under `name` (default section: "other") in the calling thread's profiler,
// for the lifetime of the object; then the previous section is restored. No-op without a profiler.
class Section {
 public:
  explicit Section(const std::string& name);
  ~Section();
  Section(const Section&) = delete;
  Section& operator=(const Section&) = delete;

 private:
  Profiler* profiler_;
  std::string saved_;
};

// Adds one call of op `op` (a string literal) of class c to the calling thread's profiler; used by ops.cpp.
void record(OpClass c, const char* op, double seconds, double flops, double bytes);

}  // namespace chroma::ops::profile

// Optional per-operator-class timing for the benchmark (`chromacpp bench`): while enabled, every
// call through ops.h adds its wall time, call count and useful work to the accumulator of its class
// under the current section (e.g. "denoising"). Disabled (the default), an op pays one branch on a
// global flag and nothing else.
//
// Not thread safe: ops are called from one thread (kernels parallelise inside a call).
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

void enable(bool on);
bool enabled();
// Clears every accumulator.
void reset();
// The totals so far, per section.
Profile snapshot();

// Ops from now on count under `name` (default section: "other").
void set_section(const std::string& name);

// Sets the section for the lifetime of the object, then restores the previous one.
class Section {
 public:
  explicit Section(const std::string& name);
  ~Section();
  Section(const Section&) = delete;
  Section& operator=(const Section&) = delete;

 private:
  std::string saved_;
};

// Adds one call of op `op` (a string literal) of class c; used by ops.cpp.
void record(OpClass c, const char* op, double seconds, double flops, double bytes);

}  // namespace chroma::ops::profile

#include "backend/op_profile.h"

namespace chroma::ops::profile {
namespace {
thread_local Profiler* t_profiler = nullptr;
}  // namespace

const char* op_class_name(OpClass c) {
  switch (c) {
    case OpClass::Linear: return "linear (GEMM)";
    case OpClass::Attention: return "attention";
    case OpClass::Norm: return "norms + elementwise";
    case OpClass::Conv: return "conv2d";
    case OpClass::DataMovement: return "data movement";
    case OpClass::Count: break;
  }
  return "?";
}

Scope::Scope(Profiler* profiler) : saved_(t_profiler) { t_profiler = profiler; }
Scope::~Scope() { t_profiler = saved_; }
bool enabled() { return t_profiler != nullptr; }

Section::Section(const std::string& name) : profiler_(t_profiler) {
  if (!profiler_) return;
  saved_ = profiler_->section_;
  profiler_->section_ = name;
}
Section::~Section() {
  if (profiler_) profiler_->section_ = saved_;
}

void Profiler::record(OpClass c, const char* op, double seconds, double flops, double bytes) {
  SectionTotals& section = profile_[section_];
  for (OpTotals* t : {&section.classes[size_t(c)], &section.ops[op]}) {
    t->seconds += seconds;
    t->flops += flops;
    t->bytes += bytes;
    ++t->calls;
  }
}

void record(OpClass c, const char* op, double seconds, double flops, double bytes) {
  if (t_profiler) t_profiler->record(c, op, seconds, flops, bytes);
}

}  // namespace chroma::ops::profile

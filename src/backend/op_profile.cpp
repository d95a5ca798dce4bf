#include "backend/op_profile.h"

namespace chroma::ops::profile {
namespace {
bool g_enabled = false;
std::string g_section = "other";
Profile g_profile;
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

void enable(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }
void reset() { g_profile.clear(); }
Profile snapshot() { return g_profile; }
void set_section(const std::string& name) { g_section = name; }

Section::Section(const std::string& name) : saved_(g_section) { g_section = name; }
Section::~Section() { g_section = saved_; }

void record(OpClass c, const char* op, double seconds, double flops, double bytes) {
  SectionTotals& section = g_profile[g_section];
  for (OpTotals* t : {&section.classes[size_t(c)], &section.ops[op]}) {
    t->seconds += seconds;
    t->flops += flops;
    t->bytes += bytes;
    ++t->calls;
  }
}

}  // namespace chroma::ops::profile

#include "tensor/trace.h"

namespace chroma {
namespace {
Tracer* g_tracer = nullptr;
std::string g_prefix;
}  // namespace

void set_tracer(Tracer* tracer) { g_tracer = tracer; }
bool tracing() { return g_tracer != nullptr; }

void trace(const std::string& name, const Tensor& value) {
  if (g_tracer) g_tracer->record(g_prefix + name, value);
}

TracePrefix::TracePrefix(const std::string& prefix) : saved_(g_prefix) { g_prefix = saved_ + prefix; }
TracePrefix::~TracePrefix() { g_prefix = saved_; }

}  // namespace chroma

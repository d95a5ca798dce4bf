#include "tensor/trace.h"

namespace chroma {
namespace {
// Per thread: a run binds its tracer on the thread that runs it (pipeline/run_context.h), so two
// runs on two threads never record into each other's dump.
thread_local Tracer* t_tracer = nullptr;
thread_local std::string t_prefix;
}  // namespace

void set_tracer(Tracer* tracer) { t_tracer = tracer; }
bool tracing() { return t_tracer != nullptr; }

void trace(const std::string& name, const Tensor& value) {
  if (!t_tracer) return;
  Tensor copy;  // tracers read values: a device tensor comes over
  t_tracer->record(t_prefix + name, host_readable(value, copy));
}

TracePrefix::TracePrefix(const std::string& prefix) : saved_(t_prefix) { t_prefix = saved_ + prefix; }
TracePrefix::~TracePrefix() { t_prefix = saved_; }

TraceBinding::TraceBinding(Tracer* tracer) : saved_tracer_(t_tracer), saved_prefix_(std::move(t_prefix)) {
  t_tracer = tracer;
  t_prefix.clear();
}
TraceBinding::~TraceBinding() {
  t_tracer = saved_tracer_;
  t_prefix = std::move(saved_prefix_);
}

}  // namespace chroma

// Named intermediates ("dump and compare"): model code calls trace("double.3.img", x) where a
// value is computed, llama.cpp-style. Nothing happens unless a Tracer is installed (e.g. by
// `chromacpp generate --dump DIR` or a reference test); then each value is handed to it under
// the current prefix, e.g. "step.2.pos." + "double.3.img".
#pragma once
#include <string>

#include "tensor/tensor.h"

namespace chroma {

class Tracer {
 public:
  virtual ~Tracer() = default;
  virtual void record(const std::string& name, const Tensor& value) = 0;  // value is on the host
};

// Install (or with nullptr remove) the calling thread's tracer. Not owned. The tracer and the
// prefix are per thread: model code traces on the thread that runs it.
void set_tracer(Tracer* tracer);
bool tracing();
// Records `value` under prefix + name if a tracer is installed.
void trace(const std::string& name, const Tensor& value);

// Installs a tracer (if non-null) for the lifetime of the object.
class ScopedTracer {
 public:
  explicit ScopedTracer(Tracer* t) : active_(t != nullptr) { if (active_) set_tracer(t); }
  ~ScopedTracer() { if (active_) set_tracer(nullptr); }
  ScopedTracer(const ScopedTracer&) = delete;
  ScopedTracer& operator=(const ScopedTracer&) = delete;

 private:
  bool active_;
};

// Sets the prefix for the lifetime of the object, restoring the previous one after.
class TracePrefix {
 public:
  explicit TracePrefix(const std::string& prefix);
  ~TracePrefix();
  TracePrefix(const TracePrefix&) = delete;
  TracePrefix& operator=(const TracePrefix&) = delete;

 private:
  std::string saved_;
};

// Replaces the calling thread's tracer (null: none) and prefix ("") for the lifetime of the object,
// restoring both after: a run's own observers, whatever an enclosing scope had installed.
class TraceBinding {
 public:
  explicit TraceBinding(Tracer* tracer);
  ~TraceBinding();
  TraceBinding(const TraceBinding&) = delete;
  TraceBinding& operator=(const TraceBinding&) = delete;

 private:
  Tracer* saved_tracer_;
  std::string saved_prefix_;
};

}  // namespace chroma

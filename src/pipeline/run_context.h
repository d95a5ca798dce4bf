// What a run used to take from process-wide state: its compute backend and worker-thread count, its
// tracer (--dump) and op profiler (bench), and the heap policy. A Pipeline owns one RunContext and
// binds it to the thread that runs each request (Bind), so two pipelines, or a server's worker and
// a command-line run, never record into each other's dump or profile or change each other's
// thread count. Model code is unchanged: trace() and ops reach the bound objects through
// thread-local scopes (tensor/trace.h, backend/backend.h, backend/op_profile.h).
#pragma once
#include <functional>
#include <memory>

#include "backend/backend.h"
#include "backend/op_profile.h"
#include "tensor/trace.h"

namespace chroma::pipeline {

// Makes the compute backend of a run for a compute mode; empty: make_cpu_backend.
using BackendFactory = std::function<std::unique_ptr<Backend>(Compute)>;

class RunContext {
 public:
  // threads: worker threads of this context's ops (0 = all cores). More than kMaxThreadsPerCore per
  // core is refused: it only adds contention, and each thread keeps its own GEMM weight panel.
  // compute: the arithmetic of the large products (backend.h); refused where the CPU lacks it.
  explicit RunContext(int threads = 0, Compute compute = Compute::F32, const BackendFactory& make_backend = {});
  static constexpr int kMaxThreadsPerCore = 8;

  // Which model a phase runs. Under Compute::Auto the text encoder keeps float32 arithmetic on its
  // block-quantized weights (int8 inputs are for the DiT only): T5-XXL's feed-forward activations
  // have outliers large enough that Hugging Face keeps its `wo` projection in float32 even under
  // fp16 (modeling_t5.py, _keep_in_fp32_modules = ["wo"]), and a 32-value int8 block holding one
  // resolves its other values coarsely; T5 is a few seconds of a run (docs/PERFORMANCE.md).
  enum class Stage { Text, Image };
  Backend& backend(Stage stage = Stage::Image) const {
    return stage == Stage::Text && float32_text_ ? *float32_text_ : *backend_;
  }
  int threads() const { return threads_; }  // resolved: never 0
  Compute compute() const { return compute_; }

  // Binds the context to the calling thread for the lifetime of the object; tracer and profiler are
  // this run's observers (either may be null). The heap policy (heap.h) is set for the process: it
  // is the same for every run, so setting it again is harmless.
  class Bind {
   public:
    Bind(const RunContext& context, Tracer* tracer, ops::profile::Profiler* profiler, Stage stage = Stage::Image);

   private:
    BackendScope backend_;
    TraceBinding tracer_;
    ops::profile::Scope profiler_;
  };

 private:
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Backend> float32_text_;  // the text encoder's under Auto; otherwise none (it shares backend_)
  int threads_;
  Compute compute_;
};

}  // namespace chroma::pipeline

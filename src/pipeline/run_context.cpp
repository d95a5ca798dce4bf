#include "pipeline/run_context.h"

#include "pipeline/heap.h"

namespace chroma::pipeline {

RunContext::RunContext(int threads, Compute compute, const BackendFactory& make_backend)
    : backend_(make_backend ? make_backend(compute) : make_cpu_backend(compute)),
      float32_text_(compute != Compute::Auto ? nullptr
                    : make_backend         ? make_backend(Compute::F32)
                                           : make_cpu_backend(Compute::F32)),
      threads_(threads ? threads : available_cores()),
      compute_(compute) {
  check_compute_supported(compute);
  const int cores = available_cores(), most = kMaxThreadsPerCore * cores;
  if (threads < 0 || threads > most)
    throw Error("--threads " + std::to_string(threads) + ": must be from 0 (all cores) to " + std::to_string(most) +
                " (" + std::to_string(kMaxThreadsPerCore) + " per core; this machine has " + std::to_string(cores) +
                "): more threads than cores only contend, and each keeps its own weight panel");
  reuse_freed_activations();  // now, before a server starts the threads that will run requests (heap.h)
}

RunContext::Bind::Bind(const RunContext& context, Tracer* tracer, ops::profile::Profiler* profiler, Stage stage)
    : backend_(context.backend(stage), context.threads()), tracer_(tracer), profiler_(profiler) {
  reuse_freed_activations();
}

}  // namespace chroma::pipeline

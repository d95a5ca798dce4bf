// A stand-in for Pipeline::generate in the server's tests (no models), shared by the queue and HTTP
// tests and by the shared-queue tests.
#pragma once
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/jobs.h"

namespace chroma::server {

using pipeline::GenerationRequest;

// A runner that reports `steps` denoising steps, waiting `step_ms` each, then returns one 8×8 image
// per batch image whose first byte is the request's step count; it honours cancellation as the
// pipeline does (Cancelled at a step boundary).
struct FakeRunner {
  int step_ms = 0;
  std::atomic<int> started{0};
  std::vector<std::string> order;  // prompts in the order run
  std::mutex mutex;

  Runner runner() {
    return [this](const GenerationRequest& r, const pipeline::RunHooks& hooks) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        order.push_back(r.prompt);
      }
      ++started;
      pipeline::Progress p;
      p.phase = pipeline::Progress::Phase::Denoising;
      p.steps = r.steps;
      const Tensor denoised({1, 16, 2, 3});  // zeros: the preview is the bias colour
      for (int i = 0; i <= r.steps; ++i) {
        p.step = i;
        p.denoised = i > 0 ? &denoised : nullptr;
        if (hooks.progress && !hooks.progress(p)) throw pipeline::Cancelled("cancelled at step " + std::to_string(i));
        std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
      }
      if (r.prompt == "fail") throw Error("the model ran out of memory");
      pipeline::GenerationResult result;
      for (int i = 0; i < r.batch_count; ++i) {
        pipeline::GeneratedImage g;
        g.width = g.height = 8;
        g.rgb.assign(8 * 8 * 3, uint8_t(r.steps));
        g.parameters = pipeline::request_to_json(r);
        g.parameters["seed"] = 100 + i;
        result.images.push_back(std::move(g));
      }
      return result;
    };
  }
};

inline GenerationRequest small(const std::string& prompt, int steps = 2) {
  GenerationRequest r;
  r.prompt = prompt;
  r.width = r.height = 64;
  r.steps = steps;
  return r;
}

}  // namespace chroma::server

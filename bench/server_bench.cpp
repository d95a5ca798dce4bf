// What `serve` adds to a generation (docs/PERFORMANCE.md), in one process on one loaded model set:
// the same request through Pipeline::generate plus the PNG encoding (what `generate` does before it
// writes the file) and through POST /v1/images/generations on loopback (PNG, base64, JSON),
// alternating; the time from POST /v1/jobs to the first event of its stream; and how many malformed
// requests per second 10 clients get answered. Not a test.
//   cmake --build build --target server_bench
//   ./build/server_bench DIT T5 VAE TOKENIZER [--size 512] [--steps 2] [--rounds 5]
#include <httplib.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "pipeline/pipeline.h"
#include "server/server.h"

using namespace chroma;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> files;
  int size = 512, steps = 2, rounds = 5;
  for (int i = 1; i < argc; ++i) {
    auto value = [&] { return i + 1 < argc ? std::atoi(argv[++i]) : 0; };
    if (!std::strcmp(argv[i], "--size")) size = value();
    else if (!std::strcmp(argv[i], "--steps")) steps = value();
    else if (!std::strcmp(argv[i], "--rounds")) rounds = value();
    else files.push_back(argv[i]);
  }
  if (files.size() != 4 || size < 16 || size % 16 || steps < 1 || rounds < 1) {
    std::fprintf(stderr, "usage: server_bench DIT T5 VAE TOKENIZER [--size 512] [--steps 2] [--rounds 5]\n");
    return 2;
  }
  try {
    pipeline::PipelineConfig config;
    config.files = {files[0], files[1], files[2], files[3]};
    pipeline::Pipeline pipeline(config);
    double last_generate = 0;  // seconds the worker spent inside Pipeline::generate for its last job
    server::JobQueue queue([&](const pipeline::GenerationRequest& r, const pipeline::RunHooks& h) {
      const Clock::time_point t = Clock::now();
      pipeline::GenerationResult g = pipeline.generate(r, h);
      last_generate = seconds_since(t);
      return g;
    }, {100, 600});
    server::ServerOptions options;
    options.port = 0;
    options.limits.max_side = 8192;
    server::Server http(queue, options);
    const int port = http.bind();
    std::thread serving([&] { http.run(); });
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(3600, 0);

    pipeline::GenerationRequest r;
    r.prompt = "a red fox sitting in fresh snow, golden hour";
    r.width = r.height = size;
    r.steps = steps;
    r.seed = 42;
    const json body = {{"prompt", r.prompt}, {"size", std::to_string(size) + "x" + std::to_string(size)},
                       {"steps", steps}, {"seed", 42}};
    pipeline.generate(r);  // every page read once before timing
    std::printf("server_bench: %s, %dx%d, %d steps, %d rounds\n", files[0].c_str(), size, size, steps, rounds);
    // Each way in a block of its own: alternating them per round would make each OpenMP team (the main
    // thread's, the worker's) start while the other's threads still spin, which neither `generate`
    // nor `serve` ever sees.
    auto mean_of = [&](const char* what, const std::function<void()>& run) {
      double total = 0;
      rusage before{}, after{};
      getrusage(RUSAGE_SELF, &before);
      std::printf("  %-10s", what);
      for (int k = 0; k < rounds; ++k) {
        const Clock::time_point t = Clock::now();
        run();
        const double s = seconds_since(t);
        std::printf(" %.4f", s);
        total += s;
      }
      getrusage(RUSAGE_SELF, &after);
      const double cpu = double(after.ru_utime.tv_sec - before.ru_utime.tv_sec) +
                         1e-6 * double(after.ru_utime.tv_usec - before.ru_utime.tv_usec);
      const double sys = double(after.ru_stime.tv_sec - before.ru_stime.tv_sec) +
                         1e-6 * double(after.ru_stime.tv_usec - before.ru_stime.tv_usec);
      std::printf("  mean %.4f s (user %.3f s, system %.3f s, %ld page faults per run)\n", total / rounds, cpu / rounds,
                  sys / rounds, (after.ru_minflt - before.ru_minflt) / rounds);
      return total / rounds;
    };
    double generate_library = 0, encode = 0;
    const double direct = mean_of("library", [&] {  // as the CLI does: generate, then encode the PNG it writes
      Clock::time_point t = Clock::now();
      const pipeline::GenerationResult g = pipeline.generate(r);
      generate_library += seconds_since(t);
      t = Clock::now();
      io::encode_image(g.images[0].to_image(), io::ImageFormat::Png);
      encode += seconds_since(t);
    });
    generate_library /= rounds;
    encode /= rounds;
    const double queued = mean_of("job queue", [&] { queue.wait(queue.submit(r)); });  // worker thread, no HTTP
    // What serve itself adds, request by request: the client's round trip less the time the worker spent in
    // Pipeline::generate for that very request and less the PNG encoding `generate` does as well. Unlike
    // the difference of two means this does not carry the model's ±15 % from round to round.
    double added = 0, added_max = 0, generate_served = 0;
    const double served = mean_of("HTTP", [&] {
      const Clock::time_point t = Clock::now();
      const auto res = client.Post("/v1/images/generations", body.dump(), "application/json");
      if (!res || res->status != 200) throw Error("the server answered " + (res ? std::to_string(res->status) : "nothing"));
      const double a = seconds_since(t) - last_generate - encode;
      added += a;
      added_max = std::max(added_max, a);
      generate_served += last_generate;
    });
    added /= rounds;
    generate_served /= rounds;
    // The library once more: how far the machine itself drifted between the first block and the last.
    const double direct_again = mean_of("library", [&] { pipeline.generate(r); });
    std::printf("means: the job queue %+.2f ms, HTTP %+.2f ms more: %+.2f ms per request (%+.2f %%)\n",
                1e3 * (queued - direct), 1e3 * (served - queued), 1e3 * (served - direct), 100.0 * (served / direct - 1.0));
    std::printf("Pipeline::generate: %.4f s on the CLI's thread, %.4f s on the server's worker, %.4f s on the CLI's "
                "thread again; PNG encoding %.2f ms\n", generate_library, generate_served, direct_again, 1e3 * encode);
    std::printf("serve's own work per request (round trip - generate - PNG): mean %.2f ms, max %.2f ms\n", 1e3 * added,
                1e3 * added_max);

    // Time to the first event of a job's stream: POST, then GET the stream until its first "data:".
    double first_event = 0;
    for (int k = 0; k < rounds; ++k) {
      const Clock::time_point t = Clock::now();
      const auto job = client.Post("/v1/jobs", json{{"prompt", r.prompt}, {"width", size}, {"height", size},
                                                    {"steps", steps}}.dump(), "application/json");
      const std::string id = json::parse(job->body).at("id");
      double at = -1;
      httplib::Client events("127.0.0.1", port);
      events.Get(("/v1/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
        if (at < 0 && std::string(data, n).find("data:") != std::string::npos) at = seconds_since(t);
        return true;
      });
      first_event += at;
    }
    std::printf("first event of a job's stream: %.2f ms after its POST (mean of %d)\n", 1e3 * first_event / rounds, rounds);

    // Malformed requests, 10 clients × 100.
    std::atomic<int> answered{0};
    const Clock::time_point t = Clock::now();
    std::vector<std::thread> clients;
    for (int c = 0; c < 10; ++c)
      clients.emplace_back([&] {
        httplib::Client bad("127.0.0.1", port);
        const char* bodies[] = {"{", "[]", R"({"prompt": 1})", R"({"prompt": "x", "size": "-1x5"})", R"({"prompt": "x", "n": 0})"};
        for (int i = 0; i < 100; ++i) {
          const auto res = bad.Post("/v1/images/generations", bodies[i % 5], "application/json");
          if (res && res->status == 400) ++answered;
        }
      });
    for (std::thread& c : clients) c.join();
    const double flood = seconds_since(t);
    std::printf("malformed flood: %d of 1000 answered 400 in %.3f s (%.0f requests/s)\n", answered.load(), flood,
                1000 / flood);
    http.stop();
    serving.join();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "server_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

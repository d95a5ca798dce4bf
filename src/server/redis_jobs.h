// Jobs shared by many servers through Redis (serve --queue redis://HOST:PORT): any server takes a
// request, the first idle worker of any server runs it, any server answers its status, events and
// result. Each server is then stateless apart from its loaded models.
//
// Redis keys (M = the model set's name, so that a worker only takes jobs for the model it has loaded):
//   chroma:queue:M          stream of job ids; consumer group "workers" (XREADGROUP one at a time)
//   chroma:job:ID           hash: spec (request JSON), state, owner, progress, preview, images, ...
//   chroma:job:ID:events    stream of the job's events (progress per step, then the final one)
//   chroma:job:ID:cancel    set by DELETE; the running worker checks it between steps
//   chroma:results:M        stream: one entry per ended job (id, state, worker), the last ~100,000
// A worker XACKs its entry when the job ends. While it runs it renews its claim; when it dies, the
// entry goes idle and another worker takes it over with XAUTOCLAIM after `claim_after_seconds` and
// runs it again. Only the current owner may write a result (checked atomically in a Lua script), so
// no job ends twice. State changes are Lua scripts, so readers never see half of one.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "server/jobs.h"

namespace chroma::server {

struct RedisAddress {
  std::string host;
  int port = 6379;
};
// "redis://HOST:PORT" (port optional, a trailing "/" allowed); throws chroma::Error naming the text.
RedisAddress parse_redis_url(const std::string& url);
// Throws chroma::Error naming the address when no Redis answers there (checked before models load).
void ping_redis(const RedisAddress& address);

struct RedisQueueOptions {
  RedisAddress address;
  std::string model;               // the stream's name: servers with the same models share one
  double claim_after_seconds = 30;  // a running job whose worker stopped renewing is taken over
  int max_attempts = 3;             // a job whose worker died this many times fails
  bool take_jobs = true;            // false: a front end that only submits and reads (no worker)
};

class RedisJobs : public Jobs {
 public:
  // Connects (throws chroma::Error naming the address when Redis does not answer) and starts the
  // worker, which takes jobs once models are loaded (they are: the server starts after loading).
  RedisJobs(Runner runner, RedisQueueOptions options, QueueLimits limits);
  ~RedisJobs() override;
  RedisJobs(const RedisJobs&) = delete;
  RedisJobs& operator=(const RedisJobs&) = delete;

  std::string submit(const pipeline::GenerationRequest& request, io::ImageFormat format = io::ImageFormat::Png,
                     int quality = 90, bool previews = false) override;
  std::optional<JobStatus> status(const std::string& id) const override;
  bool cancel(const std::string& id) override;
  bool interrupt() override;
  std::optional<std::vector<nlohmann::json>> events_after(const std::string& id, size_t seen, int timeout_ms,
                                                          bool* ended) const override;
  std::optional<JobStatus> wait(const std::string& id) const override;
  std::optional<JobStatus> running() const override;
  int queued() const override;
  QueueMetrics metrics() const override;
  // Stops taking jobs. Without finish_running the running job stops at its next step and goes back
  // to the queue (another server takes it over); queued jobs stay for the other servers.
  void shutdown(bool finish_running = false) override;

  const std::string& worker_name() const { return worker_name_; }

 private:
  struct Impl;
  void work();
  void run_entry(const std::string& entry, const std::string& id);

  std::unique_ptr<Impl> impl_;
  Runner runner_;
  RedisQueueOptions options_;
  QueueLimits limits_;
  std::string worker_name_;
  std::atomic<bool> stopping_{false}, release_running_{false};
  std::thread worker_;
};

}  // namespace chroma::server

// The server's job queue: generation requests wait in a bounded FIFO and one worker thread runs them,
// one at a time, on the pipeline it was given (models loaded once). Each job keeps its progress as a
// list of events (one per phase start and per denoising step, then a final one) that any number of
// readers may follow (Server-Sent Events), can be cancelled while queued or at the next step
// boundary while running, and keeps its result for a while after it ends.
//
// The worker calls a Runner (Pipeline::generate in the server; a stand-in in tests), so the queue
// knows nothing of models.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "io/image.h"
#include "pipeline/pipeline.h"

namespace chroma::server {

enum class JobState { Queued, Running, Done, Failed, Cancelled };
const char* job_state_name(JobState state);  // "queued", "running", "done", "failed", "cancelled"

// One finished image, encoded as the request asked.
struct JobImage {
  std::vector<uint8_t> bytes;
  io::ImageFormat format = io::ImageFormat::Png;
  nlohmann::json parameters;  // pipeline::GeneratedImage::parameters
  std::string infotext;       // the A1111 "parameters" text
};

// What a reader sees of a job at one moment.
struct JobStatus {
  std::string id;
  JobState state = JobState::Queued;
  int queue_position = 0;                // jobs ahead of it (queued only)
  pipeline::Progress progress;           // the last progress report (running, done)
  std::string error;                     // failed, cancelled
  std::vector<JobImage> images;          // done
  std::vector<std::string> warnings;     // done
  std::vector<uint8_t> preview;          // the latest step's preview (JPEG), with previews
  pipeline::GenerationRequest request;   // as submitted
};

// The job as JSON (the jobs API and the final event): id, status, queue_position, progress
// {phase, image, images, step, steps, elapsed, eta}, error, and with `images` the results as base64.
nlohmann::json status_json(const JobStatus& status, bool with_images);

// The queue is full: the caller answers 429 with Retry-After.
class QueueFull : public Error {
 public:
  using Error::Error;
};

// Counters since the queue started (the server's /metrics).
struct QueueMetrics {
  int queued = 0;
  bool running = false;
  uint64_t done = 0, failed = 0, cancelled = 0;  // jobs ended so
  uint64_t steps = 0;                            // denoising steps run
  double busy_seconds = 0;                       // time spent running jobs
  double latency_seconds = 0;                    // Σ over ended jobs of submit → end (queue wait included)
};

// The queue takes no more jobs (shutdown): the caller answers 503.
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

struct QueueLimits {
  int max_queued = 16;          // jobs waiting (the running one not counted)
  double keep_seconds = 600;    // a finished job's result is kept this long
};

class JobQueue {
 public:
  using Runner = std::function<pipeline::GenerationResult(const pipeline::GenerationRequest&, const pipeline::RunHooks&)>;

  JobQueue(Runner runner, QueueLimits limits);
  ~JobQueue();  // cancels the running job, drops the queued ones, joins the worker
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  // Queues a validated request whose images are to be encoded as `format`; returns its id. Throws
  // QueueFull when max_queued jobs are waiting, ShuttingDown after shutdown().
  // With `previews`, each denoising step's event carries "preview", a JPEG data URL of the step's x0
  // estimate at latent resolution (vae/preview.h), and the status keeps the latest one.
  std::string submit(const pipeline::GenerationRequest& request, io::ImageFormat format = io::ImageFormat::Png,
                     int quality = 90, bool previews = false);
  // nullopt for an unknown (or expired) id.
  std::optional<JobStatus> status(const std::string& id) const;
  // Cancels a queued job at once, a running one at its next step boundary; false for an unknown id or
  // a job that has already ended.
  bool cancel(const std::string& id);
  // Cancels the running job (A1111's interrupt); false when none runs.
  bool interrupt();
  // Waits until the job has more than `seen` events or has ended, at most `timeout_ms`; returns the
  // events after `seen` (each a JSON object with "event": "progress" or the final state). `ended` is
  // set when the job has ended and every event has been returned. nullopt for an unknown id.
  std::optional<std::vector<nlohmann::json>> events_after(const std::string& id, size_t seen, int timeout_ms,
                                                          bool* ended) const;
  // Blocks until the job ends; its final status (nullopt for an unknown id).
  std::optional<JobStatus> wait(const std::string& id) const;
  // The running job's status, or nullopt when idle (A1111's progress).
  std::optional<JobStatus> running() const;
  int queued() const;
  QueueMetrics metrics() const;
  // Refuses new jobs, cancels every queued one and the running one (or, with finish_running, lets
  // it finish), and joins the worker.
  void shutdown(bool finish_running = false);

 private:
  struct Job;
  void work();
  void prune_locked();  // drops finished jobs older than keep_seconds
  void add_event_locked(Job& job, nlohmann::json event);
  void add_final_event_locked(Job& job);
  JobStatus snapshot_locked(const Job& job) const;

  Runner runner_;
  QueueLimits limits_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;  // any job's state or events
  std::map<std::string, std::shared_ptr<Job>> jobs_;
  std::deque<std::shared_ptr<Job>> waiting_;
  std::shared_ptr<Job> current_;
  uint64_t next_id_ = 1;
  QueueMetrics metrics_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace chroma::server

// The server's jobs: generation requests wait in a bounded FIFO and one worker runs them, one at a
// time, on the pipeline it was given (models loaded once). Each job keeps its progress as a list of
// events (one per phase start and per denoising step, then a final one) that any number of readers
// may follow (Server-Sent Events), can be cancelled while queued or at the next step boundary while
// running, and keeps its result for a while after it ends.
//
// `Jobs` is that contract; JobQueue keeps the jobs in this process, RedisJobs (redis_jobs.h) in Redis
// streams shared by many servers. Both run a job with run_job on a Runner (Pipeline::generate in the
// server; a stand-in in tests), so neither knows anything of models.
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

// What to run: a validated request and how its images are to be encoded.
struct JobSpec {
  pipeline::GenerationRequest request;
  io::ImageFormat format = io::ImageFormat::Png;
  int quality = 90;
  bool previews = false;  // each step's event carries a JPEG of its x0 estimate (vae/preview.h)
};

using Runner = std::function<pipeline::GenerationResult(const pipeline::GenerationRequest&, const pipeline::RunHooks&)>;

// How a run ended.
struct JobOutcome {
  JobState state = JobState::Done;  // done, failed or cancelled
  std::string error;
  std::vector<JobImage> images;
  std::vector<std::string> warnings;
};

// Called at each phase start and denoising step of a run with the progress, its event (JSON:
// "event": "progress", "id", "progress", and with previews "preview" as a data URL) and the preview
// JPEG (empty without); returning false cancels the run.
using StepReport = std::function<bool(const pipeline::Progress&, nlohmann::json event, std::vector<uint8_t> preview)>;

// A new job id: not guessable from another, and unique across the servers sharing a queue.
std::string make_job_id();

// Runs one job: reports its steps and encodes its images. Never throws: a failure is the outcome.
JobOutcome run_job(const Runner& runner, const std::string& id, const JobSpec& spec, const StepReport& report);

// Progress as the jobs API shows it ({phase, image, images, step, steps, elapsed, eta}), and back.
nlohmann::json progress_json(const pipeline::Progress& progress);
pipeline::Progress progress_from_json(const nlohmann::json& j);
// status_json's "images" (with b64_json) back into images.
std::vector<JobImage> images_from_json(const nlohmann::json& images);

struct QueueLimits {
  int max_queued = 16;          // jobs waiting (the running one not counted)
  double keep_seconds = 600;    // a finished job's result is kept this long
};

class Jobs {
 public:
  virtual ~Jobs() = default;
  // Queues a validated request whose images are to be encoded as `format`; returns its id. Throws
  // QueueFull when max_queued jobs are waiting, ShuttingDown after shutdown().
  // With `previews`, each denoising step's event carries "preview", a JPEG data URL of the step's x0
  // estimate at latent resolution (vae/preview.h), and the status keeps the latest one.
  virtual std::string submit(const pipeline::GenerationRequest& request, io::ImageFormat format = io::ImageFormat::Png,
                             int quality = 90, bool previews = false) = 0;
  // nullopt for an unknown (or expired) id.
  virtual std::optional<JobStatus> status(const std::string& id) const = 0;
  // Cancels a queued job at once, a running one at its next step boundary; false for an unknown id or
  // a job that has already ended.
  virtual bool cancel(const std::string& id) = 0;
  // Cancels the job this server is running (A1111's interrupt); false when none runs.
  virtual bool interrupt() = 0;
  // Waits until the job has more than `seen` events or has ended, at most `timeout_ms`; returns the
  // events after `seen` (each a JSON object with "event": "progress" or the final state). `ended` is
  // set when the job has ended and every event has been returned. nullopt for an unknown id.
  virtual std::optional<std::vector<nlohmann::json>> events_after(const std::string& id, size_t seen, int timeout_ms,
                                                                  bool* ended) const = 0;
  // Blocks until the job ends; its final status (nullopt for an unknown id).
  virtual std::optional<JobStatus> wait(const std::string& id) const = 0;
  // The status of the job this server is running, or nullopt when idle (A1111's progress).
  virtual std::optional<JobStatus> running() const = 0;
  virtual int queued() const = 0;  // jobs waiting (on a shared queue: for every server)
  virtual QueueMetrics metrics() const = 0;
  // Refuses new jobs, stops the running one at its next step (or, with finish_running, lets it
  // finish) and joins the worker. JobQueue cancels its queued jobs; a shared queue keeps them.
  virtual void shutdown(bool finish_running = false) = 0;
};

// The jobs of one process, in memory.
class JobQueue : public Jobs {
 public:
  JobQueue(Runner runner, QueueLimits limits);
  ~JobQueue() override;  // cancels the running job, drops the queued ones, joins the worker
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

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
  void shutdown(bool finish_running = false) override;

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
  QueueMetrics metrics_;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace chroma::server

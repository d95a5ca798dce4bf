#include "server/jobs.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>

#include "pipeline/output.h"
#include "server/api.h"

namespace chroma::server {

using Clock = std::chrono::steady_clock;

struct JobQueue::Job {
  std::string id;
  JobSpec spec;
  std::vector<uint8_t> preview;
  JobState state = JobState::Queued;
  pipeline::Progress progress;
  std::string error;
  std::vector<JobImage> images;
  std::vector<std::string> warnings;
  std::vector<nlohmann::json> events;
  bool cancel = false;           // asked; the running job stops at its next step boundary
  Clock::time_point submitted = Clock::now(), finished{};
  bool ended() const { return state == JobState::Done || state == JobState::Failed || state == JobState::Cancelled; }
};

const char* job_state_name(JobState state) {
  switch (state) {
    case JobState::Queued: return "queued";
    case JobState::Running: return "running";
    case JobState::Done: return "done";
    case JobState::Failed: return "failed";
    case JobState::Cancelled: return "cancelled";
  }
  return "?";
}

nlohmann::json progress_json(const pipeline::Progress& p) {
  return {{"phase", pipeline::phase_name(p.phase)}, {"image", p.image}, {"images", p.images}, {"step", p.step},
          {"steps", p.steps}, {"elapsed", p.elapsed_seconds}, {"eta", p.eta_seconds}};
}

pipeline::Progress progress_from_json(const nlohmann::json& j) {
  pipeline::Progress p;
  const std::string phase = j.value("phase", "");
  for (auto ph : {pipeline::Progress::Phase::ImageEncoding, pipeline::Progress::Phase::TextEncoding,
                  pipeline::Progress::Phase::Denoising, pipeline::Progress::Phase::Decoding, pipeline::Progress::Phase::Done})
    if (phase == pipeline::phase_name(ph)) p.phase = ph;
  p.image = j.value("image", 1);
  p.images = j.value("images", 1);
  p.step = j.value("step", 0);
  p.steps = j.value("steps", 0);
  p.elapsed_seconds = j.value("elapsed", 0.0);
  p.eta_seconds = j.value("eta", -1.0);
  return p;
}

std::vector<JobImage> images_from_json(const nlohmann::json& images) {
  std::vector<JobImage> out;
  for (const nlohmann::json& e : images) {
    JobImage img;
    img.format = io::parse_image_format(e.at("format").get<std::string>());
    img.bytes = base64_decode(e.at("b64_json").get<std::string>(), "image");
    img.parameters = e.value("parameters", nlohmann::json::object());
    img.infotext = e.value("infotext", "");
    out.push_back(std::move(img));
  }
  return out;
}

// Ids are not guessable from one another, and unique across servers sharing a queue: a random 64-bit
// prefix per process, then a counter.
std::string make_job_id() {
  static const uint64_t prefix = pipeline::random_seed();
  static std::atomic<uint64_t> next{1};
  char buf[48];
  std::snprintf(buf, sizeof buf, "job-%016llx-%llu", static_cast<unsigned long long>(prefix),
                static_cast<unsigned long long>(next++));
  return buf;
}

JobOutcome run_job(const Runner& runner, const std::string& id, const JobSpec& spec, const StepReport& report) {
  pipeline::RunHooks hooks;
  hooks.progress = [&](const pipeline::Progress& p) {
    nlohmann::json event = {{"event", "progress"}, {"id", id}, {"progress", progress_json(p)}};
    std::vector<uint8_t> preview;
    if (spec.previews && p.denoised) {
      preview = io::encode_image(pipeline::preview_image(*p.denoised), io::ImageFormat::Jpeg, 80);
      event["preview"] = "data:image/jpeg;base64," + base64_encode(preview);
    }
    pipeline::Progress copy = p;
    copy.denoised = nullptr;  // the tensor is the pipeline's, valid only during this call
    return report(copy, std::move(event), std::move(preview));
  };
  JobOutcome out;
  try {
    const pipeline::GenerationResult result = runner(spec.request, hooks);
    for (const pipeline::GeneratedImage& g : result.images)
      out.images.push_back({io::encode_image(g.to_image(), spec.format, spec.quality), spec.format, g.parameters,
                            pipeline::infotext(g.parameters)});
    out.warnings = result.warnings;
  } catch (const pipeline::Cancelled& e) {
    out = {JobState::Cancelled, e.what(), {}, {}};
  } catch (const std::exception& e) {
    out = {JobState::Failed, e.what(), {}, {}};
  }
  return out;
}

nlohmann::json status_json(const JobStatus& s, bool with_images) {
  nlohmann::json j = {{"id", s.id}, {"status", job_state_name(s.state)}, {"progress", progress_json(s.progress)}};
  if (s.state == JobState::Queued) j["queue_position"] = s.queue_position;
  if (!s.error.empty()) j["error"] = s.error;
  if (s.state == JobState::Done) {
    j["warnings"] = s.warnings;
    nlohmann::json images = nlohmann::json::array();
    for (const JobImage& img : s.images) {
      nlohmann::json e = {{"format", io::image_format_name(img.format)}, {"parameters", img.parameters},
                          {"infotext", img.infotext}};
      if (with_images) e["b64_json"] = base64_encode(img.bytes);
      images.push_back(std::move(e));
    }
    j["images"] = std::move(images);
  }
  return j;
}

JobQueue::JobQueue(Runner runner, QueueLimits limits) : runner_(std::move(runner)), limits_(limits) {
  worker_ = std::thread([this] { work(); });
}

JobQueue::~JobQueue() { shutdown(); }

void JobQueue::shutdown(bool finish_running) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    for (const std::shared_ptr<Job>& job : waiting_) {
      job->state = JobState::Cancelled;
      job->error = "the server is shutting down";
      job->finished = Clock::now();
      ++metrics_.cancelled;
      add_final_event_locked(*job);
    }
    waiting_.clear();
    if (current_ && !finish_running) current_->cancel = true;
  }
  changed_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::string JobQueue::submit(const pipeline::GenerationRequest& request, io::ImageFormat format, int quality,
                             bool previews) {
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) throw ShuttingDown("the server is shutting down");
    prune_locked();
    if (int(waiting_.size()) >= limits_.max_queued)
      throw QueueFull("the queue is full (" + std::to_string(limits_.max_queued) + " jobs waiting); try again later");
    auto job = std::make_shared<Job>();
    job->id = id = make_job_id();
    job->spec = {request, format, quality, previews};
    job->progress.images = request.batch_count;
    jobs_[id] = job;
    waiting_.push_back(job);
  }
  changed_.notify_all();
  return id;
}

void JobQueue::add_event_locked(Job& job, nlohmann::json event) { job.events.push_back(std::move(event)); }

// The last event of a job: its status (without the images), "event" naming how it ended.
void JobQueue::add_final_event_locked(Job& job) {
  nlohmann::json event = status_json(snapshot_locked(job), false);
  event["event"] = job_state_name(job.state);
  add_event_locked(job, std::move(event));
}

JobStatus JobQueue::snapshot_locked(const Job& job) const {
  JobStatus s;
  s.id = job.id;
  s.state = job.state;
  s.progress = job.progress;
  s.error = job.error;
  s.images = job.images;
  s.warnings = job.warnings;
  s.preview = job.preview;
  s.request = job.spec.request;
  if (job.state == JobState::Queued)
    for (const std::shared_ptr<Job>& w : waiting_) {
      if (w.get() == &job) break;
      ++s.queue_position;
    }
  return s;
}

void JobQueue::prune_locked() {
  const Clock::time_point now = Clock::now();
  for (auto it = jobs_.begin(); it != jobs_.end();)
    if (it->second->ended() && std::chrono::duration<double>(now - it->second->finished).count() > limits_.keep_seconds)
      it = jobs_.erase(it);
    else
      ++it;
}

std::optional<JobStatus> JobQueue::status(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  return snapshot_locked(*it->second);
}

bool JobQueue::cancel(const std::string& id) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second->ended()) return false;
    Job& job = *it->second;
    job.cancel = true;
    if (job.state == JobState::Queued) {
      std::erase_if(waiting_, [&](const std::shared_ptr<Job>& w) { return w.get() == &job; });
      job.state = JobState::Cancelled;
      job.error = "cancelled before it started";
      job.finished = Clock::now();
      ++metrics_.cancelled;
      add_final_event_locked(job);
    }
  }
  changed_.notify_all();
  return true;
}

bool JobQueue::interrupt() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!current_) return false;
  current_->cancel = true;
  return true;
}

std::optional<std::vector<nlohmann::json>> JobQueue::events_after(const std::string& id, size_t seen, int timeout_ms,
                                                                   bool* ended) const {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const std::shared_ptr<Job> job = it->second;  // kept alive even if pruned meanwhile
  changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return job->events.size() > seen || job->ended(); });
  std::vector<nlohmann::json> out;
  for (size_t i = seen; i < job->events.size(); ++i) out.push_back(job->events[i]);
  *ended = job->ended();
  return out;
}

std::optional<JobStatus> JobQueue::wait(const std::string& id) const {
  std::unique_lock<std::mutex> lock(mutex_);
  const auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const std::shared_ptr<Job> job = it->second;
  changed_.wait(lock, [&] { return job->ended(); });
  return snapshot_locked(*job);
}

std::optional<JobStatus> JobQueue::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!current_) return std::nullopt;
  return snapshot_locked(*current_);
}

QueueMetrics JobQueue::metrics() const {
  std::lock_guard<std::mutex> lock(mutex_);
  QueueMetrics m = metrics_;
  m.queued = int(waiting_.size());
  m.running = current_ != nullptr;
  return m;
}

int JobQueue::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return int(waiting_.size());
}

void JobQueue::work() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (stopping_ && waiting_.empty()) return;
      job = waiting_.front();
      waiting_.pop_front();
      job->state = JobState::Running;
      current_ = job;
    }
    changed_.notify_all();

    const Clock::time_point started = Clock::now();
    JobOutcome outcome = run_job(runner_, job->id, job->spec,
                                 [this, job](const pipeline::Progress& p, nlohmann::json event, std::vector<uint8_t> preview) {
      bool go_on;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        job->progress = p;
        if (p.phase == pipeline::Progress::Phase::Denoising && p.step > 0) ++metrics_.steps;
        if (!preview.empty()) job->preview = std::move(preview);
        add_event_locked(*job, std::move(event));
        go_on = !job->cancel;
      }
      changed_.notify_all();
      return go_on;
    });
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const JobState end = outcome.state;
      job->state = end;
      job->error = std::move(outcome.error);
      job->images = std::move(outcome.images);
      job->warnings = std::move(outcome.warnings);
      job->finished = Clock::now();
      metrics_.busy_seconds += std::chrono::duration<double>(job->finished - started).count();
      metrics_.latency_seconds += std::chrono::duration<double>(job->finished - job->submitted).count();
      ++(end == JobState::Done ? metrics_.done : end == JobState::Failed ? metrics_.failed : metrics_.cancelled);
      add_final_event_locked(*job);
      current_.reset();
    }
    changed_.notify_all();
  }
}

}  // namespace chroma::server

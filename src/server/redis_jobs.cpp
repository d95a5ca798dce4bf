#include "server/redis_jobs.h"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "server/api.h"

namespace chroma::server {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ---- a minimal Redis client over hiredis ----

// One reply, converted out of hiredis's structure.
struct Value {
  bool nil = false;
  long long integer = 0;
  std::string str;            // bulk and status strings
  std::vector<Value> items;   // arrays
};

Value convert(const redisReply* r) {
  Value v;
  switch (r->type) {
    case REDIS_REPLY_NIL: v.nil = true; break;
    case REDIS_REPLY_INTEGER: v.integer = r->integer; break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: v.str.assign(r->str, r->len); break;
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < r->elements; ++i) v.items.push_back(convert(r->element[i]));
      break;
    default: break;
  }
  return v;
}

class Connection {
 public:
  Connection(const RedisAddress& a, int timeout_ms) : where_("redis://" + a.host + ":" + std::to_string(a.port)) {
    const timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    c_ = redisConnectWithTimeout(a.host.c_str(), a.port, tv);
    if (!c_ || c_->err) {
      const std::string why = c_ ? c_->errstr : "out of memory";
      if (c_) redisFree(c_);
      throw Error("--queue " + where_ + ": cannot connect (" + why + ")");
    }
    redisSetTimeout(c_, tv);
  }
  ~Connection() { redisFree(c_); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs one command; a Redis error reply or a broken connection throws chroma::Error.
  Value run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c_, int(args.size()), argv.data(), lens.data()));
    if (!r) {
      broken_ = true;
      throw Error("--queue " + where_ + ": " + (c_->errstr[0] ? c_->errstr : "connection lost") + " (" + args[0] + ")");
    }
    if (r->type == REDIS_REPLY_ERROR) {
      const std::string message(r->str, r->len);
      freeReplyObject(r);
      throw Error("--queue " + where_ + ": " + args[0] + ": " + message);
    }
    Value v = convert(r);
    freeReplyObject(r);
    return v;
  }
  bool broken() const { return broken_; }

 private:
  redisContext* c_ = nullptr;
  std::string where_;
  bool broken_ = false;
};

// Connections for the HTTP threads: each request borrows one (hiredis contexts are not thread-safe).
class Pool {
 public:
  explicit Pool(RedisAddress a) : address_(std::move(a)) {}
  class Lease {
   public:
    Lease(Pool& p, std::unique_ptr<Connection> c) : pool_(p), c_(std::move(c)) {}
    ~Lease() {
      if (c_->broken()) return;
      std::lock_guard<std::mutex> lock(pool_.mutex_);
      pool_.idle_.push_back(std::move(c_));
    }
    Connection* operator->() { return c_.get(); }

   private:
    Pool& pool_;
    std::unique_ptr<Connection> c_;
  };
  Lease get() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        std::unique_ptr<Connection> c = std::move(idle_.back());
        idle_.pop_back();
        return Lease(*this, std::move(c));
      }
    }
    return Lease(*this, std::make_unique<Connection>(address_, kTimeoutMs));
  }
  static constexpr int kTimeoutMs = 5000;  // above every BLOCK we send (≤ 1 s)

 private:
  RedisAddress address_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

std::map<std::string, std::string> as_map(const Value& flat) {  // HGETALL / entry fields
  std::map<std::string, std::string> m;
  for (size_t i = 0; i + 1 < flat.items.size(); i += 2) m[flat.items[i].str] = flat.items[i + 1].str;
  return m;
}

// ---- the state changes, each atomic ----

// KEYS: job hash. ARGV: worker, max attempts. 1: taken; 0: nothing to run (cancelled, ended, expired);
// 2: taken, but it has killed its workers too often (the caller fails it).
const char* kTake = R"(
local s = redis.call('HGET', KEYS[1], 'state')
if s ~= 'queued' and s ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[1])
if redis.call('HINCRBY', KEYS[1], 'attempts', 1) > tonumber(ARGV[2]) then return 2 end
return 1)";

// KEYS: hash, events, cancel key. ARGV: worker, progress, event, preview. Returns 1 to go on, 0 to stop
// (cancelled, or the job was taken over by another worker).
const char* kStep = R"(
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'preview', ARGV[4]) end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
return 1)";

// KEYS: hash, events, queue, results. ARGV: worker, state, error, images, warnings, final event,
// group, entry, keep seconds, job id. 0 when another worker owns the job now (our result is dropped).
const char* kFinish = R"(
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'error', ARGV[3], 'images', ARGV[4], 'warnings', ARGV[5])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[6])
redis.call('XACK', KEYS[3], ARGV[7], ARGV[8])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'id', ARGV[10], 'state', ARGV[2], 'worker', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[9])
redis.call('EXPIRE', KEYS[2], ARGV[9])
return 1)";

// KEYS: hash, events, cancel key. ARGV: final event (for a queued job), keep seconds.
// 1: a queued job cancelled; 2: a running job asked to stop; 0: unknown or ended.
const char* kCancel = R"(
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'error', 'cancelled before it started')
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
if s == 'running' then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  return 2
end
return 0)";

// KEYS: hash, events. ARGV: worker. A stopping server hands its running job back: queued again, its
// entry left pending for another worker's XAUTOCLAIM.
const char* kRelease = R"(
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'owner', '')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('XADD', KEYS[2], '*', 'e', '{"event":"requeued"}')
return 1)";

const char* kGroup = "workers";

std::string job_key(const std::string& id) { return "chroma:job:" + id; }
std::string events_key(const std::string& id) { return job_key(id) + ":events"; }
std::string cancel_key(const std::string& id) { return job_key(id) + ":cancel"; }

bool ended(JobState s) { return s == JobState::Done || s == JobState::Failed || s == JobState::Cancelled; }

JobState state_from_name(const std::string& name) {
  for (JobState s : {JobState::Queued, JobState::Running, JobState::Done, JobState::Failed, JobState::Cancelled})
    if (name == job_state_name(s)) return s;
  return JobState::Queued;
}

// The job as stored: the request as JSON, its pixels as PNG (they are never paths over HTTP).
json spec_json(const JobSpec& spec) {
  json j = {{"request", pipeline::request_to_json(spec.request)},
            {"format", io::image_format_name(spec.format)}, {"quality", spec.quality}, {"previews", spec.previews}};
  if (spec.request.init_pixels.width > 0)
    j["init_png"] = base64_encode(io::encode_image(spec.request.init_pixels, io::ImageFormat::Png));
  if (spec.request.mask_pixels.width > 0)
    j["mask_png"] = base64_encode(io::encode_image(spec.request.mask_pixels, io::ImageFormat::Png));
  return j;
}

JobSpec spec_from_json(const json& j) {
  JobSpec spec;
  spec.request = pipeline::request_from_json(j.at("request"));
  spec.format = io::parse_image_format(j.at("format").get<std::string>());
  spec.quality = j.at("quality").get<int>();
  spec.previews = j.at("previews").get<bool>();
  if (j.contains("init_png")) spec.request.init_pixels = decode_base64_image(j["init_png"].get<std::string>(), "init_image");
  if (j.contains("mask_png")) spec.request.mask_pixels = decode_base64_image(j["mask_png"].get<std::string>(), "mask");
  return spec;
}

std::string worker_identity() {
  char host[256] = "host";
  gethostname(host, sizeof host - 1);
  return std::string(host) + "-" + std::to_string(getpid()) + "-" + make_job_id().substr(4, 8);
}

}  // namespace

RedisAddress parse_redis_url(const std::string& url) {
  const std::string scheme = "redis://";
  auto bad = [&](const std::string& why) { return Error("--queue " + url + ": " + why + " (expected redis://HOST:PORT)"); };
  if (url.rfind(scheme, 0) != 0) throw bad("not a redis:// address");
  std::string rest = url.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  RedisAddress a;
  const size_t colon = rest.rfind(':');
  a.host = rest.substr(0, colon);
  if (colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) throw bad("bad port '" + port + "'");
    a.port = int(p);
  }
  if (a.host.empty() || a.host.find_first_of("/@?#") != std::string::npos) throw bad("bad host");
  return a;
}

void ping_redis(const RedisAddress& address) { Connection(address, Pool::kTimeoutMs).run({"PING"}); }

struct RedisJobs::Impl {
  mutable Pool pool;
  std::string queue, results;  // stream names
  mutable std::mutex mutex;    // the fields below
  std::string current_id;      // the job this server runs
  QueueMetrics metrics;        // this server's counters (queued is the shared queue's)
  explicit Impl(const RedisQueueOptions& o)
      : pool(o.address), queue("chroma:queue:" + o.model), results("chroma:results:" + o.model) {}

  Value eval(const char* script, const std::vector<std::string>& keys, const std::vector<std::string>& args) const {
    std::vector<std::string> cmd = {"EVAL", script, std::to_string(keys.size())};
    cmd.insert(cmd.end(), keys.begin(), keys.end());
    cmd.insert(cmd.end(), args.begin(), args.end());
    return pool.get()->run(cmd);
  }

  std::optional<JobStatus> status(const std::string& id) const {
    std::map<std::string, std::string> h = as_map(pool.get()->run({"HGETALL", job_key(id)}));
    if (h.empty() || !h.count("spec")) return std::nullopt;
    JobStatus s;
    s.id = id;
    s.state = state_from_name(h["state"]);
    s.error = h["error"];
    s.request = spec_from_json(json::parse(h["spec"])).request;
    if (!h["progress"].empty()) s.progress = progress_from_json(json::parse(h["progress"]));
    else s.progress.images = s.request.batch_count;
    s.preview.assign(h["preview"].begin(), h["preview"].end());
    if (s.state == JobState::Done) {
      s.images = images_from_json(json::parse(h["images"]));
      s.warnings = json::parse(h["warnings"]).get<std::vector<std::string>>();
    }
    if (s.state == JobState::Queued) s.queue_position = position(h["entry"]);
    return s;
  }

  // Jobs ahead of the entry: those between the group's last delivered entry and it.
  int position(const std::string& entry) const {
    const Value groups = pool.get()->run({"XINFO", "GROUPS", queue});
    std::string last = "0-0";
    for (const Value& g : groups.items) {
      std::map<std::string, std::string> f;
      for (size_t i = 0; i + 1 < g.items.size(); i += 2) f[g.items[i].str] = g.items[i + 1].str;
      if (f["name"] == kGroup) last = f["last-delivered-id"];
    }
    if (entry.empty()) return 0;
    return int(pool.get()->run({"XRANGE", queue, "(" + last, "(" + entry}).items.size());
  }
};

RedisJobs::RedisJobs(Runner runner, RedisQueueOptions options, QueueLimits limits)
    : impl_(std::make_unique<Impl>(options)),
      runner_(std::move(runner)),
      options_(std::move(options)),
      limits_(limits),
      worker_name_(worker_identity()) {
  try {
    impl_->pool.get()->run({"XGROUP", "CREATE", impl_->queue, kGroup, "0", "MKSTREAM"});
  } catch (const Error& e) {
    if (std::string(e.what()).find("BUSYGROUP") == std::string::npos) throw;  // another server made it
  }
  if (options_.take_jobs) worker_ = std::thread([this] { work(); });
}

RedisJobs::~RedisJobs() { shutdown(); }

void RedisJobs::shutdown(bool finish_running) {
  if (!finish_running) release_running_ = true;
  stopping_ = true;
  if (worker_.joinable()) worker_.join();
}

std::string RedisJobs::submit(const pipeline::GenerationRequest& request, io::ImageFormat format, int quality,
                              bool previews) {
  if (stopping_) throw ShuttingDown("the server is shutting down");
  if (queued() >= limits_.max_queued)
    throw QueueFull("the queue is full (" + std::to_string(limits_.max_queued) + " jobs waiting); try again later");
  const std::string id = make_job_id();
  const JobSpec spec{request, format, quality, previews};
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  auto c = impl_->pool.get();
  c->run({"HSET", job_key(id), "spec", spec_json(spec).dump(), "state", "queued", "owner", "", "attempts", "0",
          "submitted_ms", std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now).count())});
  // The hash outlives any sensible wait in the queue; ending a job shortens it to keep_seconds.
  c->run({"EXPIRE", job_key(id), std::to_string(int64_t(limits_.keep_seconds) + 86400)});
  const Value entry = c->run({"XADD", impl_->queue, "*", "id", id});
  c->run({"HSET", job_key(id), "entry", entry.str});
  return id;
}

std::optional<JobStatus> RedisJobs::status(const std::string& id) const { return impl_->status(id); }

bool RedisJobs::cancel(const std::string& id) {
  std::optional<JobStatus> s = status(id);
  if (!s || ended(s->state)) return false;
  s->state = JobState::Cancelled;
  s->error = "cancelled before it started";
  json final_event = status_json(*s, false);
  final_event["event"] = "cancelled";
  const std::string keep = std::to_string(std::max<int64_t>(1, int64_t(limits_.keep_seconds)));
  return impl_->eval(kCancel, {job_key(id), events_key(id), cancel_key(id)}, {final_event.dump(), keep}).integer != 0;
}

bool RedisJobs::interrupt() {
  std::string id;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    id = impl_->current_id;
  }
  return !id.empty() && cancel(id);
}

std::optional<std::vector<json>> RedisJobs::events_after(const std::string& id, size_t seen, int timeout_ms,
                                                          bool* ended_out) const {
  for (int attempt = 0;; ++attempt) {
    auto c = impl_->pool.get();
    const Value state = c->run({"HGET", job_key(id), "state"});  // before the events: the final one is then in
    if (state.nil) return std::nullopt;
    const Value entries = c->run({"XRANGE", events_key(id), "-", "+"});
    const bool over = ended(state_from_name(state.str));
    if (entries.items.size() > seen || over || attempt == 1) {
      std::vector<json> out;
      for (size_t i = seen; i < entries.items.size(); ++i)
        out.push_back(json::parse(as_map(entries.items[i].items.at(1))["e"], nullptr, false));
      *ended_out = over;
      return out;
    }
    const std::string last = entries.items.empty() ? "0-0" : entries.items.back().items.at(0).str;
    c->run({"XREAD", "BLOCK", std::to_string(std::clamp(timeout_ms, 1, 1000)), "STREAMS", events_key(id), last});
  }
}

std::optional<JobStatus> RedisJobs::wait(const std::string& id) const {
  size_t seen = 0;
  for (;;) {
    bool over = false;
    const auto events = events_after(id, seen, 1000, &over);
    if (!events) return std::nullopt;
    seen += events->size();
    if (over) return status(id);
  }
}

std::optional<JobStatus> RedisJobs::running() const {
  std::string id;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    id = impl_->current_id;
  }
  if (id.empty()) return std::nullopt;
  return status(id);
}

int RedisJobs::queued() const {
  // The group's lag: entries not yet delivered to any worker (cancelled ones among them are skipped at once).
  const Value groups = impl_->pool.get()->run({"XINFO", "GROUPS", impl_->queue});
  for (const Value& g : groups.items) {
    std::map<std::string, const Value*> f;
    for (size_t i = 0; i + 1 < g.items.size(); i += 2) f[g.items[i].str] = &g.items[i + 1];
    if (f.count("name") && f["name"]->str == kGroup && f.count("lag")) return f["lag"]->nil ? 0 : int(f["lag"]->integer);
  }
  return 0;
}

QueueMetrics RedisJobs::metrics() const {
  QueueMetrics m;
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    m = impl_->metrics;
    m.running = !impl_->current_id.empty();
  }
  m.queued = queued();
  return m;
}

void RedisJobs::work() {
  Connection c(options_.address, Pool::kTimeoutMs);
  const std::string idle_ms = std::to_string(int64_t(options_.claim_after_seconds * 1000));
  while (!stopping_) {
    try {
      // First a job whose worker died (idle longer than claim_after), then a new one.
      std::string entry, id;
      const Value claimed = c.run({"XAUTOCLAIM", impl_->queue, kGroup, worker_name_, idle_ms, "0-0", "COUNT", "1"});
      if (claimed.items.size() >= 2 && !claimed.items[1].items.empty() && !claimed.items[1].items[0].nil &&
          claimed.items[1].items[0].items.size() == 2) {
        entry = claimed.items[1].items[0].items[0].str;
        id = as_map(claimed.items[1].items[0].items[1])["id"];
      } else {
        const Value got = c.run({"XREADGROUP", "GROUP", kGroup, worker_name_, "COUNT", "1", "BLOCK", "500", "STREAMS",
                                 impl_->queue, ">"});
        if (got.nil || got.items.empty() || got.items[0].items.size() < 2 || got.items[0].items[1].items.empty()) continue;
        const Value& e = got.items[0].items[1].items[0];
        entry = e.items.at(0).str;
        id = as_map(e.items.at(1))["id"];
      }
      run_entry(entry, id);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "chromacpp: queue worker: %s\n", e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));  // Redis away: try again, not in a tight loop
    }
  }
}

void RedisJobs::run_entry(const std::string& entry, const std::string& id) {
  Connection c(options_.address, Pool::kTimeoutMs);
  const int taken = int(c.run({"EVAL", kTake, "1", job_key(id), worker_name_, std::to_string(options_.max_attempts)}).integer);
  if (taken == 0) {  // cancelled while queued, or gone: nothing to run
    c.run({"XACK", impl_->queue, kGroup, entry});
    return;
  }
  const std::map<std::string, std::string> h = as_map(c.run({"HGETALL", job_key(id)}));
  const JobSpec spec = spec_from_json(json::parse(h.at("spec")));
  // Renews the claim while the job runs, so that only a dead worker's job goes idle; stopped and the
  // current job cleared however this function ends.
  std::atomic<bool> done{false};
  std::thread heartbeat;
  struct Running {
    RedisJobs::Impl& impl;
    std::atomic<bool>& done;
    std::thread& heartbeat;
    ~Running() {
      done = true;
      if (heartbeat.joinable()) heartbeat.join();
      std::lock_guard<std::mutex> lock(impl.mutex);
      impl.current_id.clear();
    }
  } running{*impl_, done, heartbeat};
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->current_id = id;
  }
  heartbeat = std::thread([&] {
    Connection hb(options_.address, Pool::kTimeoutMs);
    const auto every = std::chrono::milliseconds(std::max<int64_t>(50, int64_t(options_.claim_after_seconds * 250)));
    auto next = Clock::now() + every;
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (Clock::now() < next) continue;
      next = Clock::now() + every;
      try {
        hb.run({"XCLAIM", impl_->queue, kGroup, worker_name_, "0", entry, "JUSTID"});
      } catch (const std::exception&) {  // the worker's own calls report Redis failures
      }
    }
  });
  const Clock::time_point started = Clock::now();
  JobOutcome outcome;
  bool released = false;
  if (taken == 2) {
    outcome = {JobState::Failed, "its worker stopped " + std::to_string(options_.max_attempts) + " times while running it", {}, {}};
  } else {
    outcome = run_job(runner_, id, spec, [&](const pipeline::Progress& p, json event, std::vector<uint8_t> preview) {
      if (p.phase == pipeline::Progress::Phase::Denoising && p.step > 0) {
        std::lock_guard<std::mutex> lock(impl_->mutex);
        ++impl_->metrics.steps;
      }
      if (release_running_) return false;
      return c.run({"EVAL", kStep, "3", job_key(id), events_key(id), cancel_key(id), worker_name_,
                    progress_json(p).dump(), event.dump(), std::string(preview.begin(), preview.end())})
                 .integer == 1;
    });
    released = release_running_ && outcome.state == JobState::Cancelled;
  }
  done = true;
  heartbeat.join();
  if (released) {
    c.run({"EVAL", kRelease, "2", job_key(id), events_key(id), worker_name_});
  } else {
    // A cancelled run is either a DELETE (cancel key set) or a takeover; the script tells them apart by owner.
    JobStatus s;
    s.id = id;
    s.state = outcome.state;
    s.error = outcome.error;
    s.images = outcome.images;
    s.warnings = outcome.warnings;
    s.request = spec.request;
    const Value last = c.run({"HGET", job_key(id), "progress"});
    if (!last.nil && !last.str.empty()) s.progress = progress_from_json(json::parse(last.str));
    json final_event = status_json(s, false);
    final_event["event"] = job_state_name(s.state);
    const json images = status_json(s, true).value("images", json::array());
    const std::string keep = std::to_string(std::max<int64_t>(1, int64_t(limits_.keep_seconds)));
    const bool ours = c.run({"EVAL", kFinish, "4", job_key(id), events_key(id), impl_->queue, impl_->results, worker_name_,
                             job_state_name(s.state), s.error, images.dump(), json(s.warnings).dump(), final_event.dump(),
                             kGroup, entry, keep, id})
                          .integer == 1;
    if (ours) {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      QueueMetrics& m = impl_->metrics;
      ++(s.state == JobState::Done ? m.done : s.state == JobState::Failed ? m.failed : m.cancelled);
      m.busy_seconds += std::chrono::duration<double>(Clock::now() - started).count();
      const auto now = std::chrono::system_clock::now().time_since_epoch();
      m.latency_seconds += double(std::chrono::duration_cast<std::chrono::milliseconds>(now).count() -
                                  std::stoll(h.count("submitted_ms") ? h.at("submitted_ms") : "0")) / 1000.0;
    }
  }
}

}  // namespace chroma::server

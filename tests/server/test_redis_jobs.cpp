// The shared queue (server/redis_jobs.h) on a real Redis that each test starts (Debian's redis-server
// on a free loopback port): jobs submitted on one server run on another and are read from any;
// cancellation, the bound, and a server stopping mid-job; then two `chromacpp serve` processes on the
// mini models, one killed with SIGKILL mid-job: every job ends exactly once, the orphan with the
// library's own image.
#include <filesystem>
#include <gtest/gtest.h>
#include <httplib.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <thread>

#include "../pipeline/case_e.h"
#include "fake_runner.h"
#include "server/api.h"
#include "server/redis_jobs.h"
#include "testdata.h"

extern char** environ;

namespace chroma::server {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A child process, its output in a file; killed (SIGKILL) and reaped when destroyed.
class Child {
 public:
  Child(std::vector<std::string> args, const std::string& log) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    if (posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Child() { kill(); }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// A throwaway redis-server for one test; skips the test where Redis is not installed.
class RedisFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("redis-server --version > /dev/null 2>&1") != 0)
      GTEST_SKIP() << "redis-server is not installed (Debian's redis-server; scripts/setup.sh installs it)";
    port_ = free_port();
    redis_ = std::make_unique<Child>(std::vector<std::string>{"redis-server", "--port", std::to_string(port_), "--bind",
                                                              "127.0.0.1", "--save", "", "--appendonly", "no"},
                                     test::temp_path("redis.log").string());
    for (int i = 0; i < 200; ++i) {
      try {
        ping_redis(address());
        return;
      } catch (const Error&) {
        std::this_thread::sleep_for(10ms);
      }
    }
    FAIL() << "redis-server did not start on port " << port_;
  }
  RedisAddress address() const { return {"127.0.0.1", port_}; }
  RedisQueueOptions options(bool take_jobs = true) const {
    RedisQueueOptions o;
    o.address = address();
    o.model = "test-model";
    o.claim_after_seconds = 0.5;
    o.take_jobs = take_jobs;
    return o;
  }
  // One command through hiredis directly: what is in Redis, not what our code says is.
  // `model` names the stream: the servers started by a test name it after their DiT file.
  std::vector<std::string> results_log(const std::string& model = "test-model") const {
    redisContext* c = redisConnect("127.0.0.1", port_);
    auto* r = static_cast<redisReply*>(redisCommand(c, "XRANGE chroma:results:%s - +", model.c_str()));
    std::vector<std::string> ids;
    for (size_t i = 0; r && i < r->elements; ++i) {
      const redisReply* fields = r->element[i]->element[1];
      for (size_t k = 0; k + 1 < fields->elements; k += 2)
        if (std::string(fields->element[k]->str) == "id") ids.push_back(fields->element[k + 1]->str);
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return ids;
  }

  int port_ = 0;
  std::unique_ptr<Child> redis_;
};

TEST(RedisUrl, ParsesAndRefuses) {
  const RedisAddress a = parse_redis_url("redis://queue.local:6380/");
  EXPECT_EQ(a.host, "queue.local");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(parse_redis_url("redis://10.0.0.2").port, 6379);
  for (const char* bad : {"http://x:1", "redis://", "redis://x:0", "redis://x:99999", "redis://x:12ab", "redis://u@x:1"})
    EXPECT_THROW(parse_redis_url(bad), Error) << bad;
}

TEST(RedisUrl, NoServerIsNamed) {
  try {
    ping_redis({"127.0.0.1", free_port()});
    FAIL() << "nothing listens there";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("redis://127.0.0.1:"), std::string::npos) << e.what();
  }
}

TEST_F(RedisFixture, AJobSubmittedAnywhereRunsOnAWorkerAndIsReadEverywhere) {
  FakeRunner fake;
  RedisJobs front(fake.runner(), options(/*take_jobs=*/false), {});  // submits and reads only
  RedisJobs worker(fake.runner(), options(), {});
  const std::string id = front.submit(small("a fox", 3), io::ImageFormat::Jpeg);
  const std::optional<JobStatus> done = front.wait(id);
  ASSERT_TRUE(done);
  ASSERT_EQ(done->state, JobState::Done) << done->error;
  ASSERT_EQ(done->images.size(), 1u);
  EXPECT_EQ(done->images[0].format, io::ImageFormat::Jpeg);
  EXPECT_EQ(io::decode_image(done->images[0].bytes, "result").width, 8);
  EXPECT_EQ(done->request.prompt, "a fox");
  EXPECT_EQ(worker.status(id)->state, JobState::Done) << "any server reads it";
  // The events: text encoding is the runner's business; here 4 progress events (steps 0..3), then done.
  bool ended = false;
  const auto events = front.events_after(id, 0, 10, &ended);
  ASSERT_TRUE(events);
  EXPECT_TRUE(ended);
  ASSERT_EQ(events->size(), 5u);
  EXPECT_EQ((*events)[3].at("progress").at("step"), 3);
  EXPECT_EQ(events->back().at("event"), "done");
  // The worker counts a job once the shared state says done, so a reader may see "done" first.
  for (int i = 0; i < 500 && worker.metrics().done == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(worker.metrics().done, 1u);
  EXPECT_EQ(front.metrics().done, 0u) << "counters are per server";
  EXPECT_EQ(results_log(), std::vector<std::string>{id});
  EXPECT_FALSE(front.status("job-nothing"));
}

TEST_F(RedisFixture, BoundCancellationAndPositions) {
  FakeRunner fake;
  QueueLimits limits;
  limits.max_queued = 2;
  RedisJobs front(fake.runner(), options(false), limits);
  const std::string a = front.submit(small("a")), b = front.submit(small("b"));
  EXPECT_EQ(front.queued(), 2);
  EXPECT_EQ(front.status(a)->queue_position, 0);
  EXPECT_EQ(front.status(b)->queue_position, 1);
  EXPECT_THROW(front.submit(small("c")), QueueFull);
  EXPECT_TRUE(front.cancel(a));
  EXPECT_EQ(front.status(a)->state, JobState::Cancelled);
  EXPECT_FALSE(front.cancel(a)) << "already ended";
  // A worker skips the cancelled job and runs the other; a running job cancelled stops at a step.
  fake.step_ms = 20;
  RedisJobs worker(fake.runner(), options(), limits);
  EXPECT_EQ(front.wait(b)->state, JobState::Done);
  const std::string c = front.submit(small("long", 500));
  // Wait for c itself: the worker may still report b as running for a moment after b is done.
  auto running_c = [&] {
    const std::optional<JobStatus> r = worker.running();
    return r && r->id == c;
  };
  while (!running_c()) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(front.cancel(c));
  const std::optional<JobStatus> cancelled = front.wait(c);
  EXPECT_EQ(cancelled->state, JobState::Cancelled);
  EXPECT_LT(cancelled->progress.step, 500);
  EXPECT_EQ(fake.order, (std::vector<std::string>{"b", "long"})) << "the cancelled job never ran";
}

// A server that stops mid-job hands the job back; another takes it over once its claim has lapsed.
TEST_F(RedisFixture, AStoppingServerHandsItsJobToAnother) {
  FakeRunner first, second;
  first.step_ms = second.step_ms = 10;
  auto leaving = std::make_unique<RedisJobs>(first.runner(), options(), QueueLimits{});
  const std::string id = leaving->submit(small("moved", 100));
  while (!leaving->running()) std::this_thread::sleep_for(5ms);
  leaving->shutdown();  // without finish_running: the job goes back
  EXPECT_THROW(leaving->submit(small("x")), ShuttingDown);
  EXPECT_EQ(leaving->status(id)->state, JobState::Queued);
  RedisJobs staying(second.runner(), options(), {});
  const std::optional<JobStatus> s = staying.wait(id);
  EXPECT_EQ(s->state, JobState::Done) << s->error;
  EXPECT_EQ(second.order, std::vector<std::string>{"moved"});
  EXPECT_EQ(results_log(), std::vector<std::string>{id});
}

// Two servers on the mini models; one is killed with SIGKILL while it runs a job: all 20 jobs still
// complete, each once, and each image is the image its seed makes.
TEST_F(RedisFixture, TwentyJobsOnTwoServersSurviveOneKilledMidJob) {
  const pipeline::ModelFiles files = test::mini_models();
  for (const std::string& f : {files.dit, files.t5, files.vae, files.tokenizer}) CHROMA_REQUIRE_FILE(f);
  const std::string queue = "redis://127.0.0.1:" + std::to_string(port_);
  std::vector<int> ports;
  std::vector<std::unique_ptr<Child>> servers;
  for (int k = 0; k < 2; ++k) {
    ports.push_back(free_port());
    servers.push_back(std::make_unique<Child>(
        std::vector<std::string>{CHROMACPP_BINARY, "serve", "--dit", files.dit, "--t5", files.t5, "--vae", files.vae,
                                 "--tokenizer", files.tokenizer, "--port", std::to_string(ports[k]), "--queue", queue,
                                 "--claim-after", "1", "--max-queue", "100"},
        test::temp_path("serve" + std::to_string(k) + ".log").string()));
    ASSERT_TRUE(servers[k]->started());
  }
  auto client = [&](int k) { return httplib::Client("127.0.0.1", ports[k]); };
  for (int k = 0; k < 2; ++k) {
    bool up = false;
    for (int i = 0; i < 600 && !up; ++i) {
      auto r = client(k).Get("/health");
      up = r && r->status == 200;
      if (!up) std::this_thread::sleep_for(50ms);
    }
    ASSERT_TRUE(up) << "server " << k << " did not start";
  }
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    const json job = {{"prompt", "a red fox"}, {"width", 64}, {"height", 64}, {"steps", 12}, {"seed", 1000 + i}};
    const auto r = client(i % 2).Post("/v1/jobs", job.dump(), "application/json");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    ids.push_back(json::parse(r->body).at("id"));
  }
  // Kill server 0 while it is in the middle of a job's denoising.
  bool killed = false;
  std::string orphan;
  for (int i = 0; i < 2000 && !killed; ++i) {
    const auto p = client(0).Get("/sdapi/v1/progress");
    if (p && p->status == 200) {
      const json state = json::parse(p->body).at("state");
      if (state.at("sampling_step").get<int>() > 0) {
        servers[0]->kill();
        killed = true;
        orphan = state.at("job");
      }
    }
    if (!killed) std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(killed) << "server 0 never ran a job";
  // Every job completes (server 1 takes over the orphan once its claim lapses), read through server 1.
  std::string orphan_png;
  for (size_t i = 0; i < ids.size(); ++i) {
    json status;
    for (int t = 0; t < 1200; ++t) {
      const auto r = client(1).Get(("/v1/jobs/" + ids[i]).c_str());
      ASSERT_TRUE(r);
      status = json::parse(r->body);
      if (status.at("status") != "queued" && status.at("status") != "running") break;
      std::this_thread::sleep_for(50ms);
    }
    ASSERT_EQ(status.at("status"), "done") << ids[i] << ": " << status.dump().substr(0, 300);
    EXPECT_EQ(status.at("images")[0].at("parameters").at("seed"), 1000 + int(i));
    if (ids[i] == orphan) orphan_png = status.at("images")[0].at("b64_json");
  }
  const std::vector<std::string> log = results_log(std::filesystem::path(files.dit).filename().string());
  EXPECT_EQ(log.size(), 20u) << "each job ended once";
  EXPECT_EQ(std::set<std::string>(log.begin(), log.end()), std::set<std::string>(ids.begin(), ids.end()));
  // The job that lost its server, run again on the other: the library's own image for its seed.
  ASSERT_FALSE(orphan_png.empty()) << orphan << " is one of the 20";
  pipeline::PipelineConfig config;
  config.files = files;
  pipeline::Pipeline pipeline(config);
  pipeline::GenerationRequest r;
  r.prompt = "a red fox";
  r.width = r.height = 64;
  r.steps = 12;
  r.seed = uint64_t(1000 + (std::find(ids.begin(), ids.end(), orphan) - ids.begin()));
  const pipeline::GenerationResult direct = pipeline.generate(r);
  EXPECT_EQ(orphan_png, base64_encode(io::encode_image(direct.images[0].to_image(), io::ImageFormat::Png)));
}

}  // namespace
}  // namespace chroma::server

// The server (server/): the OpenAI and A1111 request mappings as pure functions, the job queue with a
// stand-in runner (order, bound, cancellation, events), the HTTP routes over loopback with that
// runner (status codes and error shapes), and one end-to-end run on the mini models whose image must
// be the library's own image, byte for byte.
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include "../pipeline/case_e.h"
#include "image_fixtures.h"
#include "pipeline/output.h"
#include "pipeline/pipeline.h"
#include "pipeline/heap.h"
#include "server/api.h"
#include "server/jobs.h"
#include "server/server.h"
#include "server/web_page.h"
#include "fake_runner.h"
#include "testdata.h"

namespace chroma::server {
namespace {

using nlohmann::json;
using pipeline::GenerationRequest;
using test::error_of;

// ---- mappings ----

TEST(OpenAiRequest, MapsFieldsExtrasAndSdCppArgs) {
  OutputChoice out;
  const GenerationRequest r = openai_request(
      json{{"prompt", "a fox <sd_cpp_extra_args>{\"steps\": 9, \"seed\": 5, \"sample_method\": \"heun\"}</sd_cpp_extra_args>"},
           {"n", 2}, {"size", "512x768"}, {"response_format", "b64_json"}, {"output_format", "webp"},
           {"negative_prompt", "blurry"}, {"cfg_scale", 3.5}, {"scheduler", "beta"}, {"lora", "ink.safetensors:0.5"},
           {"model", "anything"}, {"quality", "high"}},
      &out);
  EXPECT_EQ(r.prompt, "a fox ");
  EXPECT_EQ(r.batch_count, 2);
  EXPECT_EQ(r.width, 512);
  EXPECT_EQ(r.height, 768);
  EXPECT_EQ(r.steps, 9);
  EXPECT_EQ(r.seed, std::optional<uint64_t>(5));
  EXPECT_EQ(r.sampler, "heun");
  EXPECT_EQ(r.negative_prompt, "blurry");
  EXPECT_EQ(r.cfg, 3.5f);
  EXPECT_EQ(r.scheduler, "beta");
  ASSERT_EQ(r.loras.size(), 1u);
  EXPECT_EQ(r.loras[0].scale, 0.5f);
  EXPECT_EQ(out.format, io::ImageFormat::Webp);
}

// What a request leaves out comes from the server's defaults (its model's variant: Flash runs 8 heun
// steps at cfg 1); what it gives wins.
TEST(OpenAiRequest, StartsFromTheServersDefaults) {
  const GenerationRequest flash = pipeline::variant_defaults(pipeline::Variant::Flash);
  OutputChoice out;
  const GenerationRequest r = openai_request(json{{"prompt", "a fox"}}, &out, flash);
  EXPECT_EQ(r.steps, 8);
  EXPECT_EQ(r.sampler, "heun");
  EXPECT_EQ(r.cfg, 1.0f);
  const GenerationRequest given = openai_request(json{{"prompt", "a fox"}, {"steps", 4}, {"cfg_scale", 3}}, &out, flash);
  EXPECT_EQ(given.steps, 4);
  EXPECT_EQ(given.cfg, 3.0f);
  EXPECT_EQ(given.sampler, "heun");
  const GenerationRequest plain = openai_request(json{{"prompt", "a fox"}}, &out);
  EXPECT_EQ(plain.steps, GenerationRequest{}.steps);
  EXPECT_EQ(plain.sampler, "euler");
}

TEST(OpenAiRequest, BadRequestsNameTheField) {
  auto param_of = [](const json& body) {
    OutputChoice out;
    try {
      openai_request(body, &out);
    } catch (const BadRequest& e) {
      return e.param;
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(param_of(json{{"n", 1}}), "prompt");
  EXPECT_EQ(param_of(json{{"prompt", 3}}), "prompt");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"size", "big"}}), "size");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"size", "100x64"}}), "size");  // not a multiple of 16
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"n", 0}}), "n");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"response_format", "url"}}), "response_format");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"output_format", "gif"}}), "output_format");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"sampler", "dpm++3m"}}), "sampler");
  EXPECT_EQ(param_of(json{{"prompt", "x"}, {"steps", "many"}}), "steps");
  EXPECT_EQ(param_of(json{{"prompt", "x <sd_cpp_extra_args>{oops</sd_cpp_extra_args>"}}), "prompt");
  EXPECT_EQ(param_of(json{{"prompt", "x <sd_cpp_extra_args>{}"}}), "prompt");
  OutputChoice out;
  EXPECT_THROW(openai_request(json::array(), &out), BadRequest);
}

TEST(A1111Request, MapsTheTxt2ImgFields) {
  const GenerationRequest d = a1111_request(json{{"prompt", "a fox"}});
  EXPECT_EQ(d.width, 512);  // A1111's defaults, not ours
  EXPECT_EQ(d.steps, 20);
  EXPECT_EQ(d.cfg, 7.0f);
  const GenerationRequest r = a1111_request(json{{"prompt", "a fox"}, {"negative_prompt", "blurry"}, {"seed", -1},
                                                 {"steps", 12}, {"cfg_scale", 4.5}, {"width", 768}, {"height", 512},
                                                 {"sampler_name", "DPM++ 2M"}, {"scheduler", "Karras"},
                                                 {"batch_size", 2}, {"n_iter", 3}, {"restore_faces", false}});
  EXPECT_FALSE(r.seed.has_value()) << "-1 is random";
  EXPECT_EQ(r.sampler, "dpm++2m");
  EXPECT_EQ(r.scheduler, "karras");
  EXPECT_EQ(r.batch_count, 6);
  EXPECT_EQ(r.width, 768);
  EXPECT_EQ(sampler_from_a1111("Euler a"), "euler_a");
  EXPECT_EQ(sampler_from_a1111("euler_a"), "euler_a");
  EXPECT_EQ(sampler_from_a1111("DDIM"), "");
  EXPECT_EQ(scheduler_from_a1111("Automatic"), "author");
  EXPECT_THROW(a1111_request(json{{"sampler_name", "DDIM"}}), BadRequest);
  EXPECT_THROW(a1111_request(json{{"width", 100}}), BadRequest);
  for (const json& s : a1111_samplers()) EXPECT_FALSE(sampler_from_a1111(s.at("name")).empty()) << s;
}

TEST(Limits, OneRequestCannotTakeTheMachine) {
  const RequestLimits limits{512, 30, 4, 100};
  GenerationRequest r;
  r.width = r.height = 512;
  r.steps = 30;
  EXPECT_NO_THROW(check_limits(r, limits));
  r.width = 528;
  EXPECT_NE(error_of([&] { check_limits(r, limits); }).find("--max-size"), std::string::npos);
  r.width = 512;
  r.steps = 31;
  EXPECT_NE(error_of([&] { check_limits(r, limits); }).find("--max-steps"), std::string::npos);
  r.steps = 30;
  r.batch_count = 5;
  EXPECT_THROW(check_limits(r, limits), BadRequest);
  r.batch_count = 1;
  r.prompt = std::string(101, 'a');
  EXPECT_THROW(check_limits(r, limits), BadRequest);
  r.prompt = "a";
  r.init_image = "/etc/passwd";
  EXPECT_NE(error_of([&] { check_limits(r, limits); }).find("file paths"), std::string::npos);
}

TEST(Base64, KnownVectors) {
  auto enc = [](const std::string& s) { return base64_encode(std::vector<uint8_t>(s.begin(), s.end())); };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");  // RFC 4648 §10
}

TEST(Base64, DecodesStrictlyAndRoundTrips) {
  auto dec = [](const std::string& s) {
    const std::vector<uint8_t> b = base64_decode(s, "image");
    return std::string(b.begin(), b.end());
  };
  EXPECT_EQ(dec("Zm9vYmFy"), "foobar");
  EXPECT_EQ(dec("Zg=="), "f");
  EXPECT_EQ(dec("Zg"), "f") << "padding is optional";
  EXPECT_EQ(dec("Zm9v\nYmFy"), "foobar") << "line breaks are ignored";
  EXPECT_EQ(dec("data:image/png;base64,Zm8="), "fo");
  std::vector<uint8_t> all(256);
  for (int i = 0; i < 256; ++i) all[size_t(i)] = uint8_t(i);
  EXPECT_EQ(base64_decode(base64_encode(all), "x"), all);
  for (const char* bad : {"Zm9v!", "Z", "Zg==Zg", "Zg===", "data:image/png,Zm8="}) {
    try {
      base64_decode(bad, "image");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const BadRequest& e) {
      EXPECT_EQ(e.param, "image") << bad;
    }
  }
}

// A small PNG as base64, as clients send it.
std::string png_base64(int w, int h, uint8_t value, io::TextChunks text = {}) {
  io::Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(size_t(w * h * 3), value);
  img.text = std::move(text);
  return base64_encode(io::encode_image(img, io::ImageFormat::Png));
}

TEST(A1111Request, Img2ImgTakesTheImageMaskAndStrength) {
  const GenerationRequest r = a1111_img2img_request(json{{"prompt", "a fox"}, {"init_images", {png_base64(80, 48, 7)}},
                                                         {"mask", png_base64(80, 48, 255)}, {"denoising_strength", 0.4},
                                                         {"mask_blur", 2}, {"width", 64}, {"height", 64}});
  EXPECT_EQ(r.init_pixels.width, 80);
  EXPECT_EQ(r.init_pixels.rgb[0], 7);
  EXPECT_EQ(r.mask_pixels.rgb[0], 255);
  EXPECT_EQ(r.strength, 0.4f);
  EXPECT_EQ(r.mask_blur, 2);
  EXPECT_EQ(a1111_img2img_request(json{{"init_images", {png_base64(8, 8, 1)}}}).strength, 0.75f);
  auto param_of = [](const json& body) {
    try {
      a1111_img2img_request(body);
    } catch (const BadRequest& e) {
      return e.param;
    }
    return std::string("(accepted)");
  };
  EXPECT_EQ(param_of(json{{"prompt", "x"}}), "init_images");
  EXPECT_EQ(param_of(json{{"init_images", {"%%%"}}}), "init_images");
  EXPECT_EQ(param_of(json{{"init_images", {base64_encode({'h', 'i'})}}}), "init_images");  // not an image
  EXPECT_EQ(param_of(json{{"init_images", {png_base64(8, 8, 1)}}, {"denoising_strength", 1.5}}), "denoising_strength");
}

TEST(OpenAiRequest, EditsReadTheFormAndOpenAisTransparentMask) {
  const std::vector<uint8_t> image = io::encode_image([] {
    io::Image img;
    img.width = 40;
    img.height = 24;
    img.rgb.assign(40 * 24 * 3, 100);
    return img;
  }(), io::ImageFormat::Png);
  OutputChoice out;
  const GenerationRequest plain = openai_edit_request(json{{"prompt", "a hat"}, {"n", "2"}, {"steps", "5"}}, image, {}, &out);
  EXPECT_EQ(plain.batch_count, 2) << "form numbers are numbers";
  EXPECT_EQ(plain.steps, 5);
  EXPECT_EQ(plain.strength, 0.75f) << "no mask: img2img";
  EXPECT_EQ(plain.width, 32) << "the image's size, to a multiple of 16";
  EXPECT_EQ(plain.height, 16);
  const GenerationRequest masked =
      openai_edit_request(json{{"prompt", "a hat"}, {"size", "64x64"}}, image, image, &out);
  EXPECT_EQ(masked.strength, 1.0f) << "with a mask: the masked area anew";
  EXPECT_EQ(masked.width, 64);
  EXPECT_EQ(openai_edit_request(json{{"prompt", "a hat"}, {"strength", "0.3"}}, image, image, &out).strength, 0.3f);
  // OpenAI marks the area to edit with transparency: alpha 0 → repaint (white), 255 → keep (black).
  std::vector<uint8_t> rgba;
  for (int i = 0; i < 40 * 24; ++i) rgba.insert(rgba.end(), {9, 9, 9, uint8_t(i % 40 < 20 ? 0 : 255)});
  const GenerationRequest transparent =
      openai_edit_request(json{{"prompt", "a hat"}}, image, test::rgba_png(40, 24, rgba), &out);
  ASSERT_EQ(transparent.mask_pixels.width, 40);
  EXPECT_TRUE(transparent.mask_pixels.alpha.empty());
  EXPECT_EQ(transparent.mask_pixels.rgb[0], 255) << "transparent: repaint";
  EXPECT_EQ(transparent.mask_pixels.rgb[3 * 39], 0) << "opaque: keep";
  EXPECT_THROW(openai_edit_request(json{{"prompt", "a hat"}}, {}, {}, &out), BadRequest);
  EXPECT_THROW(openai_edit_request(json{{"prompt", "a hat"}}, {'x'}, {}, &out), BadRequest);
}

TEST(PngInfo, ReadsTheTextChunks) {
  const json info = png_info(json{{"image", png_base64(4, 4, 0, {{"parameters", "a fox\nSteps: 2"},
                                                                  {"chroma.cpp", "{\"seed\": 3}"}})}});
  EXPECT_EQ(info.at("info"), "a fox\nSteps: 2");
  EXPECT_EQ(info.at("parameters").at("seed"), 3);
  EXPECT_EQ(info.at("items").size(), 2u);
  EXPECT_TRUE(png_info(json{{"image", png_base64(4, 4, 0)}}).at("parameters").is_null());
  EXPECT_THROW(png_info(json{{"image", 5}}), BadRequest);
}

// ---- the queue, with a stand-in runner ----

TEST(JobQueue, RunsInOrderAndKeepsEachResult) {
  FakeRunner fake;
  JobQueue queue(fake.runner(), {});
  const std::string a = queue.submit(small("a", 3)), b = queue.submit(small("b", 4));
  const std::optional<JobStatus> sb = queue.wait(b), sa = queue.wait(a);
  ASSERT_TRUE(sa && sb);
  EXPECT_EQ(sa->state, JobState::Done);
  EXPECT_EQ(sb->state, JobState::Done);
  EXPECT_EQ(fake.order, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(sb->images.size(), 1u);
  const io::Image decoded = io::read_image([&] {
    const std::string path = test::temp_path("job.png").string();
    std::FILE* f = std::fopen(path.c_str(), "wb");
    std::fwrite(sb->images[0].bytes.data(), 1, sb->images[0].bytes.size(), f);
    std::fclose(f);
    return path;
  }());
  EXPECT_EQ(decoded.rgb[0], 4) << "b's own image";
  EXPECT_NE(sb->images[0].infotext.find("Steps: 4"), std::string::npos) << sb->images[0].infotext;
  EXPECT_FALSE(queue.status("job-nope").has_value());
}

TEST(JobQueue, BoundedQueueAndCancellation) {
  FakeRunner fake;
  fake.step_ms = 20;
  JobQueue queue(fake.runner(), {2, 600});
  const std::string running = queue.submit(small("long", 1000));
  while (fake.started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const std::string q1 = queue.submit(small("q1")), q2 = queue.submit(small("q2"));
  EXPECT_THROW(queue.submit(small("q3")), QueueFull);
  EXPECT_EQ(queue.status(q2)->queue_position, 1);
  EXPECT_TRUE(queue.cancel(q1));                        // queued: at once
  EXPECT_EQ(queue.status(q1)->state, JobState::Cancelled);
  EXPECT_EQ(queue.status(q2)->queue_position, 0);
  EXPECT_TRUE(queue.cancel(running));                   // running: at its next step
  const std::optional<JobStatus> r = queue.wait(running);
  EXPECT_EQ(r->state, JobState::Cancelled);
  EXPECT_LT(r->progress.step, 1000);
  EXPECT_EQ(queue.wait(q2)->state, JobState::Done);
  EXPECT_FALSE(queue.cancel(q2)) << "it has ended";
  EXPECT_EQ(fake.order, (std::vector<std::string>{"long", "q2"})) << "the cancelled job never ran";
  const std::string failing = queue.submit(small("fail"));
  const std::optional<JobStatus> f = queue.wait(failing);
  EXPECT_EQ(f->state, JobState::Failed);
  EXPECT_NE(f->error.find("out of memory"), std::string::npos);
}

TEST(JobQueue, EventsFollowTheStepsThenTheEnd) {
  FakeRunner fake;
  JobQueue queue(fake.runner(), {});
  const std::string id = queue.submit(small("e", 3));
  std::vector<json> events;
  bool ended = false;
  while (!ended) {
    const auto more = queue.events_after(id, events.size(), 1000, &ended);
    ASSERT_TRUE(more);
    events.insert(events.end(), more->begin(), more->end());
  }
  ASSERT_EQ(events.size(), 5u);  // steps 0…3, then the end
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(events[size_t(i)].at("event"), "progress");
    EXPECT_EQ(events[size_t(i)].at("progress").at("step"), i);
  }
  EXPECT_EQ(events.back().at("event"), "done");
  EXPECT_EQ(events.back().at("images").size(), 1u);
  EXPECT_FALSE(events.back().at("images")[0].contains("b64_json")) << "events stay small";
  EXPECT_FALSE(events[1].contains("preview")) << "not asked for";
}

TEST(JobQueue, PreviewsAreJpegsOfTheDenoisedEstimate) {
  FakeRunner fake;
  JobQueue queue(fake.runner(), {});
  const std::string id = queue.submit(small("p", 2), io::ImageFormat::Png, 90, /*previews=*/true);
  ASSERT_EQ(queue.wait(id)->state, JobState::Done);
  bool ended = false;
  const std::vector<json> events = *queue.events_after(id, 0, 0, &ended);
  EXPECT_FALSE(events[0].contains("preview")) << "step 0 has no estimate yet";
  const std::string url = events[1].at("preview");
  ASSERT_EQ(url.rfind("data:image/jpeg;base64,", 0), 0u) << url.substr(0, 40);
  const io::Image img = io::decode_image(base64_decode(url, "preview"), "preview");
  EXPECT_EQ(img.width, 3);
  EXPECT_EQ(img.height, 2);
  EXPECT_NEAR(img.rgb[0], 123, 3) << "the zero latent's colour, (bias + 1)/2, through JPEG";
  EXPECT_FALSE(queue.status(id)->preview.empty());
}

TEST(JobQueue, ShutdownCancelsTheRunningAndTheQueued) {
  FakeRunner fake;
  fake.step_ms = 10;
  auto queue = std::make_unique<JobQueue>(fake.runner(), QueueLimits{});
  const std::string a = queue->submit(small("a", 100000)), b = queue->submit(small("b"));
  while (fake.started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  queue->shutdown();
  EXPECT_EQ(queue->status(a)->state, JobState::Cancelled);
  EXPECT_EQ(queue->status(b)->state, JobState::Cancelled);
  EXPECT_THROW(queue->submit(small("c")), ShuttingDown);
}

TEST(JobQueue, ShutdownCanLetTheRunningJobFinish) {
  FakeRunner fake;
  fake.step_ms = 5;
  JobQueue queue(fake.runner(), {});
  const std::string a = queue.submit(small("a", 20)), b = queue.submit(small("b"));
  while (fake.started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  queue.shutdown(/*finish_running=*/true);
  EXPECT_EQ(queue.status(a)->state, JobState::Done);
  EXPECT_EQ(queue.status(b)->state, JobState::Cancelled);
  EXPECT_THROW(queue.submit(small("c")), ShuttingDown);
  const QueueMetrics m = queue.metrics();
  EXPECT_EQ(m.done, 1u);
  EXPECT_EQ(m.cancelled, 1u);
  EXPECT_EQ(m.steps, 20u);
  EXPECT_GT(m.busy_seconds, 0.0);
}

// ---- HTTP over loopback ----

class Http : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}, QueueLimits limits = {}) {
    queue_ = std::make_unique<JobQueue>(fake_.runner(), limits);
    options.port = 0;
    options.model_name = "chroma-test";
    server_ = std::make_unique<Server>(*queue_, options);
    port_ = server_->bind();
    thread_ = std::thread([this] { server_->run(); });
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    for (int i = 0; i < 200 && !client_->Get("/health"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  void TearDown() override {
    if (server_) server_->stop();
    if (thread_.joinable()) thread_.join();
    client_.reset();
    server_.reset();
    queue_.reset();
  }
  httplib::Result post(const std::string& path, const json& body) {
    return client_->Post(path.c_str(), body.dump(), "application/json");
  }
  static json body_of(const httplib::Result& r) { return json::parse(r->body); }

  FakeRunner fake_;
  std::unique_ptr<JobQueue> queue_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<httplib::Client> client_;
  std::thread thread_;
  int port_ = 0;
};

TEST_F(Http, OpenAiGenerationsAndErrorShapes) {
  start();
  const auto ok = post("/v1/images/generations", {{"prompt", "a fox"}, {"size", "64x64"}, {"n", 2}, {"steps", 3}});
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  const json body = body_of(ok);
  ASSERT_EQ(body.at("data").size(), 2u);
  EXPECT_EQ(body["data"][0]["b64_json"].get<std::string>().substr(0, 8), "iVBORw0K") << "a PNG";
  const auto bad = post("/v1/images/generations", {{"prompt", "x"}, {"size", "100x100"}});
  ASSERT_EQ(bad->status, 400);
  const json err = body_of(bad).at("error");
  EXPECT_EQ(err.at("type"), "invalid_request_error");
  EXPECT_EQ(err.at("param"), "size");
  EXPECT_NE(err.at("message").get<std::string>().find("multiple of 16"), std::string::npos);
  const auto not_json = client_->Post("/v1/images/generations", "{nope", "application/json");
  EXPECT_EQ(not_json->status, 400);
  EXPECT_EQ(client_->Get("/v1/nothing")->status, 404);
  EXPECT_EQ(body_of(client_->Get("/v1/models")).at("data")[0].at("id"), "chroma-test");
  const auto failed = post("/v1/images/generations", {{"prompt", "fail"}, {"size", "64x64"}, {"steps", 1}});
  EXPECT_EQ(failed->status, 500);
  EXPECT_NE(body_of(failed).at("error").at("message").get<std::string>().find("out of memory"), std::string::npos);
}

TEST_F(Http, LimitsKeyAndBodySize) {
  ServerOptions o;
  o.api_key = "sekrit";
  o.limits.max_side = 128;
  o.max_body_bytes = 4096;
  start(o);
  EXPECT_EQ(client_->Get("/health")->status, 200) << "health needs no key";
  const auto no_key = post("/v1/images/generations", {{"prompt", "x"}});
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(body_of(no_key).at("error").at("type"), "authentication_error");
  const httplib::Headers auth = {{"Authorization", "Bearer sekrit"}};
  const auto big = client_->Post("/v1/images/generations", auth, json{{"prompt", "x"}, {"size", "256x256"}}.dump(), "application/json");
  EXPECT_EQ(big->status, 400);
  EXPECT_NE(body_of(big).at("error").at("message").get<std::string>().find("--max-size"), std::string::npos);
  const auto huge = client_->Post("/v1/images/generations", auth, json{{"prompt", std::string(8000, 'a')}}.dump(), "application/json");
  EXPECT_EQ(huge->status, 413);
  const auto fine = client_->Post("/sdapi/v1/txt2img", auth, json{{"prompt", "x"}, {"width", 64}, {"height", 64}, {"steps", 1}}.dump(), "application/json");
  EXPECT_EQ(fine->status, 200) << fine->body;
}

// The raw answer to a request written on a fresh connection (the status line first).
std::string raw_exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::send(fd, request.data(), request.size(), 0) == ssize_t(request.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) answer.append(buf, size_t(n));
  }
  ::close(fd);
  return answer;
}

// What curl sends: `-d` labels a JSON body application/x-www-form-urlencoded (which cpp-httplib's own
// reading caps at 8 KiB), and `-X POST` alone sends no Content-Length.
TEST_F(Http, BodiesAsCurlSendsThem) {
  start();
  json img2img = {{"prompt", "a hat"}, {"init_images", {png_base64(64, 64, 0)}}, {"width", 64}, {"height", 64}, {"steps", 1}};
  img2img["negative_prompt"] = std::string(12000, 'n');  // the body over 8 KiB, the prompt within its limit
  const auto form = client_->Post("/sdapi/v1/img2img", img2img.dump(), "application/x-www-form-urlencoded");
  ASSERT_TRUE(form);
  ASSERT_EQ(form->status, 200) << form->body;
  EXPECT_EQ(body_of(form).at("images").size(), 1u);
  const std::string no_length = raw_exchange(port_, "POST /sdapi/v1/interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(no_length.substr(0, 12), "HTTP/1.1 200") << no_length;
  const auto multipart = client_->Post("/v1/jobs", httplib::MultipartFormDataItems{{"prompt", "x", "", ""}});
  ASSERT_TRUE(multipart);
  EXPECT_EQ(multipart->status, 400);
  EXPECT_NE(body_of(multipart).at("error").at("message").get<std::string>().find("expected a JSON body"), std::string::npos);
}

TEST_F(Http, JobsEventsCancelAndQueueFull) {
  fake_.step_ms = 20;
  ServerOptions o;
  o.limits.max_steps = 10000;
  start(o, {1, 600});
  const auto created = post("/v1/jobs", {{"prompt", "long"}, {"width", 64}, {"height", 64}, {"steps", 1000}});
  ASSERT_EQ(created->status, 202) << created->body;
  const std::string id = body_of(created).at("id");
  EXPECT_EQ(created->get_header_value("Location"), "/v1/jobs/" + id);
  while (fake_.started == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto queued = post("/v1/jobs", {{"prompt", "next"}, {"width", 64}, {"height", 64}, {"steps", 2}, {"output_format", "jpeg"}});
  ASSERT_EQ(queued->status, 202);
  const auto full = post("/v1/jobs", {{"prompt", "one too many"}, {"width", 64}, {"height", 64}});
  EXPECT_EQ(full->status, 429);
  EXPECT_FALSE(full->get_header_value("Retry-After").empty());
  EXPECT_EQ(post("/v1/jobs", {{"prompt", "x"}, {"widht", 64}})->status, 400) << "unknown keys are refused";

  // The event stream of the running job: progress events, then, after DELETE, the end.
  std::string stream;
  std::thread reader([&] {
    httplib::Client c("127.0.0.1", port_);
    c.Get(("/v1/jobs/" + id + "/events").c_str(), [&](const char* data, size_t n) {
      stream.append(data, n);
      return true;
    });
  });
  const auto progress = client_->Get("/sdapi/v1/progress");
  EXPECT_EQ(body_of(progress).at("state").at("sampling_steps"), 1000);
  EXPECT_EQ(body_of(progress).at("state").at("job_count"), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto deleted = client_->Delete(("/v1/jobs/" + id).c_str());
  EXPECT_EQ(deleted->status, 200);
  reader.join();
  EXPECT_NE(stream.find("data: {\"event\":\"progress\""), std::string::npos) << stream.substr(0, 300);
  EXPECT_NE(stream.find("\"event\":\"cancelled\""), std::string::npos) << stream.substr(stream.size() - std::min<size_t>(300, stream.size()));
  EXPECT_EQ(client_->Delete(("/v1/jobs/" + id).c_str())->status, 409) << "already ended";
  EXPECT_EQ(client_->Get("/v1/jobs/job-unknown")->status, 404);
  const std::string next = body_of(queued).at("id");
  json status;
  for (int i = 0; i < 500; ++i) {
    status = body_of(client_->Get(("/v1/jobs/" + next).c_str()));
    if (status.at("status") == "done") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(status.at("status"), "done");
  EXPECT_EQ(status.at("images")[0].at("format"), "jpeg");
  EXPECT_EQ(status.at("images")[0].at("b64_json").get<std::string>().substr(0, 4), "/9j/") << "a JPEG";
}

TEST_F(Http, MetricsInPrometheusText) {
  start();
  ASSERT_EQ(post("/v1/images/generations", {{"prompt", "x"}, {"size", "64x64"}, {"steps", 3}})->status, 200);
  const auto m = client_->Get("/metrics");
  ASSERT_EQ(m->status, 200);
  EXPECT_EQ(m->get_header_value("Content-Type"), "text/plain; version=0.0.4");
  for (const char* line : {"chromacpp_jobs_total{state=\"done\"} 1\n", "chromacpp_steps_total 3\n",
                           "chromacpp_queue_length 0\n", "chromacpp_job_seconds_count 1\n", "# TYPE chromacpp_job_seconds summary\n"})
    EXPECT_NE(m->body.find(line), std::string::npos) << line << "\n" << m->body;
}

TEST_F(Http, A1111ListsAndInterrupt) {
  start();
  EXPECT_EQ(body_of(client_->Get("/sdapi/v1/samplers")).size(), a1111_samplers().size());
  EXPECT_EQ(body_of(client_->Get("/sdapi/v1/schedulers"))[0].at("name"), "author");
  EXPECT_EQ(body_of(client_->Get("/sdapi/v1/sd-models"))[0].at("model_name"), "chroma-test");
  EXPECT_EQ(body_of(client_->Get("/sdapi/v1/options")).at("sd_model_checkpoint"), "chroma-test");
  EXPECT_EQ(post("/sdapi/v1/options", {{"sd_model_checkpoint", "x"}})->status, 200);
  const auto bad = post("/sdapi/v1/txt2img", {{"sampler_name", "DDIM"}});
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(body_of(bad).at("detail").get<std::string>().find("DDIM"), std::string::npos);
  EXPECT_EQ(post("/sdapi/v1/interrupt", json::object())->status, 200);
  // An interrupted synchronous request answers 409 with the reason.
  fake_.step_ms = 20;
  std::thread interrupter([&] {
    while (!queue_->running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    httplib::Client c("127.0.0.1", port_);
    c.Post("/sdapi/v1/interrupt", "{}", "application/json");
  });
  const auto interrupted = post("/sdapi/v1/txt2img", {{"prompt", "long"}, {"width", 64}, {"height", 64}, {"steps", 90}});
  interrupter.join();
  EXPECT_EQ(interrupted->status, 409);
  EXPECT_NE(body_of(interrupted).at("detail").get<std::string>().find("cancelled"), std::string::npos);
  fake_.step_ms = 0;
  const auto ok = post("/sdapi/v1/txt2img", {{"prompt", "a fox"}, {"width", 64}, {"height", 64}, {"steps", 2}, {"batch_size", 2}});
  ASSERT_EQ(ok->status, 200) << ok->body;
  const json info = json::parse(body_of(ok).at("info").get<std::string>());
  EXPECT_EQ(info.at("all_seeds"), json({100, 101}));
  EXPECT_EQ(body_of(ok).at("images").size(), 2u);
}

TEST_F(Http, EditsImg2ImgAndPngInfo) {
  start();
  const std::string png = [] {
    io::Image img;
    img.width = img.height = 32;
    img.rgb.assign(32 * 32 * 3, 50);
    const std::vector<uint8_t> b = io::encode_image(img, io::ImageFormat::Png);
    return std::string(b.begin(), b.end());
  }();
  const httplib::MultipartFormDataItems form = {{"image", png, "in.png", "image/png"},
                                                {"prompt", "a hat", "", ""},
                                                {"steps", "3", "", ""},
                                                {"output_format", "webp", "", ""}};
  const auto edit = client_->Post("/v1/images/edits", form);
  ASSERT_EQ(edit->status, 200) << edit->body;
  EXPECT_EQ(body_of(edit).at("output_format"), "webp");
  EXPECT_EQ(body_of(edit).at("data").size(), 1u);
  const auto no_image = client_->Post("/v1/images/edits", httplib::MultipartFormDataItems{{"prompt", "x", "", ""}});
  EXPECT_EQ(no_image->status, 400);
  EXPECT_EQ(body_of(no_image).at("error").at("param"), "image");
  EXPECT_EQ(post("/v1/images/edits", {{"prompt", "x"}})->status, 400) << "JSON is not a form";
  const auto img2img = post("/sdapi/v1/img2img", {{"prompt", "a hat"}, {"init_images", {base64_encode({png.begin(), png.end()})}},
                                                  {"width", 64}, {"height", 64}, {"steps", 2}});
  ASSERT_EQ(img2img->status, 200) << img2img->body;
  EXPECT_FALSE(body_of(img2img).at("parameters").contains("init_images")) << "not echoed back";
  const std::string made = body_of(img2img).at("images")[0];
  const auto info = post("/sdapi/v1/png-info", {{"image", made}});
  ASSERT_EQ(info->status, 200);
  EXPECT_NE(body_of(info).at("info").get<std::string>().find("a hat"), std::string::npos);
}

TEST_F(Http, ThePageAndJobsWithImages) {
  ServerOptions o;
  o.api_key = "k";
  start(o);
  const auto page = client_->Get("/");
  ASSERT_EQ(page->status, 200) << "the page itself needs no key; it asks for one";
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page->body.find("/v1/jobs"), std::string::npos);
  EXPECT_EQ(page->body, std::string(web_page()));
  const httplib::Headers auth = {{"Authorization", "Bearer k"}};
  const json job = {{"prompt", "a hat"}, {"width", 64}, {"height", 64}, {"steps", 1},
                    {"init_image", png_base64(64, 64, 9)}, {"mask", png_base64(64, 64, 255)}, {"strength", 0.5}};
  const auto created = client_->Post("/v1/jobs", auth, job.dump(), "application/json");
  ASSERT_EQ(created->status, 202) << created->body;
  EXPECT_EQ(queue_->wait(body_of(created).at("id"))->state, JobState::Done);
  json path = job;
  path["init_image"] = "/etc/hostname";  // a path is not an image
  const auto refused = client_->Post("/v1/jobs", auth, path.dump(), "application/json");
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(body_of(refused).at("error").at("param"), "init_image");
  json mask_only = job;
  mask_only.erase("init_image");
  EXPECT_EQ(client_->Post("/v1/jobs", auth, mask_only.dump(), "application/json")->status, 400);
}

// The heap policy `serve` runs under, set as its Pipeline sets it: before any thread starts (threads that
// start earlier keep arenas of their own, whose tops malloc_trim does not hand back).
[[maybe_unused]] const bool heap_policy_set = (pipeline::reuse_freed_activations(), true);

// The process's memory now: heap blocks in use, and resident pages after handing the heap's free
// pages back (malloc_trim, what the pipeline does at the end of every phase).
struct Memory {
  double in_use_mib, resident_mib;
};
Memory memory_now() {
  const struct mallinfo2 heap = mallinfo2();
  malloc_trim(0);
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return {double(heap.uordblks + heap.hblkhd) / (1 << 20), double(resident * size_t(sysconf(_SC_PAGESIZE))) / (1 << 20)};
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;  // its quarantine keeps freed memory: RSS says nothing there
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

// A flood of malformed requests from 10 concurrent clients, interleaved with 50 valid generations and a
// few clients that stop sending mid-request: every valid one answered with its own image, every bad one
// a 4xx with a message, the server still serving afterwards, and its memory back where it was.
TEST_F(Http, MalformedFloodBesideValidRequests) {
  ServerOptions o;
  o.read_timeout_seconds = 1;
  o.max_body_bytes = 1 << 20;
  start(o, {100, 600});
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"/v1/images/generations", "{"},
      {"/v1/images/generations", "[]"},
      {"/v1/images/generations", R"({"prompt": 1})"},
      {"/v1/images/generations", R"({"prompt": "x", "n": 1e300})"},
      {"/v1/images/generations", R"({"prompt": "x", "size": "-64x64"})"},
      {"/v1/images/generations", R"({"prompt": "x", "size": "99999999999999999999x64"})"},
      {"/v1/images/generations", R"({"prompt": "x", "steps": -5})"},
      {"/v1/images/generations", "{\"prompt\": \"" + std::string(10 << 20, 'a') + "\"}"},  // 10 MB: over the body limit
      {"/v1/images/generations", "{\"prompt\": \"" + std::string(100000, 'a') + "\"}"},   // over the prompt limit
      {"/v1/jobs", R"({"prompt": "x", "width": "wide"})"},
      {"/v1/jobs", R"({"prompt": "x", "init_image": "not base64 at all!"})"},
      {"/sdapi/v1/txt2img", R"({"width": 0})"},
      {"/sdapi/v1/txt2img", R"({"batch_size": 100000})"},
      {"/sdapi/v1/img2img", R"({"init_images": [5]})"},
      {"/sdapi/v1/png-info", R"({"image": "AAAA"})"},
      {"/v1/images/edits", "--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\ntrunc"},
  };
  // The baseline: after one request of every kind, so that what is allocated once (thread stacks of the
  // server's pool, the first job's buffers) is there before it is measured.
  for (const auto& [path, body] : bad)
    client_->Post(path.c_str(), body, path == "/v1/images/edits" ? "multipart/form-data; boundary=x" : "application/json");
  ASSERT_EQ(post("/v1/images/generations", {{"prompt", "warm"}, {"size", "64x64"}, {"steps", 1}})->status, 200);
  const Memory before = memory_now();
  std::atomic<int> bad_ok{0}, good_ok{0}, failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 10; ++c)
    clients.emplace_back([&, c] {
      httplib::Client client("127.0.0.1", port_);
      for (int i = 0; i < 100; ++i) {
        const auto& [path, body] = bad[size_t(c * 100 + i) % bad.size()];
        const char* type = path == "/v1/images/edits" ? "multipart/form-data; boundary=x" : "application/json";
        const auto r = client.Post(path.c_str(), body, type);
        if (r && r->status >= 400 && r->status < 500 && json::parse(r->body, nullptr, false).contains("error")) ++bad_ok;
        else ++failures;
        if (i % 20 == 0) {  // a valid generation every 20 bad requests: 5 per client
          const int steps = 1 + (c * 5 + i / 20) % 7;
          const auto g = client.Post("/v1/images/generations",
                                     json{{"prompt", "ok"}, {"size", "64x64"}, {"steps", steps}}.dump(), "application/json");
          if (!g || g->status != 200) {
            ++failures;
            continue;
          }
          const std::vector<uint8_t> png = base64_decode(json::parse(g->body).at("data")[0].at("b64_json"), "png");
          if (io::decode_image(png, "result").rgb[0] == steps) ++good_ok;  // this request's own image
          else ++failures;
        }
      }
    });
  // Clients that send half a request and then nothing: dropped after the read timeout.
  std::vector<std::thread> slow;
  for (int k = 0; k < 3; ++k)
    slow.emplace_back([&] {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(uint16_t(port_));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
        const std::string partial = "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro";
        [[maybe_unused]] const ssize_t n = ::send(fd, partial.data(), partial.size(), 0);
        char buf[256];
        [[maybe_unused]] const ssize_t got = ::recv(fd, buf, sizeof buf, 0);  // returns when the server gives up
      }
      ::close(fd);
    });
  for (std::thread& t : clients) t.join();
  for (std::thread& t : slow) t.join();
  EXPECT_EQ(bad_ok, 1000);
  EXPECT_EQ(good_ok, 50);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(client_->Get("/health")->status, 200) << "still serving";
  // 63 of the bad requests carried 10 MB each (the clients' copies are in this process too), and 50 results
  // are kept (a 64² PNG each): the heap in use and the resident memory must come back to within a few MiB
  // of the baseline, not grow by what went through.
  const Memory after = memory_now();
  std::printf("heap in use %.1f MiB → %.1f MiB, resident %.1f MiB → %.1f MiB\n", before.in_use_mib, after.in_use_mib,
              before.resident_mib, after.resident_mib);
  if (!kAddressSanitizer) {
    EXPECT_LT(after.in_use_mib - before.in_use_mib, 4.0) << "the flood left heap blocks behind";
    EXPECT_LT(after.resident_mib - before.resident_mib, 16.0) << "the flood left resident memory behind";
  }
}

// The page's script parses (node --check), where Node.js is installed.
TEST(WebPage, ScriptIsValidJavaScript) {
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed: the script's syntax is not checked";
  const std::string page(web_page());
  const size_t a = page.find("<script>"), b = page.rfind("</script>");
  ASSERT_NE(a, std::string::npos);
  ASSERT_NE(b, std::string::npos);
  const std::string path = test::temp_path("page.js").string();
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    const std::string script = page.substr(a + 8, b - a - 8);
    std::fwrite(script.data(), 1, script.size(), f);
    std::fclose(f);
  }
  EXPECT_EQ(std::system(("node --check " + path).c_str()), 0);
}

// ---- end to end on the mini models ----

TEST(ServerEndToEnd, TheServersImageIsTheLibrarysImage) {
  const pipeline::ModelFiles files = test::mini_models();
  for (const std::string& f : {files.dit, files.t5, files.vae, files.tokenizer}) CHROMA_REQUIRE_FILE(f);
  pipeline::PipelineConfig config;
  config.files = files;
  pipeline::Pipeline pipeline(config);
  JobQueue queue([&](const GenerationRequest& r, const pipeline::RunHooks& h) { return pipeline.generate(r, h); }, {});
  ServerOptions options;
  options.port = 0;
  Server server(queue, options);
  const int port = server.bind();
  std::thread t([&] { server.run(); });
  httplib::Client client("127.0.0.1", port);
  const auto res = client.Post("/sdapi/v1/txt2img",
                               json{{"prompt", "a red fox"}, {"width", 64}, {"height", 64}, {"steps", 2}, {"seed", 42},
                                    {"cfg_scale", 4}, {"sampler_name", "Euler"}}.dump(),
                               "application/json");
  server.stop();
  t.join();
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  GenerationRequest r;
  r.prompt = "a red fox";
  r.width = r.height = 64;
  r.steps = 2;
  r.seed = 42;
  r.cfg = 4;
  const pipeline::GenerationResult direct = pipeline.generate(r);
  const std::string want = base64_encode(io::encode_image(direct.images[0].to_image(), io::ImageFormat::Png));
  EXPECT_EQ(json::parse(res->body).at("images")[0].get<std::string>(), want);
}

}  // namespace
}  // namespace chroma::server

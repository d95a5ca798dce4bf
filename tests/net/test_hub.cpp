// `chromacpp pull` against a fake Hugging Face Hub on 127.0.0.1: the API server lists a Chroma1-HD-like
// diffusers repository (in two pages) and serves small files; LFS files redirect to a second server on
// another host name and port, like the Hub's CDN.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "http_test_server.h"
#include "net/cache.h"
#include "net/hub.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace chroma;
using namespace chroma::net;
using namespace chroma::net::testing;

namespace {

const std::string kRepo = "lodestones/Chroma1-HD";

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng());
  return s;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

struct FakeFile {
  std::string content;
  bool lfs;
};

// The repository as the Hub would hold it; the files the engine needs are marked.
std::map<std::string, FakeFile> fake_repo() {
  std::map<std::string, FakeFile> f;
  uint32_t seed = 1;
  auto lfs = [&](size_t n) { return FakeFile{random_bytes(n, seed++), true}; };
  auto text = [](const std::string& s) { return FakeFile{s, false}; };
  f["model_index.json"] = text(R"({"_class_name": "ChromaPipeline"})");
  f["README.md"] = text("# Chroma1-HD\n");
  f["Chroma1-HD.safetensors"] = lfs(5000);  // the single-file duplicate of transformer/
  f["scheduler/scheduler_config.json"] = text("{}");
  f["transformer/config.json"] = text("{}");
  f["transformer/diffusion_pytorch_model-00001-of-00002.safetensors"] = lfs(300000);
  f["transformer/diffusion_pytorch_model-00002-of-00002.safetensors"] = lfs(120000);
  f["transformer/diffusion_pytorch_model.safetensors.index.json"] = text(R"({"weight_map": {}})");
  f["transformer/diffusion_pytorch_model.fp16.safetensors"] = lfs(4000);  // another precision
  f["text_encoder/config.json"] = text("{}");
  f["text_encoder/model-00001-of-00002.safetensors"] = lfs(200000);
  f["text_encoder/model-00002-of-00002.safetensors"] = lfs(50000);
  f["text_encoder/model.safetensors.index.json"] = text(R"({"weight_map": {"a": "b"}})");
  f["tokenizer/spiece.model"] = lfs(7919);
  f["tokenizer/tokenizer_config.json"] = text("{}");
  f["vae/config.json"] = text("{}");
  f["vae/diffusion_pytorch_model.safetensors"] = lfs(65536);
  return f;
}

const std::set<std::string> kEngineFiles = {
    "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
    "transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
    "transformer/diffusion_pytorch_model.safetensors.index.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/spiece.model",
    "vae/diffusion_pytorch_model.safetensors",
};

const std::string kBigShard = "transformer/diffusion_pytorch_model-00001-of-00002.safetensors";

// The Hub (API + small files) and its CDN (LFS files, reached by a 302 to another host and port).
class FakeHub {
 public:
  std::map<std::string, FakeFile> files = fake_repo();
  std::string required_token;          // when set, the API server answers 401 without "Bearer <it>"
  std::map<std::string, int> drops;    // path → how many of its next CDN responses drop midway
  std::set<std::string> corrupt;       // paths served with one byte flipped
  bool ignore_range = false;           // the CDN answers 200 with the whole file to Range requests
  std::vector<std::string> unsafe_paths;  // extra listing entries

  HttpTestServer cdn{[this](const Request& r) { return serve_cdn(r); }};
  HttpTestServer api{[this](const Request& r) { return serve_api(r); }};

  std::string endpoint() const { return api.url(); }
  HubOptions options() const {
    HubOptions o;
    o.endpoint = endpoint();
    o.retry_delay_s = 0;
    o.http.token = required_token;
    return o;
  }
  std::string content(const std::string& path, bool for_client = true) const {
    std::string c = files.at(path).content;
    if (for_client && corrupt.count(path)) c[c.size() / 2] ^= 0x5a;
    return c;
  }

 private:
  Response serve_api(const Request& r) {
    if (!required_token.empty() && r.header("authorization") != "Bearer " + required_token)
      return {401, R"({"error":"Invalid credentials in Authorization header"})", {}};
    const std::string tree = "/api/models/" + kRepo + "/tree/main";
    if (r.path == tree) return listing(r.query);
    const std::string resolve = "/" + kRepo + "/resolve/main/";
    if (r.path.rfind(resolve, 0) == 0) {
      const std::string path = r.path.substr(resolve.size());
      auto it = files.find(path);
      if (it == files.end()) return {404, R"({"error":"Entry not found"})", {}};
      if (it->second.lfs)  // LFS content lives on the CDN, under another host name and port
        return {302, "", {{"Location", cdn.url("localhost") + "/blobs/" + path}}};
      return serve_content(r, content(path));
    }
    return {404, R"({"error":"Repository not found"})", {}};
  }

  // Two pages: the first names the second in a Link header, as the Hub paginates large trees.
  Response listing(const std::string& query) {
    nlohmann::json all = nlohmann::json::array();
    all.push_back({{"type", "directory"}, {"path", "transformer"}, {"oid", "0"}, {"size", 0}});
    for (const auto& [path, f] : files) {
      nlohmann::json e = {{"type", "file"}, {"path", path}, {"size", f.content.size()}};
      if (f.lfs) {
        e["oid"] = "0123456789abcdef0123456789abcdef01234567";  // the pointer file's blob id: not the content's
        e["lfs"] = {{"oid", sha256_hex(f.content)}, {"size", f.content.size()}, {"pointerSize", 134}};
      } else {
        e["oid"] = git_blob_sha1_hex(f.content);
      }
      all.push_back(e);
    }
    for (const std::string& p : unsafe_paths) all.push_back({{"type", "file"}, {"path", p}, {"size", 1}, {"oid", "x"}});
    const size_t half = all.size() / 2;
    const bool second = query.find("cursor=page2") != std::string::npos;
    nlohmann::json page(second ? nlohmann::json(all.begin() + long(half), all.end())
                               : nlohmann::json(all.begin(), all.begin() + long(half)));
    Response resp{200, page.dump(), {}};
    if (!second)
      resp.headers.push_back({"Link", "<" + endpoint() + "/api/models/" + kRepo + "/tree/main?recursive=true&cursor=page2>; rel=\"next\""});
    return resp;
  }

  Response serve_cdn(const Request& r) {
    const std::string path = r.path.substr(std::string("/blobs/").size());
    Request req = r;
    if (ignore_range) req.headers.erase("range");
    Response resp = serve_content(req, content(path));
    if (drops[path] > 0) {
      --drops[path];
      resp.drop_after = resp.body.size() / 3;
    }
    return resp;
  }
};

class Hub : public ::testing::Test {
 protected:
  void SetUp() override {
    cache = fs::path(::testing::TempDir()) / ("chroma_pull_" + std::to_string(::getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(cache);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(cache, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(cache, ec);
  }
  fs::path repo_dir() const { return fs::path(repo_cache_dir(cache.string(), kRepo)); }

  PullResult pull_engine_files(FakeHub& hub, const HubOptions& o) {
    return pull(kRepo, select_engine_files(list_repo_files(kRepo, o)), cache.string(), o);
  }

  // Every engine file in place with the served bytes, nothing else but the manifest.
  void expect_complete_pull(const FakeHub& hub) {
    std::set<std::string> present;
    for (const auto& e : fs::recursive_directory_iterator(repo_dir()))
      if (e.is_regular_file()) present.insert(fs::relative(e.path(), repo_dir()).generic_string());
    std::set<std::string> expected = kEngineFiles;
    expected.insert(kManifestName);
    EXPECT_EQ(present, expected);
    for (const std::string& p : kEngineFiles) EXPECT_EQ(read_file(repo_dir() / p), hub.content(p, false)) << p;
    EXPECT_TRUE(is_complete_pull(repo_dir().string()));
  }

  // Runs `f`, expecting a chroma::Error whose one-line message contains `needle`.
  template <class F>
  std::string expect_error(F f, const std::string& needle) {
    try {
      f();
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(needle), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
      return m;
    }
    ADD_FAILURE() << "no chroma::Error (expected one containing '" << needle << "')";
    return "";
  }

  fs::path cache;
};

// Sets an environment variable for one scope.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(const std::string& n, const char* value) : name(n) {
    if (const char* v = std::getenv(n.c_str())) old = v;
    set(value);
  }
  ~ScopedEnv() { set(old ? old->c_str() : nullptr); }
  void set(const char* value) {
    if (value) {
      ::setenv(name.c_str(), value, 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST_F(Hub, ListsAllPagesWithChecksums) {
  FakeHub hub;
  const std::vector<RepoFile> files = list_repo_files(kRepo, hub.options());
  ASSERT_EQ(files.size(), hub.files.size());  // both pages, directories left out
  for (const RepoFile& f : files) {
    const FakeFile& src = hub.files.at(f.path);
    EXPECT_EQ(f.size, src.content.size());
    EXPECT_EQ(f.checksum.kind, src.lfs ? Checksum::Kind::Sha256 : Checksum::Kind::GitBlobSha1) << f.path;
    EXPECT_EQ(f.checksum.hex, src.lfs ? sha256_hex(src.content) : git_blob_sha1_hex(src.content)) << f.path;
  }
}

TEST_F(Hub, SelectsOnlyTheFilesTheEngineReads) {
  FakeHub hub;
  std::set<std::string> picked;
  for (const RepoFile& f : select_engine_files(list_repo_files(kRepo, hub.options()))) picked.insert(f.path);
  EXPECT_EQ(picked, kEngineFiles);
  const auto vae = select_files(list_repo_files(kRepo, hub.options()), {"vae/*.safetensors"});
  ASSERT_EQ(vae.size(), 1u);
  EXPECT_EQ(vae[0].path, "vae/diffusion_pytorch_model.safetensors");
}

TEST_F(Hub, FullPullVerifiesAndWritesTheManifest) {
  FakeHub hub;
  const PullResult r = pull_engine_files(hub, hub.options());
  EXPECT_EQ(r.dir, repo_dir().string());
  EXPECT_EQ(r.downloaded, kEngineFiles.size());
  expect_complete_pull(hub);
  const nlohmann::json m = nlohmann::json::parse(read_file(repo_dir() / kManifestName));
  EXPECT_EQ(m["files"].size(), kEngineFiles.size());
  // Shard indexes come after the weights (an index never names a missing shard).
  EXPECT_EQ(m["files"].back()["path"].get<std::string>().ends_with(".safetensors"), false);

  // A second pull finds everything in place and fetches no file.
  const size_t before = hub.cdn.requests().size() + hub.api.requests().size();
  const PullResult again = pull_engine_files(hub, hub.options());
  EXPECT_EQ(again.downloaded, 0u);
  EXPECT_EQ(again.already_present, kEngineFiles.size());
  EXPECT_EQ(hub.cdn.requests().size() + hub.api.requests().size(), before + 2);  // the two listing pages
}

TEST_F(Hub, ResumesWithinOneRunAfterADroppedConnection) {
  FakeHub hub;
  hub.drops[kBigShard] = 2;
  pull_engine_files(hub, hub.options());
  expect_complete_pull(hub);
  std::vector<std::string> ranges;
  for (const Request& r : hub.cdn.requests())
    if (r.path == "/blobs/" + kBigShard) ranges.push_back(r.header("range"));
  // 300000 bytes: the first try drops after 100000, the second (bytes=100000-) after a third of the rest.
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[0], "");
  EXPECT_EQ(ranges[1], "bytes=100000-");
  EXPECT_EQ(ranges[2], "bytes=166666-");
}

TEST_F(Hub, InterruptedPullLeavesAPartFileTheNextRunResumes) {
  FakeHub hub;
  hub.drops[kBigShard] = 1;
  HubOptions o = hub.options();
  o.max_attempts = 1;
  expect_error([&] { pull_engine_files(hub, o); }, "download interrupted at 100000 of 300000 bytes");
  EXPECT_FALSE(fs::exists(repo_dir() / kBigShard));  // never under the final name while incomplete
  EXPECT_EQ(fs::file_size(repo_dir() / (kBigShard + ".part")), 100000u);
  EXPECT_FALSE(is_complete_pull(repo_dir().string()));

  pull_engine_files(hub, o);
  expect_complete_pull(hub);
  bool resumed = false;
  for (const Request& r : hub.cdn.requests()) resumed |= r.header("range") == "bytes=100000-";
  EXPECT_TRUE(resumed);
}

TEST_F(Hub, ServerIgnoringRangeRestartsTheFile) {
  FakeHub hub;
  hub.drops[kBigShard] = 1;
  hub.ignore_range = true;
  pull_engine_files(hub, hub.options());
  expect_complete_pull(hub);
}

TEST_F(Hub, ChecksumMismatchKeepsNoFile) {
  FakeHub hub;
  hub.corrupt.insert("vae/diffusion_pytorch_model.safetensors");
  hub.corrupt.insert("text_encoder/model.safetensors.index.json");
  const std::string m = expect_error([&] { pull_engine_files(hub, hub.options()); }, "checksum mismatch (sha256 expected");
  EXPECT_NE(m.find("vae/diffusion_pytorch_model.safetensors"), std::string::npos);
  EXPECT_FALSE(fs::exists(repo_dir() / "vae/diffusion_pytorch_model.safetensors"));
  EXPECT_FALSE(fs::exists(repo_dir() / "vae/diffusion_pytorch_model.safetensors.part"));
  EXPECT_FALSE(is_complete_pull(repo_dir().string()));

  // Small files are checked by their git blob id.
  hub.corrupt.erase("vae/diffusion_pytorch_model.safetensors");
  expect_error([&] { pull_engine_files(hub, hub.options()); }, "checksum mismatch (git blob sha1 expected");
  EXPECT_FALSE(fs::exists(repo_dir() / "text_encoder/model.safetensors.index.json"));
}

TEST_F(Hub, OfflineIsOneClearLine) {
  int port;
  {
    HttpTestServer gone([](const Request&) { return Response{}; });
    port = gone.port();
  }  // closed: connections to its port are refused
  HubOptions o;
  o.endpoint = "http://127.0.0.1:" + std::to_string(port);
  expect_error([&] { list_repo_files(kRepo, o); }, "cannot reach http://127.0.0.1:" + std::to_string(port));
}

TEST_F(Hub, TokenIsSentAsBearerButNotToTheCdn) {
  FakeHub hub;
  hub.required_token = "hf_secret";
  HubOptions anonymous = hub.options();
  anonymous.http.token.clear();
  expect_error([&] { list_repo_files(kRepo, anonymous); }, "set to an access token");
  const size_t anonymous_requests = hub.api.requests().size();

  ScopedEnv token("HF_TOKEN", "hf_secret"), endpoint("HF_ENDPOINT", (hub.endpoint() + "/").c_str());
  HubOptions o = hub_options_from_env();
  EXPECT_EQ(o.endpoint, hub.endpoint());  // HF_ENDPOINT, trailing '/' dropped
  o.retry_delay_s = 0;
  pull_engine_files(hub, o);
  expect_complete_pull(hub);
  const std::vector<Request> api = hub.api.requests();
  for (size_t i = anonymous_requests; i < api.size(); ++i)
    EXPECT_EQ(api[i].header("authorization"), "Bearer hf_secret") << api[i].path;
  ASSERT_FALSE(hub.cdn.requests().empty());
  for (const Request& r : hub.cdn.requests()) EXPECT_EQ(r.header("authorization"), "") << r.path;
}

TEST_F(Hub, MissingRepositoryAndUnsafePaths) {
  FakeHub hub;
  expect_error([&] { list_repo_files("nobody/nothing", hub.options()); }, "not found (HTTP 404)");
  expect_error([&] { list_repo_files("not-a-repo", hub.options()); }, "expected owner/name");
  hub.unsafe_paths = {"../../escape"};
  expect_error([&] { list_repo_files(kRepo, hub.options()); }, "unsafe file path '../../escape'");
}

TEST_F(Hub, UnwritableCacheIsAClearError) {
  FakeHub hub;
  // A cache "folder" below a regular file cannot be created, even by root.
  fs::create_directories(cache);
  std::ofstream(cache / "file") << "x";
  const HubOptions o = hub.options();
  const auto files = select_engine_files(list_repo_files(kRepo, o));
  expect_error([&] { pull(kRepo, files, (cache / "file" / "sub").string(), o); }, "cannot create cache folder");
}

TEST_F(Hub, ReadOnlyCacheIsAClearError) {
  FakeHub hub;
  fs::path dir = cache;
  std::string why = "Permission denied";
  if (::geteuid() == 0) {
    // Permission bits do not stop root; sysfs refuses new entries to everyone, root included.
    if (!fs::exists("/sys/kernel")) GTEST_SKIP() << "running as root without sysfs: no folder root cannot write";
    dir = "/sys/chroma-cpp-test-cache";
    why = "Operation not permitted";
  } else {
    fs::create_directories(cache);
    fs::permissions(cache, fs::perms::owner_read | fs::perms::owner_exec);
  }
  const HubOptions o = hub.options();
  expect_error([&] { pull(kRepo, select_engine_files(list_repo_files(kRepo, o)), dir.string(), o); }, why);
}

TEST_F(Hub, FullDiskIsAClearErrorAndKeepsThePartFile) {
  FakeHub hub;
  const HubOptions o = hub.options();
  const auto files = select_engine_files(list_repo_files(kRepo, o));
  // Not enough free space is caught before downloading.
  expect_error([] { check_free_space(::testing::TempDir(), uint64_t(1) << 62); }, "not enough space in");

  // A write that fails midway (here: a file size limit, which fails writes like a full disk does).
  struct rlimit old {};
  ::getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);  // a failed write, not a signal
  struct rlimit small = old;
  small.rlim_cur = 150000;
  ::setrlimit(RLIMIT_FSIZE, &small);
  std::string m;
  try {
    pull(kRepo, files, cache.string(), o);
  } catch (const Error& e) {
    m = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  // The first file pulled is the 200000-byte text encoder shard (weights in path order).
  const std::string first = "text_encoder/model-00001-of-00002.safetensors";
  EXPECT_NE(m.find("cannot write " + (repo_dir() / first).string() + ".part: File too large"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(repo_dir() / first));
  EXPECT_EQ(fs::file_size(repo_dir() / (first + ".part")), 150000u);

  pull(kRepo, files, cache.string(), o);  // room again: resumes
  expect_complete_pull(hub);
}

TEST(Cache, FoldersFollowTheEnvironment) {
  ScopedEnv c("CHROMA_CACHE", "/tmp/cc"), x("XDG_CACHE_HOME", "/tmp/xdg"), h("HOME", "/tmp/home");
  EXPECT_EQ(default_cache_dir(), "/tmp/cc");
  {
    ScopedEnv no_c("CHROMA_CACHE", nullptr);
    EXPECT_EQ(default_cache_dir(), "/tmp/xdg/chroma.cpp");
    ScopedEnv no_x("XDG_CACHE_HOME", nullptr);
    EXPECT_EQ(default_cache_dir(), "/tmp/home/.cache/chroma.cpp");
  }
  EXPECT_EQ(repo_cache_dir("/c", "lodestones/Chroma1-HD"), "/c/lodestones--Chroma1-HD");
  EXPECT_THROW(repo_cache_dir("/c", "../x"), Error);
  EXPECT_THROW(repo_cache_dir("/c", "a/b/c"), Error);
}

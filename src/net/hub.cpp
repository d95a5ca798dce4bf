#include "net/hub.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "io/atomic_file.h"
#include "net/cache.h"
#include "tensor/error.h"

namespace chroma::net {

namespace fs = std::filesystem;

namespace {

// "3.21 GiB", "12.5 MiB", "800 bytes"
std::string human_size(uint64_t bytes) {
  char s[32];
  if (bytes >= (uint64_t(1) << 30)) std::snprintf(s, sizeof s, "%.2f GiB", double(bytes) / double(uint64_t(1) << 30));
  else if (bytes >= (uint64_t(1) << 20)) std::snprintf(s, sizeof s, "%.1f MiB", double(bytes) / double(1 << 20));
  else std::snprintf(s, sizeof s, "%llu bytes", static_cast<unsigned long long>(bytes));
  return s;
}

// The first line of an error page, shortened: the Hub puts its reason there ({"error":"…"}).
std::string body_reason(const std::string& body) {
  std::string line = body.substr(0, body.find('\n'));
  if (line.size() > 200) line = line.substr(0, 200) + "…";
  return line.empty() ? "" : ": " + line;
}

// One line for a request that got no complete answer, or an unusable status.
std::string request_error(const std::string& what, const std::string& url, const HttpResult& r,
                          const HubOptions& options) {
  if (r.failure == HttpFailure::Connect)
    return "cannot reach " + options.endpoint + " (" + r.error +
           "): offline? Connect to the network, or set HF_ENDPOINT to a reachable mirror";
  if (r.failure != HttpFailure::None) return what + ": " + url + ": " + r.error;
  if (r.status == 401 || r.status == 403)
    return what + ": access denied (HTTP " + std::to_string(r.status) + ") at " + url +
           (options.http.token.empty() ? "; a private or gated repository needs HF_TOKEN set to an access token"
                                       : "; HF_TOKEN has no access (gated repository: accept its terms on the Hub)");
  if (r.status == 404) return what + ": not found (HTTP 404) at " + url + body_reason(r.error_body);
  return what + ": HTTP " + std::to_string(r.status) + " at " + url + body_reason(r.error_body);
}

// Repository paths become cache paths: refuse anything that could leave the repository folder.
void check_safe_path(const std::string& repo, const std::string& path) {
  bool ok = !path.empty() && path.front() != '/' && path.find('\\') == std::string::npos;
  for (const auto& part : fs::path(path)) ok = ok && part != ".." && part != "." && !part.empty();
  if (!ok) throw Error(repo + ": the listing names an unsafe file path '" + path + "'");
}

std::string resolve_url(const std::string& repo, const std::string& path, const HubOptions& options) {
  return options.endpoint + "/" + url_encode(repo) + "/resolve/" + url_encode(options.revision, false) + "/" +
         url_encode(path);
}

std::string read_token_file() {
  std::string path = env("HF_TOKEN_PATH");
  if (path.empty() && !env("HF_HOME").empty()) path = (fs::path(env("HF_HOME")) / "token").string();
  if (path.empty() && !env("HOME").empty()) path = (fs::path(env("HOME")) / ".cache" / "huggingface" / "token").string();
  std::ifstream in(path);
  std::string token;
  if (in) std::getline(in, token);
  return token;
}

// An open .part file, locked against a second pull writing the same file.
class PartFile {
 public:
  explicit PartFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot write " + path + ": " + std::strerror(errno) + cache_hint());
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw Error(path + ": another chromacpp pull is writing this file");
    }
  }
  ~PartFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  uint64_t size() const {
    struct stat st {};
    return ::fstat(fd_, &st) == 0 ? uint64_t(st.st_size) : 0;
  }
  void truncate() {
    if (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0)
      throw Error("cannot write " + path_ + ": " + std::strerror(errno));
  }
  // Appends all of `data`; false (errno set) when the disk refuses.
  bool append(const char* data, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      data += w;
      n -= size_t(w);
    }
    return true;
  }
  // Feeds the bytes already on disk to `hasher` (resuming needs the hash of what is there).
  uint64_t hash_existing(ContentHasher& hasher, const std::function<void(uint64_t)>& progress) {
    std::vector<char> buf(1 << 20);
    uint64_t done = 0;
    ::lseek(fd_, 0, SEEK_SET);
    for (;;) {
      const ssize_t r = ::read(fd_, buf.data(), buf.size());
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Error("cannot read " + path_ + ": " + std::strerror(errno));
      if (r == 0) break;
      hasher.update(buf.data(), size_t(r));
      done += uint64_t(r);
      if (progress) progress(done);
    }
    return done;  // the file offset is now at the end: appends continue from here
  }
  void sync_and_close() {
    if (::fsync(fd_) != 0) throw Error("cannot write " + path_ + ": " + std::strerror(errno) + cache_hint());
    ::close(fd_);
    fd_ = -1;
  }
  static std::string cache_hint() { return " (choose another cache folder with --cache or $CHROMA_CACHE)"; }

 private:
  std::string path_;
  int fd_ = -1;
};

void create_folder(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    throw Error("cannot create cache folder " + dir.string() + ": " + (ec ? ec.message() : "not a folder") +
                PartFile::cache_hint());
}

}  // namespace

HubOptions hub_options_from_env() {
  HubOptions o;
  if (std::string e = env("HF_ENDPOINT"); !e.empty()) {
    while (!e.empty() && e.back() == '/') e.pop_back();
    o.endpoint = e;
  }
  o.http.token = env("HF_TOKEN");
  if (o.http.token.empty()) o.http.token = read_token_file();
  return o;
}

std::vector<RepoFile> list_repo_files(const std::string& repo, const HubOptions& options) {
  repo_cache_dir("", repo);  // validates "owner/name"
  std::vector<RepoFile> files;
  std::string url = options.endpoint + "/api/models/" + url_encode(repo) + "/tree/" +
                    url_encode(options.revision, false) + "?recursive=true";
  // The listing comes in pages; each names the next in a Link header.
  for (int page = 0; !url.empty(); ++page) {
    if (page > 10000) throw Error(repo + ": the file listing does not end (more than 10000 pages)");
    std::string body;
    const HttpResult r = http_get_text(url, options.http, body);
    if (r.failure != HttpFailure::None || r.status != 200) {
      HttpResult shown = r;
      if (shown.error_body.empty()) shown.error_body = body;
      throw Error(request_error(repo + " (revision " + options.revision + ")", url, shown, options));
    }
    nlohmann::json list;
    try {
      list = nlohmann::json::parse(body);
    } catch (const nlohmann::json::exception& e) {
      throw Error(url + ": the file listing is not JSON (" + e.what() + ")");
    }
    if (!list.is_array()) throw Error(url + ": the file listing is not a JSON array");
    try {
      for (const auto& entry : list) {
        if (entry.value("type", "") != "file") continue;
        RepoFile f;
        f.path = entry.at("path").get<std::string>();
        check_safe_path(repo, f.path);
        f.size = entry.at("size").get<uint64_t>();
        if (entry.contains("lfs") && entry["lfs"].is_object()) {
          f.checksum = {Checksum::Kind::Sha256, entry["lfs"].at("oid").get<std::string>()};
          f.size = entry["lfs"].value("size", f.size);
        } else {
          f.checksum = {Checksum::Kind::GitBlobSha1, entry.at("oid").get<std::string>()};
        }
        files.push_back(std::move(f));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(url + ": unexpected file listing entry (" + e.what() + ")");
    }
    url = r.next_link;
  }
  return files;
}

std::vector<RepoFile> select_engine_files(const std::vector<RepoFile>& files) {
  // Default precision only: "model.safetensors", "model-00001-of-00002.safetensors",
  // "model.safetensors.index.json" (and the same with diffusion_pytorch_model); variants like
  // "model.fp16-00001-of-00002.safetensors" are other precisions of the same weights.
  static const std::regex weights(
      R"(^(transformer|text_encoder|vae)/(diffusion_pytorch_model|model)(-\d+-of-\d+)?\.safetensors(\.index\.json)?$)");
  std::vector<RepoFile> picked;
  for (const RepoFile& f : files)
    if (std::regex_match(f.path, weights) || f.path == "tokenizer/spiece.model") picked.push_back(f);
  return picked;
}

std::vector<RepoFile> select_files(const std::vector<RepoFile>& files, const std::vector<std::string>& globs) {
  std::vector<RepoFile> picked;
  for (const RepoFile& f : files)
    for (const std::string& g : globs)
      if (fnmatch(g.c_str(), f.path.c_str(), FNM_PATHNAME) == 0) {
        picked.push_back(f);
        break;
      }
  return picked;
}

void check_free_space(const std::string& dir, uint64_t bytes) {
  std::error_code ec;
  const fs::space_info s = fs::space(dir, ec);
  if (ec) throw Error("cannot check the free space of " + dir + ": " + ec.message());
  if (s.available < bytes)
    throw Error("not enough space in " + dir + ": " + human_size(bytes) + " to download, " + human_size(s.available) + " free" +
                PartFile::cache_hint());
}

void download_file(const std::string& repo, const RepoFile& file, const std::string& dest, const HubOptions& options,
                   const std::function<void(uint64_t)>& progress) {
  const std::string part_path = dest + ".part", url = resolve_url(repo, file.path, options);
  create_folder(fs::path(dest).parent_path());
  PartFile part(part_path);
  ContentHasher hasher(file.checksum.kind, file.size);

  // Resume: the bytes already in the .part count, unless there are more than the file has.
  uint64_t have = part.size();
  if (have > file.size) {
    part.truncate();
    have = 0;
  }
  have = part.hash_existing(hasher, progress);

  int write_errno = 0;
  std::string protocol_error;
  for (int attempt = 1; have < file.size; ++attempt) {
    bool first_chunk = true;
    const HttpResult r = http_get(url, options.http, [&](const HttpResult& head, const char* data, size_t n) {
      if (first_chunk && head.status == 200 && have > 0) {
        // The server ignored the Range request and sends the whole file: start the .part again.
        part.truncate();
        hasher.reset();
        have = 0;
      } else if (first_chunk && head.status == 206 && head.range_start != have) {
        protocol_error = "the server resumed at byte " + std::to_string(head.range_start) + ", not " + std::to_string(have);
        return false;
      }
      first_chunk = false;
      if (have + n > file.size) {
        protocol_error = "the server sent more than the listed " + std::to_string(file.size) + " bytes";
        return false;
      }
      if (!part.append(data, n)) {
        write_errno = errno;
        return false;
      }
      hasher.update(data, n);
      have += n;
      if (progress) progress(have);
      return true;
    }, have);

    if (write_errno)
      throw Error("cannot write " + part_path + ": " + std::strerror(write_errno) + " (" +
                  human_size(file.size - have) + " of " + file.path + " still to download)" + PartFile::cache_hint());
    if (!protocol_error.empty()) throw Error(url + ": " + protocol_error);
    const bool retryable = r.failure == HttpFailure::Interrupted ||
                           (r.failure == HttpFailure::None && (r.status >= 500 || r.status == 429 ||
                                                               (r.status / 100 == 2 && have < file.size))) ||
                           (r.failure == HttpFailure::Connect && attempt > 1);  // the network dropped mid-pull
    if (r.failure == HttpFailure::None && r.status / 100 != 2 && !retryable)
      throw Error(request_error(file.path, url, r, options));
    if (r.failure == HttpFailure::Connect && attempt == 1) throw Error(request_error(file.path, url, r, options));
    if (have >= file.size) break;
    if (!retryable || attempt >= options.max_attempts) {
      const std::string reason = r.failure != HttpFailure::None ? r.error
                                 : r.status / 100 == 2         ? "the connection closed early"
                                                               : "HTTP " + std::to_string(r.status);
      throw Error(file.path + ": download interrupted at " + std::to_string(have) + " of " +
                  std::to_string(file.size) + " bytes after " + std::to_string(attempt) + " tries (" + reason +
                  "); run pull again to resume from " + part_path);
    }
    // Wait a little before resuming: a flaky link or a busy server often recovers.
    const double delay = options.retry_delay_s * double(1 << std::min(attempt - 1, 6));
    std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  }

  const std::string got = hasher.hex_digest();
  if (got != file.checksum.hex) {
    std::error_code ec;
    fs::remove(part_path, ec);  // the bytes are wrong; the next run must start afresh
    throw Error(file.path + ": checksum mismatch (" + file.checksum.name() + " expected " + file.checksum.hex +
                ", got " + got + "); the download was removed, run pull again");
  }
  part.sync_and_close();
  std::error_code ec;
  fs::rename(part_path, dest, ec);
  if (ec) throw Error("cannot rename " + part_path + " to " + dest + ": " + ec.message());
}

PullResult pull(const std::string& repo, const std::vector<RepoFile>& files, const std::string& cache,
                const HubOptions& options, const PullProgressFn& progress) {
  PullResult result;
  result.dir = repo_cache_dir(cache, repo);
  create_folder(result.dir);

  // Weights first, indexes and small files last: a shard index then only appears once its shards are in.
  std::vector<RepoFile> order = files;
  std::stable_partition(order.begin(), order.end(),
                        [](const RepoFile& f) { return f.path.ends_with(".safetensors"); });

  // Which files are already complete (a final name is only ever given to a verified file), what is left.
  std::vector<bool> complete(order.size());
  uint64_t to_download = 0, done = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const fs::path dest = fs::path(result.dir) / order[i].path;
    std::error_code ec;
    complete[i] = fs::is_regular_file(dest, ec) && fs::file_size(dest, ec) == order[i].size;
    result.bytes += order[i].size;
    if (complete[i]) {
      done += order[i].size;
      continue;
    }
    const uint64_t partial = fs::is_regular_file(dest.string() + ".part", ec) ? fs::file_size(dest.string() + ".part", ec) : 0;
    to_download += order[i].size - std::min(partial, order[i].size);
  }
  check_free_space(result.dir, to_download);

  const fs::path manifest = fs::path(result.dir) / kManifestName;
  if (to_download > 0 || std::count(complete.begin(), complete.end(), false) > 0) {
    std::error_code ec;
    fs::remove(manifest, ec);  // the folder is incomplete until the last file is in
  }

  for (size_t i = 0; i < order.size(); ++i) {
    PullProgress p{&order[i], i, order.size(), 0, done, result.bytes, false};
    if (complete[i]) {
      ++result.already_present;
    } else {
      download_file(repo, order[i], (fs::path(result.dir) / order[i].path).string(), options, [&](uint64_t file_done) {
        p.file_done = file_done;
        p.total_done = done + file_done;
        if (progress) progress(p);
      });
      ++result.downloaded;
    }
    done += order[i].size;
    p.file_done = order[i].size;
    p.total_done = done;
    p.file_complete = true;
    if (progress) progress(p);
  }

  // The manifest, written last, marks the folder complete for `generate` (net/cache.h).
  nlohmann::json m = {{"repo", repo}, {"revision", options.revision}, {"files", nlohmann::json::array()}};
  for (const RepoFile& f : order)
    m["files"].push_back({{"path", f.path}, {"size", f.size}, {f.checksum.kind == Checksum::Kind::Sha256 ? "sha256" : "git_sha1", f.checksum.hex}});
  io::write_atomically(manifest.string(), [&](const std::string& tmp) {
    std::ofstream out(tmp);
    out << m.dump(2) << "\n";
    if (!out) throw Error("cannot write " + manifest.string());
  });
  return result;
}

}  // namespace chroma::net

// Downloading a model from a Hugging Face Hub repository into the local cache (net/cache.h):
// `chromacpp pull`. Hub HTTP API used:
//   listing  {endpoint}/api/models/{repo}/tree/{revision}?recursive=true   (JSON, paginated by Link headers)
//   file     {endpoint}/{repo}/resolve/{revision}/{path}                  (302 to a CDN for LFS files)
// Each file is written to <dest>.part, resumed with a Range request after a dropped connection (within
// the same run, and by a later run), and renamed to <dest> only after its checksum matched the listing:
// a file under its final name is always complete.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "net/digest.h"
#include "net/http.h"

namespace chroma::net {

struct HubOptions {
  std::string endpoint = "https://huggingface.co";  // no trailing '/'
  std::string revision = "main";                     // branch, tag or commit
  HttpOptions http;                                  // token, timeouts
  int max_attempts = 5;          // tries per file; each one resumes from the bytes already on disk
  double retry_delay_s = 2.0;    // pause before the first retry, doubled for each further one
};

// HubOptions with the endpoint from $HF_ENDPOINT (default https://huggingface.co) and the token from
// $HF_TOKEN, else the file `huggingface-cli login` writes ($HF_TOKEN_PATH, $HF_HOME/token or
// ~/.cache/huggingface/token).
HubOptions hub_options_from_env();

// One file of a repository, as the tree listing describes it.
struct RepoFile {
  std::string path;   // inside the repository, '/'-separated
  uint64_t size = 0;
  Checksum checksum;  // sha256 (LFS files) or git blob sha1 (small files)
};

// Every file of `repo` ("owner/name") at options.revision. Throws chroma::Error with one line: no
// connection (offline), 401/403 (set HF_TOKEN), 404 (no such repository or revision), bad JSON, or an
// unsafe path (absolute, or with a ".." part).
std::vector<RepoFile> list_repo_files(const std::string& repo, const HubOptions& options);

// The files the engine reads from a diffusers-layout repository such as lodestones/Chroma1-HD: the
// default-precision weights of transformer/, text_encoder/ and vae/ (single file or shards + index) and
// tokenizer/spiece.model. Not taken: configs (the engine reads its configuration from the weights), other
// precisions (*.fp16.*), and a root-level single-file checkpoint that duplicates transformer/.
std::vector<RepoFile> select_engine_files(const std::vector<RepoFile>& files);

// The files whose path matches one of `globs` (fnmatch; '*' does not cross '/').
std::vector<RepoFile> select_files(const std::vector<RepoFile>& files, const std::vector<std::string>& globs);

// Throws chroma::Error unless `dir` (which must exist) has `bytes` free.
void check_free_space(const std::string& dir, uint64_t bytes);

// Progress of a pull: called for every received chunk, and once per file when it is in place.
struct PullProgress {
  const RepoFile* file = nullptr;
  size_t index = 0, count = 0;        // this file's position (0-based) among the pulled files
  uint64_t file_done = 0;             // bytes of this file on disk
  uint64_t total_done = 0, total = 0; // bytes over all pulled files (files already complete included)
  bool file_complete = false;         // the file is verified and under its final name
};
using PullProgressFn = std::function<void(const PullProgress&)>;

// Downloads `file` of `repo` to `dest` via `dest`.part (see the top of this file). `progress(bytes on
// disk)` follows each chunk. Throws chroma::Error naming the file: connection failures, an interruption
// that `options.max_attempts` tries did not overcome (the .part stays for the next run), a write error
// (full or read-only disk), a checksum mismatch (the .part is removed), another pull writing the same file.
void download_file(const std::string& repo, const RepoFile& file, const std::string& dest, const HubOptions& options,
                   const std::function<void(uint64_t)>& progress = {});

struct PullResult {
  std::string dir;               // <cache>/<owner>--<name>
  size_t downloaded = 0;         // files fetched now
  size_t already_present = 0;    // files found complete
  uint64_t bytes = 0;            // bytes of all pulled files
};

// Downloads `files` of `repo` into repo_cache_dir(cache, repo): weights first, shard indexes last (so an
// index never names a missing shard), then writes the manifest that marks the folder complete
// (net/cache.h). Files already there with the listed size are kept (they were verified before their
// rename). Checks the free space first.
PullResult pull(const std::string& repo, const std::vector<RepoFile>& files, const std::string& cache,
                const HubOptions& options, const PullProgressFn& progress = {});

}  // namespace chroma::net

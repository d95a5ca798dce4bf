#include "net/cache.h"

#include <cstdlib>
#include <filesystem>

#include "tensor/error.h"

namespace chroma::net {

namespace fs = std::filesystem;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

namespace {
// A repository name part: letters, digits, '-', '_', '.', and not "." or ".." (it becomes a folder name).
bool is_safe_name(const std::string& s) {
  if (s.empty() || s == "." || s == "..") return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}
}  // namespace

std::string default_cache_dir() {
  if (const std::string d = env("CHROMA_CACHE"); !d.empty()) return d;
  if (const std::string d = env("XDG_CACHE_HOME"); !d.empty()) return (fs::path(d) / "chroma.cpp").string();
  if (const std::string d = env("HOME"); !d.empty()) return (fs::path(d) / ".cache" / "chroma.cpp").string();
  throw Error("no cache folder: set CHROMA_CACHE (or XDG_CACHE_HOME or HOME), or pass --cache DIR");
}

std::string repo_cache_dir(const std::string& cache, const std::string& repo) {
  const size_t slash = repo.find('/');
  const std::string owner = repo.substr(0, slash), name = slash == std::string::npos ? "" : repo.substr(slash + 1);
  if (!is_safe_name(owner) || !is_safe_name(name))
    throw Error("repository '" + repo + "': expected owner/name (e.g. " + kDefaultRepo + ")");
  return (fs::path(cache) / (owner + "--" + name)).string();
}

bool is_complete_pull(const std::string& repo_dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(repo_dir) / kManifestName, ec);
}

}  // namespace chroma::net

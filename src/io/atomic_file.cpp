#include "io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "tensor/error.h"

namespace chroma::io {
namespace fs = std::filesystem;

namespace {
std::string folder_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}
}  // namespace

void check_writable(const std::string& path) {
  std::error_code ec;
  if (path.empty()) throw Error("output path is empty");
  if (fs::is_directory(path, ec)) throw Error(path + ": is a folder, expected a file name");
  const std::string dir = folder_of(path);
  if (!fs::is_directory(dir, ec)) throw Error(path + ": folder " + dir + " does not exist");
  if (access(dir.c_str(), W_OK) != 0) throw Error(path + ": folder " + dir + " is not writable");
  if (fs::exists(path, ec) && access(path.c_str(), W_OK) != 0 && access(dir.c_str(), W_OK) != 0)
    throw Error(path + ": cannot be replaced (permission denied)");
}

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write) {
  check_writable(path);
  std::random_device rd;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".tmp-%08x", unsigned(rd()));
  const std::string tmp = path + suffix;
  try {
    write(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(path + ": cannot rename the finished temporary file into place: " + std::strerror(errno));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace chroma::io

// Helpers of the fuzz harnesses (common.h).
#include "common.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace chroma::fuzz {
namespace fs = std::filesystem;

std::string testdata_dir() {
  if (const char* env = std::getenv("CHROMA_TESTDATA"); env && *env) return env;
  return CHROMA_DEFAULT_TESTDATA;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), std::streamsize(bytes.size()));
}

const std::string& scratch_dir() {
  // Never destroyed: the atexit handler removing the folder runs after static destructors.
  static const std::string& dir = *new std::string([] {
    const fs::path d = fs::temp_directory_path() / ("chroma-fuzz-" + std::to_string(getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(scratch_dir(), ec);
    });
    return d.string();
  }());
  return dir;
}

std::string scratch_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  write_file(path, std::string(reinterpret_cast<const char*>(data), size));
  return path;
}

void add_seed(const std::string& dir, const std::string& name, const std::string& bytes) {
  write_file(dir + "/" + name, bytes);
}

std::string prefix(const std::string& bytes, size_t n) { return bytes.substr(0, std::min(n, bytes.size())); }

void seeds_if_asked(void (*make_seeds)(const std::string& dir)) {
  const char* dir = std::getenv("CHROMA_FUZZ_SEEDS");
  if (!dir || !*dir) return;
  fs::create_directories(dir);
  make_seeds(dir);
  std::exit(0);
}

}  // namespace chroma::fuzz

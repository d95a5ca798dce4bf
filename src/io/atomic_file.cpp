// Atomic output files; the rules of what a write may replace are in atomic_file.h.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "io/untrusted.h"
#include "tensor/error.h"

namespace chroma::io {
namespace fs = std::filesystem;

namespace {

constexpr size_t kTempSuffixBytes = 13;  // ".tmp-" + 8 hex digits

std::string folder_of(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

// ---- temporary files the signal handler removes ----
// A fixed table, so the handler neither allocates nor locks: a slot is claimed (1), filled, then
// published (2); the handler unlinks published paths. With every slot busy a write goes unlisted.
constexpr int kSlots = 64;
struct TempSlot {
  std::atomic<int> state{0};
  char path[PATH_MAX];
};
TempSlot g_temp[kSlots];

int list_temp(const std::string& path) {
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kSlots; ++i) {
    int free = 0;
    if (!g_temp[i].state.compare_exchange_strong(free, 1)) continue;
    std::memcpy(g_temp[i].path, path.c_str(), path.size() + 1);
    g_temp[i].state.store(2);
    return i;
  }
  return -1;
}

void unlist_temp(int slot) {
  if (slot >= 0) g_temp[slot].state.store(0);
}

extern "C" void remove_temps_and_reraise(int sig) {
  for (TempSlot& s : g_temp)
    if (s.state.load() == 2) unlink(s.path);
  raise(sig);  // SA_RESETHAND restored the default action: the process ends as the signal intends
}

// ---- what a write may replace ----

// The file a write replaces: `path`, or the file a symlink there leads to; `st` is valid if it exists.
struct Target {
  std::string path;
  bool exists = false;
  struct stat st {};
};

Target resolve(const std::string& path) {
  Target t{path};
  if (lstat(path.c_str(), &t.st) != 0) {
    if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG)  // those: check_target names the cause
      throw Error(path + ": cannot check the output path (" + std::strerror(errno) + ")");
    return t;
  }
  if (S_ISLNK(t.st.st_mode)) {
    std::error_code ec;
    const fs::path real = fs::canonical(path, ec);
    if (ec) throw Error(path + ": is a symlink to a missing file (" + fs::read_symlink(path, ec).string() + ")");
    t.path = real.string();
    if (lstat(t.path.c_str(), &t.st) != 0) throw Error(path + ": cannot check the symlink's target " + t.path);
  }
  t.exists = true;
  return t;
}

std::string octal_mode(mode_t mode) {
  char m[8];
  std::snprintf(m, sizeof m, "%04o", unsigned(mode & 07777));
  return m;
}

void check_target(const std::string& path, const Target& t, const WriteOptions& options) {
  const std::string dir = folder_of(t.path), name = fs::path(t.path).filename().string();
  if (!fs::is_directory(dir)) throw Error(path + ": folder " + dir + " does not exist");
  if (access(dir.c_str(), W_OK) != 0) throw Error(path + ": folder " + dir + " is not writable");
  const long name_max = pathconf(dir.c_str(), _PC_NAME_MAX);
  const size_t limit = name_max > 0 ? size_t(name_max) : 255;
  if (name.size() + kTempSuffixBytes > limit)
    throw Error(path + ": file name is " + std::to_string(name.size()) + " bytes; with the " +
                std::to_string(kTempSuffixBytes) + "-byte temporary suffix it exceeds the " + std::to_string(limit) +
                "-byte limit");
  if (!t.exists) return;
  if (S_ISDIR(t.st.st_mode)) throw Error(path + ": is a folder, expected a file name");
  if (!S_ISREG(t.st.st_mode))
    throw Error(path + ": is " + file_kind(t.st.st_mode) + ", not a regular file; refusing to replace it");
  if (t.st.st_nlink > 1)
    throw Error(path + ": has " + std::to_string(t.st.st_nlink) +
                " hard links; replacing it would detach this name from the others (write to a new name)");
  if ((t.st.st_mode & 0222) == 0 && !options.overwrite_read_only)
    throw Error(path + ": is read-only (mode " + octal_mode(t.st.st_mode) + "); not replaced");
  if (geteuid() != 0 && t.st.st_uid != geteuid())
    throw Error(path + ": belongs to another user; replacing it would change its owner");
}

// A new, empty temporary file beside `target`, created exclusively (never an existing path).
std::string create_temp(const std::string& target, int* slot) {
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, ".tmp-%08x", unsigned(rd()));
    const std::string tmp = target + suffix;
    *slot = list_temp(tmp);  // listed before it exists: a signal right after open() still removes it
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      ::close(fd);
      return tmp;
    }
    unlist_temp(*slot);
    if (errno != EEXIST) throw Error(target + ": cannot create a temporary file (" + std::strerror(errno) + ")");
  }
  throw Error(target + ": cannot create a temporary file (names taken)");
}

// The replaced file's mode and owner, given to the new one before it takes the name.
void keep_mode_and_owner(const std::string& path, const std::string& tmp, const struct stat& st) {
  if (chmod(tmp.c_str(), st.st_mode & 07777) != 0)
    throw Error(path + ": cannot give the new file the mode of the old one (" + std::strerror(errno) + ")");
  struct stat now {};
  if (stat(tmp.c_str(), &now) == 0 && (now.st_uid != st.st_uid || now.st_gid != st.st_gid) &&
      chown(tmp.c_str(), st.st_uid, st.st_gid) != 0)
    throw Error(path + ": cannot give the new file the owner of the old one (" + std::strerror(errno) + ")");
}

}  // namespace

void check_writable(const std::string& path, const WriteOptions& options) {
  if (path.empty()) throw Error("output path is empty");
  check_target(path, resolve(path), options);
}

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write,
                      const WriteOptions& options) {
  if (path.empty()) throw Error("output path is empty");
  const Target target = resolve(path);
  check_target(path, target, options);
  int slot = -1;
  const std::string tmp = create_temp(target.path, &slot);
  try {
    write(tmp);
    if (target.exists) keep_mode_and_owner(path, tmp, target.st);
    if (std::rename(tmp.c_str(), target.path.c_str()) != 0)
      throw Error(path + ": cannot rename the finished temporary file into place: " + std::strerror(errno));
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    unlist_temp(slot);
    throw;
  }
  unlist_temp(slot);
}

void remove_temp_files_on_signals() {
  struct sigaction sa {};
  sa.sa_handler = remove_temps_and_reraise;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

}  // namespace chroma::io

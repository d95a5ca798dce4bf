// The `chromacpp` test fixture shared by the tests/cli programs: runs the built binary
// (CHROMACPP_BINARY) as a subprocess in a fresh temporary folder and checks clean failures (exit code,
// exactly one stderr line naming the problem, no crash trace).
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testdata.h"

extern char** environ;

namespace chroma::test {

namespace fs = std::filesystem;

// A generate run of the mini models takes well under a second; anything near this is a hang.
inline constexpr int kRunTimeoutSeconds = 60;

// ---------------------------------------------------------------------------------------------------
// Running the binary

struct Outcome {
  bool exited = false;  // false: killed by a signal (crash) or by our timeout
  int exit_code = -1;
  int signal = 0;
  std::string out, err;
};

inline std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write test fixture " << path;
}

inline std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// Runs chromacpp with `args` in folder `cwd`, stdout and stderr captured through files (no pipes, so a
// chatty child can never block). `env` entries ("NAME=value") are added to the inherited environment.
inline Outcome run_chromacpp(const std::vector<std::string>& args, const fs::path& cwd,
                  const std::vector<std::string>& env = {}) {
  const fs::path out_path = cwd / ".stdout", err_path = cwd / ".stderr";
  std::vector<std::string> argv_s = {CHROMACPP_BINARY};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s = env;
  for (char** e = environ; *e; ++e) env_s.push_back(*e);  // first match wins in getenv
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, CHROMACPP_BINARY, &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  Outcome r;
  if (rc != 0) {
    r.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return r;
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kRunTimeoutSeconds);
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.err = "timed out after " + std::to_string(kRunTimeoutSeconds) + " s\n";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  r.out = read_file(out_path);
  r.err += read_file(err_path);
  fs::remove(out_path);
  fs::remove(err_path);
  return r;
}

inline std::string describe(const Outcome& r) {
  return "exit " + std::to_string(r.exit_code) + (r.signal ? " signal " + std::to_string(r.signal) : "") +
         "\n--- stdout ---\n" + r.out + "--- stderr ---\n" + r.err;
}

// The generate banner ("chromacpp: 64x64, 2 steps, cfg 4, seed 42") is printed once the options are
// checked, before the models load; it is the only stderr line an error may follow.
inline bool is_banner(const std::string& line) {
  return line.starts_with("chromacpp: ") && line.find(" steps, cfg ") != std::string::npos;
}

// A clean failure: normal non-zero exit, no crash traces, and exactly one error line (besides the
// banner) that contains every string in `mentions`.
inline void expect_one_line_error(const Outcome& r, const std::vector<std::string>& mentions) {
  EXPECT_TRUE(r.exited) << "did not exit normally: " << describe(r);
  EXPECT_NE(r.exit_code, 0) << describe(r);
  for (const char* crash : {"Sanitizer", "runtime error", "terminate called", "Segmentation", "Aborted"})
    EXPECT_EQ(r.err.find(crash), std::string::npos) << "crash trace '" << crash << "': " << describe(r);
  std::vector<std::string> lines;
  for (const auto& l : split_lines(r.err))
    if (!is_banner(l)) lines.push_back(l);
  ASSERT_EQ(lines.size(), 1u) << "expected one error line on stderr: " << describe(r);
  EXPECT_TRUE(lines[0].starts_with("chromacpp: error: ")) << lines[0];
  for (const auto& m : mentions) EXPECT_NE(lines[0].find(m), std::string::npos) << "'" << m << "' not in: " << lines[0];
}

// ---------------------------------------------------------------------------------------------------
// Fixtures

// Each test gets its own empty folder (removed afterwards) as the binary's working directory.
class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "chromacpp-cli-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << "mkdtemp " << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::add, ec);  // a read-only subcase may remain
    for (const auto& e : fs::recursive_directory_iterator(dir_, ec))
      if (e.is_directory(ec)) fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(dir_, ec);
  }
  Outcome run(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    return run_chromacpp(args, dir_, env);
  }
  // Neither a writer's temporary file nor a core dump left in the folder.
  static void expect_no_temp_files(const fs::path& folder) {
    for (const auto& e : fs::directory_iterator(folder)) {
      const std::string name = e.path().filename().string();
      EXPECT_EQ(name.find(".tmp-"), std::string::npos) << "left behind: " << e.path();
      EXPECT_FALSE(name.starts_with("core")) << "core dump: " << e.path();
    }
  }

  fs::path dir_;
};

// Test data paths, absolute because the binary runs in the temporary folder.
inline std::string reference_abs(const std::string& file) { return fs::absolute(reference_path(file)).string(); }
inline std::string spiece_path() { return fs::absolute(tokenizer_path("spiece.model")).string(); }

}  // namespace chroma::test

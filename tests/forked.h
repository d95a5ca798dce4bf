// Running a piece of a test in a child process: for code that may block forever (opening a FIFO) or
// that must end the process (a signal that cleans up and re-raises). The parent only sees how the
// child ended, so a hang or a crash fails the test instead of stopping the whole test program.
#pragma once
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

namespace chroma::test {

struct ChildEnd {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;  // the signal that ended it (SIGALRM: it ran past the time limit)
};

// Runs `body` in a forked child that exits 0 when `body` returns true, 1 otherwise; killed by SIGALRM
// after `seconds`.
inline ChildEnd run_forked(int seconds, const std::function<bool()>& body) {
  const pid_t pid = fork();
  if (pid == 0) {
    alarm(unsigned(seconds));
    bool ok = false;
    try {
      ok = body();
    } catch (...) {
    }
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ChildEnd r;
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return r;
}

// True when `body` throws within `seconds` an exception whose message contains every string in
// `needles` (false when it returns, blocks, or the message lacks one).
template <typename Body>
bool throws_within(int seconds, Body body, std::initializer_list<std::string> needles) {
  const std::vector<std::string> n(needles);
  const ChildEnd end = run_forked(seconds, [&] {
    try {
      body();
    } catch (const std::exception& e) {
      const std::string msg = e.what();
      for (const auto& s : n)
        if (msg.find(s) == std::string::npos) return false;
      return msg.find('\n') == std::string::npos;
    }
    return false;
  });
  return end.exited && end.exit_code == 0;
}

// A named pipe at `path` (no writer ever opens it: a reader that opens it blocking waits forever).
inline bool make_fifo(const std::string& path) { return mkfifo(path.c_str(), 0644) == 0; }

}  // namespace chroma::test

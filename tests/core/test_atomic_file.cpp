// Atomic output files (io/atomic_file.h): what a write may replace and what it must refuse, checked
// on FIFOs, device nodes, symlinks, hard links and read-only files (also as root, who bypasses
// permission bits), and the temporary file removed on SIGTERM/SIGINT.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "forked.h"
#include "io/atomic_file.h"
#include "tensor/error.h"

namespace chroma::io {
namespace {
namespace fs = std::filesystem;

class AtomicWrite : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "chroma-atomic-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  static std::string contents(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // Writes `text` to `path` atomically; returns the error message, "" on success. `called` records
  // whether the writer ran (refusals must come before any work).
  std::string write(const std::string& path, const std::string& text, const WriteOptions& options = {}) {
    called_ = false;
    try {
      write_atomically(path, [&](const std::string& tmp) {
        called_ = true;
        std::ofstream(tmp, std::ios::binary) << text;
      }, options);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  void expect_refused(const std::string& path, std::initializer_list<std::string> needles) {
    const std::string msg = write(path, "new");
    EXPECT_FALSE(msg.empty()) << path << " was replaced";
    EXPECT_FALSE(called_) << "the writer ran before the refusal";
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    EXPECT_THROW(check_writable(path), Error);
    expect_no_temp_files();
  }
  void expect_no_temp_files() {
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left behind: " << e.path();
  }

  fs::path dir_;
  bool called_ = false;
};

TEST_F(AtomicWrite, ReplacesARegularFile) {
  std::ofstream(file("a")) << "old";
  EXPECT_EQ(write(file("a"), "new"), "");
  EXPECT_EQ(contents(file("a")), "new");
  expect_no_temp_files();
}

TEST_F(AtomicWrite, RefusesTargetsThatAreNotRegularFiles) {
  ASSERT_TRUE(test::make_fifo(file("fifo")));
  expect_refused(file("fifo"), {"fifo", "not a regular file"});
  EXPECT_TRUE(fs::is_fifo(file("fifo")));
  fs::create_directory(file("folder"));
  expect_refused(file("folder"), {"folder"});
  // A copy of /dev/null's node (only root may make one): `-o /dev/null` replaced the device.
  if (mknod(file("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0)
    GTEST_SKIP() << "cannot create a device node here (not root?)";
  expect_refused(file("null"), {"null", "not a regular file"});
  EXPECT_TRUE(fs::is_character_file(file("null")));
}

TEST_F(AtomicWrite, WritesThroughASymlinkToItsRegularTarget) {
  std::ofstream(file("target")) << "old";
  fs::create_symlink("target", file("link"));
  EXPECT_EQ(write(file("link"), "new"), "");
  EXPECT_TRUE(fs::is_symlink(file("link")));
  EXPECT_EQ(contents(file("target")), "new");
  expect_no_temp_files();

  fs::create_symlink("missing", file("dangling"));
  expect_refused(file("dangling"), {"dangling", "missing"});
  EXPECT_TRUE(fs::is_symlink(file("dangling")));
  ASSERT_TRUE(test::make_fifo(file("fifo")));
  fs::create_symlink("fifo", file("to-fifo"));
  expect_refused(file("to-fifo"), {"to-fifo", "not a regular file"});
}

TEST_F(AtomicWrite, RefusesAFileWithOtherHardLinks) {
  std::ofstream(file("a")) << "shared";
  fs::create_hard_link(file("a"), file("b"));
  expect_refused(file("a"), {file("a"), "2 hard links"});
  EXPECT_EQ(fs::hard_link_count(file("b")), 2u);
  EXPECT_EQ(contents(file("b")), "shared");
}

TEST_F(AtomicWrite, RespectsAReadOnlyFileEvenAsRoot) {
  std::ofstream(file("ro")) << "keep";
  fs::permissions(file("ro"), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  expect_refused(file("ro"), {"ro", "read-only"});
  EXPECT_EQ(contents(file("ro")), "keep");
  // Asked for explicitly (the CLI's --overwrite), it is replaced and stays read-only.
  EXPECT_EQ(write(file("ro"), "new", {.overwrite_read_only = true}), "");
  EXPECT_EQ(contents(file("ro")), "new");
  EXPECT_EQ(fs::status(file("ro")).permissions(), fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
}

TEST_F(AtomicWrite, KeepsTheModeAndOwnerOfAReplacedFile) {
  std::ofstream(file("f")) << "old";
  ASSERT_EQ(chmod(file("f").c_str(), 0640), 0);
  const bool root = geteuid() == 0;
  if (root) {
    ASSERT_EQ(chown(file("f").c_str(), 12345, 23456), 0);
  }
  EXPECT_EQ(write(file("f"), "new"), "");
  struct stat st {};
  ASSERT_EQ(stat(file("f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (root) {
    EXPECT_EQ(st.st_uid, 12345u);
    EXPECT_EQ(st.st_gid, 23456u);
  }
}

TEST_F(AtomicWrite, NameTooLongForTheTemporaryFileFailsBeforeWork) {
  // 250 bytes is a legal name, but not with the temporary suffix: this failed after the whole run.
  for (size_t n : {250, 256}) {
    const std::string path = file(std::string(n - 4, 'x') + ".png");
    expect_refused(path, {"file name", "255"});
  }
  EXPECT_NO_THROW(check_writable(file(std::string(200, 'x') + ".png")));
}

// A child that is sent `sig` while its temporary file is being written: it must die of that signal
// and leave neither the temporary file nor a changed target.
void expect_signal_removes_temp(const std::string& target, int sig) {
  const test::ChildEnd end = test::run_forked(20, [&] {
    remove_temp_files_on_signals();
    write_atomically(target, [&](const std::string& tmp) {
      std::ofstream(tmp) << std::string(1 << 20, 'p');
      raise(sig);
    });
    return true;
  });
  EXPECT_EQ(end.signal, sig) << "exited " << end.exited << " code " << end.exit_code;
}

TEST_F(AtomicWrite, TerminationSignalsRemoveTheTemporaryFile) {
  std::ofstream(file("out")) << "old";
  for (int sig : {SIGTERM, SIGINT}) {
    expect_signal_removes_temp(file("out"), sig);
    EXPECT_EQ(contents(file("out")), "old");
    expect_no_temp_files();
  }
}

}  // namespace
}  // namespace chroma::io

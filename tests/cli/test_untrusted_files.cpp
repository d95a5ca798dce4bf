// Hostile or unusual files given to chromacpp (issue 13): a named pipe or a folder where a weight or
// tokenizer file is expected, a header whose byte count overflows, metadata with terminal control
// characters, and outputs that are device nodes or read-only files. Each is one error line (or clean
// output), at once, with nothing replaced.
#include <sys/sysmacros.h>

#include "cli_fixture.h"
#include "io/gguf.h"

namespace chroma::test {
namespace {

TEST_F(Cli, InfoOnANamedPipeFailsAtOnce) {
  const std::string fifo = (dir_ / "model.safetensors").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  const auto start = std::chrono::steady_clock::now();
  expect_one_line_error(run({"info", fifo}), {fifo, "not a regular file"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(kRunTimeoutSeconds / 2));
}

TEST_F(Cli, TokenizeOnAFolderNamesIt) {
  expect_one_line_error(run({"tokenize", "--tokenizer", dir_.string(), "cat"}), {dir_.string(), "not a regular file"});
}

TEST_F(Cli, InfoOnAByteCountThatOverflows) {
  // 2^62 F32 values in 0 bytes: info printed 4.6e18 parameters.
  const std::string header = R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})";
  const uint64_t n = header.size();
  const std::string path = (dir_ / "huge.safetensors").string();
  write_file(path, std::string(reinterpret_cast<const char*>(&n), 8) + header);
  expect_one_line_error(run({"info", path}), {path, "'w'", "overflows"});
}

TEST_F(Cli, InfoEscapesControlCharactersInMetadata) {
  const std::string path = (dir_ / "escape.gguf").string();
  const float x[4] = {1, 2, 3, 4};
  io::write_gguf(path, {{"general.name", io::GgufValue::str("red\x1b[31m\rline\nnext")}, {"key\x07", io::GgufValue::u32(1)}},
                 {{"x.weight", DType::F32, {4}, [&](void* dst) { std::memcpy(dst, x, sizeof x); }}});
  const Outcome r = run({"info", path});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (unsigned char c : r.out) EXPECT_TRUE(c >= 0x20 || c == '\n') << "control byte " << int(c) << " in: " << r.out;
  EXPECT_NE(r.out.find("general.name = \"red\\x1b[31m\\rline\\nnext\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("key\\x07 = 1"), std::string::npos) << r.out;
}

class CliOutputs : public Cli {
 protected:
  void SetUp() override {
    Cli::SetUp();
    dit_ = reference_abs("chroma-mini.safetensors");
    CHROMA_REQUIRE_FILE(dit_);
  }
  std::string dit_;
};

TEST_F(CliOutputs, QuantizeOntoADeviceNodeIsRefused) {
  const std::string dev = (dir_ / "null").string();
  if (mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0) GTEST_SKIP() << "cannot create a device node (not root?)";
  expect_one_line_error(run({"quantize", dit_, dev, "--type", "q8_0"}), {dev, "not a regular file"});
  struct stat st {};
  ASSERT_EQ(lstat(dev.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "the device node was replaced";
  expect_no_temp_files(dir_);
}

TEST_F(CliOutputs, QuantizeOntoAReadOnlyFileIsRefused) {
  const std::string out = (dir_ / "out.gguf").string();
  write_file(out, "previous");
  ASSERT_EQ(chmod(out.c_str(), 0444), 0);
  expect_one_line_error(run({"quantize", dit_, out, "--type", "q8_0"}), {out, "read-only"});
  EXPECT_EQ(read_file(out), "previous");
  expect_no_temp_files(dir_);
}

TEST_F(CliOutputs, NameTooLongFailsBeforeTheRun) {
  const std::string out = (dir_ / (std::string(246, 'x') + ".gguf")).string();  // 250 bytes
  expect_one_line_error(run({"quantize", dit_, out, "--type", "q8_0"}), {"file name", "255"});
  expect_no_temp_files(dir_);
}

}  // namespace
}  // namespace chroma::test

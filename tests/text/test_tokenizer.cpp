// T5 tokenizer vs testdata/tokenizer/cases.jsonl (chroma-spec.md §2.1; rules in the tokenizer README).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "tensor/error.h"
#include "forked.h"
#include "testdata.h"
#include "text/tokenizer.h"

namespace chroma::text {
namespace {

using test::tokenizer_path;
using Ids = std::vector<int32_t>;

const std::string& model_path() {
  static const std::string path = tokenizer_path("spiece.model");
  return path;
}

// One tokenizer for the whole program: loading the model takes a noticeable fraction of a second.
const T5Tokenizer& tokenizer() {
  static const T5Tokenizer tok(model_path());
  return tok;
}

std::string ids_str(const Ids& ids) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < ids.size(); ++i) s << (i ? ", " : "") << ids[i];
  return s.str() + "]";
}

std::string repeat(const std::string& word, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? " " : "") + word;
  return s;
}

// Writes bytes to a fresh file under the temp dir (pid in the name: several test runs may share it).
std::string write_temp(const std::string& name, const std::string& bytes) {
  auto path = std::filesystem::temp_directory_path() /
              ("chroma_tok_" + std::to_string(getpid()) + "_" + name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Loading must fail with a one-line chroma::Error naming the path — not crash, not abort.
void expect_load_error(const std::string& path) {
  try {
    T5Tokenizer tok(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Every case: `hf_fast_ids` (what the Chroma pipelines' T5TokenizerFast gives) where present, else `ids`.
TEST(T5Tokenizer, MatchesAllReferenceCases) {
  const std::string cases = tokenizer_path("cases.jsonl");
  CHROMA_REQUIRE_FILE(cases);
  CHROMA_REQUIRE_FILE(model_path());
  std::ifstream in(cases);
  std::string line;
  int n = 0, hf = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    auto c = nlohmann::json::parse(line);
    const bool has_hf = c.contains("hf_fast_ids");
    const Ids want = (has_hf ? c["hf_fast_ids"] : c["ids"]).get<Ids>();
    const Ids got = tokenizer().encode(c["text"].get<std::string>());
    EXPECT_EQ(got, want) << "case " << n << " (" << c["note"].get<std::string>() << ")\n  text "
                         << c["text"].dump() << "\n  got  " << ids_str(got) << "\n  want " << ids_str(want);
    ++n;
    hf += has_hf;
  }
  EXPECT_EQ(n, 70);
  EXPECT_EQ(hf, 7);
}

// §2.1: the empty prompt is EOS only; whitespace-only text too (README "How the ids were produced").
TEST(T5Tokenizer, EmptyPromptIsEos) {
  CHROMA_REQUIRE_FILE(model_path());
  EXPECT_EQ(tokenizer().encode(""), Ids{T5Tokenizer::kEos});
  EXPECT_EQ(tokenizer().encode("  \t\n "), Ids{T5Tokenizer::kEos});
}

// truncation=True, max_length=512: 511 text ids + EOS at most. "cat cat …" is one "▁cat" (1712,
// from the reference case "a photo of a cat") per word.
TEST(T5Tokenizer, TruncatesTo511PiecesPlusEos) {
  CHROMA_REQUIRE_FILE(model_path());
  constexpr int32_t kCat = 1712;
  for (int words : {510, 511, 512, 513, 2000}) {
    Ids want(size_t(std::min(words, 511)), kCat);
    want.push_back(T5Tokenizer::kEos);
    EXPECT_EQ(tokenizer().encode(repeat("cat", words)), want) << words << " words";
  }
  // Literal "</s>" counts as a text id too, and EOS is still appended after it.
  Ids eos_only(T5Tokenizer::kMaxTokens, T5Tokenizer::kEos);
  EXPECT_EQ(tokenizer().encode(repeat("</s>", 600)), eos_only);
}

// The sentinels are HF additions on top of the 32000 pieces: <extra_id_N> = 32099 − N (README).
TEST(T5Tokenizer, SentinelIds) {
  CHROMA_REQUIRE_FILE(model_path());
  EXPECT_EQ(tokenizer().encode("<extra_id_0>"), (Ids{32099, 1}));
  EXPECT_EQ(tokenizer().encode("<extra_id_99>"), (Ids{32000, 1}));
  EXPECT_EQ(tokenizer().encode("<extra_id_10><extra_id_1>"), (Ids{32089, 32098, 1}));
  // Not sentinels (out of range, or not closed): plain text, so no id from the sentinel range.
  for (const char* text : {"<extra_id_100>", "<extra_id_5", "extra_id_5>"})
    for (int32_t id : tokenizer().encode(text)) EXPECT_LT(id, 32000) << text;
  // README: non-legacy T5TokenizerFast puts no "▁" after a special token.
  EXPECT_EQ(tokenizer().encode("Hello <extra_id_0>."), (Ids{8774, 32099, 5, 1}));
}

TEST(T5Tokenizer, MissingFileIsOneLineError) {
  expect_load_error((std::filesystem::temp_directory_path() / "chroma_no_such_dir/spiece.model").string());
}

TEST(T5Tokenizer, CorruptFileIsOneLineError) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 8; ++i) {
    std::string junk(size_t(1) << (4 + i), '\0');  // 16 B .. 2 KiB of random bytes
    for (char& b : junk) b = char(rng());
    std::string path = write_temp("random" + std::to_string(i) + ".model", junk);
    expect_load_error(path);
    std::filesystem::remove(path);
  }
  std::string empty = write_temp("empty.model", "");
  expect_load_error(empty);
  std::filesystem::remove(empty);

  CHROMA_REQUIRE_FILE(model_path());
  const std::string model = read_bytes(model_path());
  for (size_t keep : {size_t(1000), model.size() / 2, model.size() - 1}) {
    std::string path = write_temp("truncated.model", model.substr(0, keep));
    expect_load_error(path);
    std::filesystem::remove(path);
  }
}

// A piece with a NUL byte made libsentencepiece abort the process while building its trie (found by
// fuzz_tokenizer in a 30-minute run): it is an error naming the file. Run in a child process, so the
// old abort fails this test instead of ending the test program.
TEST(T5Tokenizer, PieceWithNulByteIsAnErrorNotAnAbort) {
  CHROMA_REQUIRE_FILE(model_path());
  std::string model = read_bytes(model_path());
  // The piece "▁that" (tag 0x0a, length 7, U+2581, "that") with its letters replaced by NUL bytes.
  const std::string piece = std::string("\x0a\x07\xe2\x96\x81") + "that";
  const size_t at = model.find(piece);
  ASSERT_NE(at, std::string::npos);
  model.replace(at + 5, 4, std::string(4, '\0'));
  const std::string path = write_temp("nul-piece.model", model);
  EXPECT_TRUE(test::throws_within(30, [&] { T5Tokenizer tok(path); }, {path, "NUL byte"}));
  std::filesystem::remove(path);
}

TEST(T5Tokenizer, FolderOrPipeIsRefusedNamingThePath) {
  const std::filesystem::path dir = test::temp_path("tokenizer-dir");
  std::filesystem::create_directories(dir);
  expect_load_error(dir.string());
  const std::string fifo = (dir / "spiece.model").string();
  ASSERT_TRUE(test::make_fifo(fifo));
  EXPECT_TRUE(test::throws_within(5, [&] { T5Tokenizer tok(fifo); }, {fifo, "not a regular file"}));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chroma::text

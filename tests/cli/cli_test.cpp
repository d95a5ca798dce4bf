// End-to-end tests of the `chromacpp` command line: the built binary (CHROMACPP_BINARY) runs as a
// subprocess in a fresh temporary folder, and each test checks its exit code, its output, and — for
// bad input — that stderr carries exactly one line naming the problem and nothing crashed.
// The reference-value end-to-end tests live in tests/pipeline; here only the command line is under test.
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "cli_fixture.h"
#include "image_fixtures.h"
#include "io/image.h"
#include "pipeline/output.h"
#include "io/safetensors.h"
#include "radiance_checkpoint.h"
#include "testdata.h"

namespace chroma::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// the command itself

TEST_F(Cli, HelpListsTheSubcommands) {
  const Outcome r = run({"--help"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  for (const char* sub : {"generate", "tokenize", "compare", "serve"}) EXPECT_NE(r.out.find(sub), std::string::npos) << r.out;
}

TEST_F(Cli, NoSubcommandIsAnError) {
  expect_one_line_error(run({}), {"subcommand"});
  expect_one_line_error(run({"paint"}), {"subcommand"});  // CLI11 reports the missing subcommand, not the word
}

// serve: bad flags and an address it cannot take are one-line errors before or instead of serving.
TEST_F(Cli, ServeRefusesBadFlagsAndATakenPort) {
  expect_one_line_error(run({"serve", "--port", "70000"}), {"--port"});
  expect_one_line_error(run({"serve", "--max-queue", "0"}), {"--max-queue"});
  expect_one_line_error(run({"serve", "--max-size", "abc"}), {"--max-size"});
  const std::vector<std::string> models = {"--dit", reference_abs("chroma-mini.safetensors"), "--t5",
                                           reference_abs("t5-mini.safetensors"), "--vae",
                                           reference_abs("ae-mini.safetensors"), "--tokenizer", spiece_path()};
  for (size_t i = 1; i < models.size(); i += 2) CHROMA_REQUIRE_FILE(models[i]);
  std::vector<std::string> args = {"serve", "--host", "203.0.113.7", "--port", "8080"};  // TEST-NET-3: not ours
  args.insert(args.end(), models.begin(), models.end());
  expect_one_line_error(run(args), {"203.0.113.7:8080", "cannot listen"});
}

// ---------------------------------------------------------------------------------------------------
// tokenize

TEST_F(Cli, TokenizePrintsTheReferenceIds) {
  CHROMA_REQUIRE_FILE(spiece_path());
  // ids from testdata/tokenizer/cases.jsonl ("plain prompt")
  const Outcome r = run({"tokenize", "--tokenizer", spiece_path(), "a photo of a cat"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.out, "[3,9,1202,13,3,9,1712,1]\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(Cli, TokenizeMissingModelNamesThePath) {
  const std::string missing = (dir_ / "no-such-folder" / "spiece.model").string();
  const Outcome r = run({"tokenize", "--tokenizer", missing, "a photo of a cat"});
  expect_one_line_error(r, {missing});
  EXPECT_EQ(r.out, "");
}

TEST_F(Cli, TokenizeNonModelFileNamesThePath) {
  const std::string junk = (dir_ / "junk.model").string();
  write_file(junk, "this is not a SentencePiece model");
  expect_one_line_error(run({"tokenize", "--tokenizer", junk, "cat"}), {junk});
}

// ---------------------------------------------------------------------------------------------------
// compare

// A row of the compare table: the line whose first column is `name`.
std::string table_row(const std::string& out, const std::string& name) {
  for (const auto& l : split_lines(out))
    if (l.starts_with(name + " ")) return l;
  return "";
}

// The last three columns of a row (mean_abs, max_abs, rel_err), single-space separated.
std::string error_columns(const std::string& row) {
  std::vector<std::string> words;
  std::istringstream in(row);
  for (std::string w; in >> w;) words.push_back(w);
  if (words.size() < 3) return "";
  return words[words.size() - 3] + " " + words[words.size() - 2] + " " + words[words.size() - 1];
}

class CliCompare : public Cli {
 protected:
  // A = test output, B = reference. "x" differs by exactly 1 in one of 4 elements, so
  //   mean_abs = 1/4, max_abs = 1, rel = max_abs / max|B| = 1/5 — all exact in binary.
  // "y" is [3] in A and [1, 3] in B: equal after dropping the leading 1, zero error.
  void SetUp() override {
    Cli::SetUp();
    a_ = (dir_ / "a.safetensors").string();
    b_ = (dir_ / "b.safetensors").string();
    const Tensor ax({2, 2}, {1, 2, 3, 4}), bx({2, 2}, {1, 2, 3, 5});
    const Tensor ay({3}, {0.5f, -1, 2}), by({1, 3}, {0.5f, -1, 2});
    const Tensor only({1}, {7});
    io::write_safetensors(a_, {{"x", &ax}, {"y", &ay}, {"only_a", &only}});
    io::write_safetensors(b_, {{"x", &bx}, {"y", &by}, {"only_b", &only}});
  }
  std::string a_, b_;
};

TEST_F(CliCompare, PrintsTheTableWithExactErrors) {
  const Outcome r = run({"compare", a_, b_});
  ASSERT_EQ(r.exit_code, 0) << describe(r);  // no --threshold: a report only
  const std::string x = table_row(r.out, "x"), y = table_row(r.out, "y");
  ASSERT_NE(x, "") << r.out;
  ASSERT_NE(y, "") << r.out;
  EXPECT_NE(x.find("[2, 2]"), std::string::npos) << x;
  EXPECT_EQ(error_columns(x), "2.5000e-01 1.0000e+00 2.0000e-01") << x;  // mean, max, rel
  EXPECT_NE(y.find("[3]"), std::string::npos) << y;
  EXPECT_EQ(error_columns(y), "0.0000e+00 0.0000e+00 0.0000e+00") << y;
  EXPECT_NE(r.out.find("2 common tensors, 1 only in A, 1 only in B"), std::string::npos) << r.out;
  EXPECT_EQ(table_row(r.out, "only_a"), "") << "tensors without a partner are counted, not compared";
}

TEST_F(CliCompare, ThresholdPassesAtAndFailsBelowTheError) {
  // rel("x") is exactly 0.2: a threshold equal to it passes, anything smaller fails.
  const Outcome pass = run({"compare", a_, b_, "--threshold", "0.2"});
  EXPECT_EQ(pass.exit_code, 0) << describe(pass);
  EXPECT_EQ(pass.out.find("> threshold"), std::string::npos) << pass.out;

  const Outcome fail = run({"compare", a_, b_, "--threshold", "0.19"});
  EXPECT_TRUE(fail.exited) << describe(fail);
  EXPECT_EQ(fail.exit_code, 1) << describe(fail);
  EXPECT_NE(table_row(fail.out, "x").find("> threshold"), std::string::npos) << fail.out;
  EXPECT_EQ(table_row(fail.out, "y").find("> threshold"), std::string::npos) << fail.out;
}

TEST_F(CliCompare, NanFailsAnyThreshold) {
  const Tensor a({2}, {1, NAN}), b({2}, {1, 2});
  io::write_safetensors(a_, {{"x", &a}});
  io::write_safetensors(b_, {{"x", &b}});
  const Outcome r = run({"compare", a_, b_, "--threshold", "1e30"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(table_row(r.out, "x").find("> threshold"), std::string::npos) << r.out;
}

TEST_F(CliCompare, PrefixesSelectAndStripNames) {
  const Tensor v({2}, {1, 2});
  io::write_safetensors(a_, {{"step.0.v", &v}, {"other", &v}});
  io::write_safetensors(b_, {{"inter.v", &v}});
  const Outcome r = run({"compare", a_, b_, "--a-prefix", "step.0.", "--b-prefix", "inter.", "--threshold", "0"});
  EXPECT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(table_row(r.out, "v"), "") << r.out;
  EXPECT_NE(r.out.find("1 common tensors, 0 only in A, 0 only in B"), std::string::npos) << r.out;
}

TEST_F(CliCompare, ShapeMismatchFails) {
  const Tensor a({2, 2}, {1, 2, 3, 4}), b({4}, {1, 2, 3, 4});
  io::write_safetensors(a_, {{"x", &a}});
  io::write_safetensors(b_, {{"x", &b}});
  const Outcome r = run({"compare", a_, b_});  // fails even without --threshold
  EXPECT_TRUE(r.exited) << describe(r);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(table_row(r.out, "x").find("SHAPE MISMATCH"), std::string::npos) << r.out;
}

TEST_F(CliCompare, NoCommonNamesFails) {
  const Tensor v({1}, {1});
  io::write_safetensors(a_, {{"p", &v}});
  io::write_safetensors(b_, {{"q", &v}});
  const Outcome r = run({"compare", a_, b_});
  expect_one_line_error(r, {"no tensor names in common"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("0 common tensors, 1 only in A, 1 only in B"), std::string::npos) << r.out;
}

TEST_F(CliCompare, MissingOrCorruptFileNamesIt) {
  const std::string missing = (dir_ / "missing.safetensors").string();
  expect_one_line_error(run({"compare", a_, missing}), {missing});
  const std::string junk = (dir_ / "junk.safetensors").string();
  write_file(junk, "abc");
  expect_one_line_error(run({"compare", junk, b_}), {junk});
}

// ---------------------------------------------------------------------------------------------------
// generate: bad input

// Flags of a valid tiny run of the mini models; tests replace or drop some of them.
using Flags = std::vector<std::pair<std::string, std::string>>;
const std::string kDrop = "\x01drop";  // as a value in an override: remove the flag

class CliGenerate : public Cli {
 protected:
  void SetUp() override {
    Cli::SetUp();
    for (const char* f : {"chroma-mini.safetensors", "t5-mini.safetensors", "ae-mini.safetensors"})
      CHROMA_REQUIRE_FILE(reference_path(f));
    CHROMA_REQUIRE_FILE(spiece_path());
    out_ = (dir_ / "out.png").string();
  }

  Flags mini_flags() const {
    return {{"--dit", reference_abs("chroma-mini.safetensors")},
            {"--t5", reference_abs("t5-mini.safetensors")},
            {"--vae", reference_abs("ae-mini.safetensors")},
            {"--tokenizer", spiece_path()},
            {"-p", "a photo of a cat"},
            {"-W", "64"},
            {"-H", "64"},
            {"--steps", "2"},
            {"--seed", "42"},
            {"-o", out_}};
  }

  // `generate` with the mini flags, each override replacing the flag's value (or adding the flag).
  Outcome generate(const Flags& overrides) {
    Flags flags = mini_flags();
    for (const auto& [flag, value] : overrides) {
      auto it = std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == flag; });
      if (it == flags.end()) flags.push_back({flag, value});
      else it->second = value;
    }
    std::vector<std::string> args = {"generate"};
    for (const auto& [flag, value] : flags) {
      if (value == kDrop) continue;
      args.push_back(flag);
      if (!value.empty()) args.push_back(value);  // "" = a flag without a value
    }
    return run(args);
  }

  // An error case with -o naming an existing file: one error line mentioning `mentions`, the file's
  // bytes unchanged and no temporary file left beside it.
  void expect_rejected(const Flags& overrides, const std::vector<std::string>& mentions) {
    SCOPED_TRACE("overrides: " + describe_flags(overrides));
    const std::string previous = "an earlier image that a failed run must not touch\n";
    write_file(out_, previous);
    expect_one_line_error(generate(overrides), mentions);
    EXPECT_EQ(read_file(out_), previous) << "the existing output file was modified";
    expect_no_temp_files(dir_);
  }

  static std::string describe_flags(const Flags& f) {
    std::string s;
    for (const auto& [flag, value] : f) s += flag + " " + (value == kDrop ? "<dropped>" : value) + " ";
    return s;
  }

  std::string out_;
};

TEST_F(CliGenerate, RejectsBadSizes) {
  expect_rejected({{"-W", "100"}}, {"--width", "100", "multiple of 16"});
  expect_rejected({{"-H", "100"}}, {"--height", "100", "multiple of 16"});
  expect_rejected({{"-W", "0"}}, {"--width", "0"});
  expect_rejected({{"-H", "-64"}}, {"--height", "-64"});
  expect_rejected({{"-W", "64.5"}}, {"64.5"});  // not an integer: a parse error
}

TEST_F(CliGenerate, RejectsBadSamplerOptions) {
  expect_rejected({{"--steps", "0"}}, {"--steps", "0"});
  expect_rejected({{"--steps", "-3"}}, {"--steps", "-3"});
  expect_rejected({{"--skip-cfg-steps", "-2"}}, {"--skip-cfg-steps", "-2"});
  expect_rejected({{"--sampler-dtype", "xx"}}, {"--sampler-dtype", "xx"});
  expect_rejected({{"--cfg", "nan"}}, {"--cfg"});
  expect_rejected({{"--preset", "a1111"}}, {"--preset", "a1111", "unknown preset"});
  expect_rejected({{"--text-padding", "hf"}}, {"--text-padding", "hf"});
  expect_rejected({{"--scheduler", "bong"}}, {"--scheduler", "bong"});
  expect_rejected({{"--sampler", "dpm++3m"}}, {"--sampler", "dpm++3m"});
}

// A preset sets its front end's options wherever it stands; the other flags override it, and the
// image's metadata holds the settings that ran.
TEST_F(CliGenerate, PresetIsAppliedBeforeTheOtherFlags) {
  const Outcome r = generate({{"--seed", "3"}, {"--preset", "comfyui"}, {"--sampler", "dpm++2s_a"}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const io::Image png = io::read_image(out_);
  auto it = std::find_if(png.text.begin(), png.text.end(), [](const auto& t) { return t.first == "chroma.cpp"; });
  ASSERT_NE(it, png.text.end());
  const json params = json::parse(it->second);
  EXPECT_EQ(params.at("steps"), 2) << "the fixture's --steps 2 comes before --preset and still wins";
  EXPECT_EQ(params.at("scheduler"), "beta");
  EXPECT_EQ(params.at("text_padding"), "comfyui");
  EXPECT_EQ(params.at("shift"), false);
  EXPECT_EQ(params.at("cfg"), 3.5);
  EXPECT_EQ(params.at("sampler"), "dpm++2s_a");
}

// Chroma1-Flash (CFG baked in) runs 8 heun steps at cfg 1 unless told otherwise; the variant comes
// from the file's name or --variant, and the image's metadata names it with the compute mode.
TEST_F(CliGenerate, FlashVariantDefaultsAndMetadata) {
  const fs::path flash = dir_ / "Chroma1-Flash.safetensors";
  fs::create_symlink(reference_abs("chroma-mini.safetensors"), flash);
  auto params_of = [&](const Outcome& r) {
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    const io::Image png = io::read_image(out_);
    auto it = std::find_if(png.text.begin(), png.text.end(), [](const auto& t) { return t.first == "chroma.cpp"; });
    return it == png.text.end() ? json() : json::parse(it->second);
  };
  for (const Flags& variant : {Flags{{"--dit", flash.string()}}, Flags{{"--variant", "flash"}}}) {
    SCOPED_TRACE(describe_flags(variant));
    Flags flags = variant;
    flags.push_back({"--steps", kDrop});
    const Outcome r = generate(flags);
    EXPECT_NE(r.err.find("8 steps, cfg 1,"), std::string::npos) << r.err;
    const json params = params_of(r);
    EXPECT_EQ(params.value("steps", 0), 8);
    EXPECT_EQ(params.value("sampler", ""), "heun");
    EXPECT_EQ(params.value("cfg", 0.0), 1.0);
    EXPECT_EQ(params.value("variant", ""), "Chroma1-Flash");
    EXPECT_EQ(params.value("compute", ""), "auto");
  }
  // Flags still win over the variant's defaults.
  const json params = params_of(generate({{"--dit", flash.string()}, {"--cfg", "2.5"}, {"--sampler", "euler"}}));
  EXPECT_EQ(params.value("steps", 0), 2);
  EXPECT_EQ(params.value("cfg", 0.0), 2.5);
  EXPECT_EQ(params.value("sampler", ""), "euler");
  // The plain mini file is an unnamed Chroma with the usual defaults.
  EXPECT_EQ(params_of(generate({})).value("variant", ""), "Chroma");

  const Outcome info = run({"info", flash.string()});
  ASSERT_EQ(info.exit_code, 0) << describe(info);
  EXPECT_NE(info.out.find("variant:    Chroma1-Flash"), std::string::npos) << info.out;
  expect_rejected({{"--variant", "schnell"}}, {"--variant", "schnell", "flash"});
}

TEST_F(CliGenerate, RejectsBadCompute) {
  expect_rejected({{"--compute", "int4"}}, {"--compute", "int4", "expected auto, f32, bf16 or int8"});
  if (!__builtin_cpu_supports("avx512bf16")) expect_rejected({{"--compute", "bf16"}}, {"--compute bf16", "AVX-512 BF16"});
}

TEST_F(CliGenerate, RejectsUnknownFlagAndMissingPrompt) {
  expect_rejected({{"--no-such-flag", ""}}, {"--no-such-flag"});
  expect_rejected({{"-p", kDrop}}, {"--prompt"});
}

TEST_F(CliGenerate, MissingModelFilesNameThePath) {
  const std::string missing = (dir_ / "absent.safetensors").string();
  expect_rejected({{"--dit", missing}}, {missing});
  expect_rejected({{"--t5", missing}}, {missing});
  expect_rejected({{"--vae", missing}}, {missing});
  expect_rejected({{"--tokenizer", missing}}, {missing});
}

// Chroma1-Radiance (docs/radiance.md) on a mini checkpoint the test writes: runs without --vae, and
// `info` and -v name the variant.
TEST_F(CliGenerate, RadianceRunsWithoutVaeAndIsNamed) {
  MiniRadiance o;
  o.conv_patch = 16;
  o.max_freqs = 8;
  o.context = 128;  // T5-mini's width
  o.x0 = true;
  const std::string dit = (dir_ / "radiance-mini.safetensors").string();
  {
    const auto tensors = mini_radiance_tensors(o);
    std::vector<io::NamedTensor> entries;
    for (const auto& [name, t] : tensors) entries.push_back({name, &t});
    io::write_safetensors(dit, entries);
  }
  const Outcome r = generate({{"--dit", dit}, {"--vae", kDrop}, {"-W", "48"}, {"-H", "32"}, {"--cfg", "4"},
                              {"-n", "blurry"}, {"-v", ""}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("Chroma1-Radiance"), std::string::npos) << r.err;
  const io::Image png = io::read_image(out_);
  EXPECT_EQ(png.width, 48);
  EXPECT_EQ(png.height, 32);

  const Outcome info = run({"info", dit});
  ASSERT_EQ(info.exit_code, 0) << describe(info);
  EXPECT_NE(info.out.find("Chroma1-Radiance"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("x0 prediction"), std::string::npos) << info.out;
}

// A Radiance file missing one of its tensors: one error line naming it, non-zero exit, nothing written.
TEST_F(CliGenerate, RadianceMissingTensorIsNamed) {
  MiniRadiance o;
  o.context = 128;
  for (const std::string name : {"nerf_blocks.1.param_generator.weight", "nerf_final_layer_conv.conv.bias",
                                 "nerf_image_embedder.embedder.0.weight", "img_in_patch.weight"}) {
    auto tensors = mini_radiance_tensors(o);
    tensors.erase(name);
    const std::string dit = (dir_ / "radiance-bad.safetensors").string();
    std::vector<io::NamedTensor> entries;
    for (const auto& [n, t] : tensors) entries.push_back({n, &t});
    io::write_safetensors(dit, entries);
    expect_rejected({{"--dit", dit}, {"--vae", kDrop}}, {name});
  }
}

TEST_F(CliGenerate, TruncatedDitFile) {
  const std::string full = read_file(reference_path("chroma-mini.safetensors"));
  const std::string cut = (dir_ / "cut.safetensors").string();
  // Cut inside the data: the header's offsets point past the end of the file.
  write_file(cut, full.substr(0, full.size() / 2));
  expect_rejected({{"--dit", cut}}, {cut, "truncated"});
  // Cut inside the header.
  write_file(cut, full.substr(0, 100));
  expect_rejected({{"--dit", cut}}, {cut});
  // Shorter than the 8-byte header length; empty.
  write_file(cut, full.substr(0, 5));
  expect_rejected({{"--dit", cut}}, {cut});
  write_file(cut, "");
  expect_rejected({{"--dit", cut}}, {cut});
}

TEST_F(CliGenerate, CorruptDitHeader) {
  const std::string bad = (dir_ / "bad.safetensors").string();
  std::mt19937 rng(1234);
  std::string noise(4096, '\0');
  for (char& c : noise) c = char(rng());
  write_file(bad, noise);  // random header length
  expect_rejected({{"--dit", bad}}, {bad});
  const uint64_t len = 64;  // a plausible header length followed by random bytes: not JSON
  write_file(bad, std::string(reinterpret_cast<const char*>(&len), 8) + noise);
  expect_rejected({{"--dit", bad}}, {bad, "JSON"});
}

// A safetensors file from a hand-written header and data section (the writer would never produce
// these); the header is padded to 8 bytes like the real writer does.
std::string raw_safetensors(const json& header, const std::string& data) {
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t len = h.size();
  return std::string(reinterpret_cast<const char*>(&len), 8) + h + data;
}

TEST_F(CliGenerate, DitHeaderThatLies) {
  const std::string bad = (dir_ / "lies.safetensors").string();
  const std::string data(64, '\0');
  const std::vector<std::pair<json, std::vector<std::string>>> cases = {
      // 16 bytes stored for a shape that needs 4·4·4 = 64
      {{{"img_in.weight", {{"dtype", "F32"}, {"shape", {4, 4}}, {"data_offsets", {0, 16}}}}}, {"img_in.weight", "bytes"}},
      // offsets past the data section
      {{{"img_in.weight", {{"dtype", "F32"}, {"shape", {4, 4}}, {"data_offsets", {64, 128}}}}}, {"img_in.weight"}},
      // end before begin
      {{{"img_in.weight", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {8, 0}}}}}, {"img_in.weight"}},
      // two tensors over the same bytes
      {{{"a", {{"dtype", "F32"}, {"shape", {8}}, {"data_offsets", {0, 32}}}},
        {"b", {{"dtype", "F32"}, {"shape", {8}}, {"data_offsets", {16, 48}}}}},
       {"overlap"}},
      // a shape whose element count overflows
      {{{"a", {{"dtype", "F32"}, {"shape", {1ull << 40, 1ull << 40}}, {"data_offsets", {0, 64}}}}}, {"'a'"}},
      // a negative dimension, an unknown dtype
      {{{"a", {{"dtype", "F32"}, {"shape", {-1}}, {"data_offsets", {0, 4}}}}}, {"'a'"}},
      {{{"a", {{"dtype", "Q4"}, {"shape", {1}}, {"data_offsets", {0, 4}}}}}, {"'a'", "Q4"}},
  };
  for (const auto& [header, mentions] : cases) {
    SCOPED_TRACE(header.dump());
    write_file(bad, raw_safetensors(header, data));
    std::vector<std::string> m = mentions;
    m.push_back(bad);
    expect_rejected({{"--dit", bad}}, m);
  }
}

// A float32 copy of the mini DiT, with `edit` applied to its tensors first.
void write_dit_copy(const std::string& path, const std::function<void(std::map<std::string, Tensor>&)>& edit) {
  auto src = io::SafetensorsFile::open(reference_path("chroma-mini.safetensors"));
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, view] : src->tensors()) tensors[name] = view.to_f32();
  edit(tensors);
  std::vector<io::NamedTensor> list;
  for (const auto& [name, t] : tensors) list.push_back({name, &t});
  io::write_safetensors(path, list);
}

TEST_F(CliGenerate, DitTensorMissing) {
  const std::string dit = (dir_ / "dit-missing.safetensors").string();
  write_dit_copy(dit, [](auto& t) { ASSERT_EQ(t.erase("final_layer.linear.weight"), 1u); });
  expect_rejected({{"--dit", dit}}, {dit, "final_layer.linear.weight", "missing"});
}

TEST_F(CliGenerate, DitTensorMisshaped) {
  const std::string dit = (dir_ / "dit-shape.safetensors").string();
  write_dit_copy(dit, [](auto& t) { t.at("double_blocks.1.img_attn.proj.weight").reshape({128, 512}); });
  expect_rejected({{"--dit", dit}}, {dit, "double_blocks.1.img_attn.proj.weight", "[128, 512]", "[256, 256]"});
}

TEST_F(CliGenerate, WrongModelFiles) {
  const std::string vae = reference_abs("ae-mini.safetensors");
  expect_rejected({{"--t5", vae}}, {vae, "missing"});
  expect_rejected({{"--dit", vae}}, {vae});
  const std::string t5 = reference_abs("t5-mini.safetensors");
  expect_rejected({{"--vae", t5}}, {t5});
}

TEST_F(CliGenerate, InitNoiseOfTheWrongShapeOrDtype) {
  const std::string noise = (dir_ / "noise.safetensors").string();
  const Tensor small({1, 16, 4, 4});  // the latent of 32×32, not 64×64
  io::write_safetensors(noise, {{"noise", &small}});
  expect_rejected({{"--init-noise", noise}}, {noise, "[1, 16, 4, 4]", "[1, 16, 8, 8]"});

  const std::string bf16(1 * 16 * 8 * 8 * 2, '\0');  // right shape, stored as BF16
  write_file(noise, raw_safetensors({{"noise", {{"dtype", "BF16"}, {"shape", {1, 16, 8, 8}}, {"data_offsets", {0, bf16.size()}}}}}, bf16));
  expect_rejected({{"--init-noise", noise}}, {noise, "BF16", "F32"});

  const Tensor right({1, 16, 8, 8});
  io::write_safetensors(noise, {{"a", &right}, {"b", &right}});  // which one?
  expect_rejected({{"--init-noise", noise}}, {noise, "one tensor"});

  const std::string missing = (dir_ / "absent-noise.safetensors").string();
  expect_rejected({{"--init-noise", missing}}, {missing});
}

TEST_F(CliGenerate, UnwritableOutputPaths) {
  const std::string no_folder = (dir_ / "no-such-folder" / "out.png").string();
  expect_one_line_error(generate({{"-o", no_folder}}), {no_folder, "does not exist"});
  expect_one_line_error(generate({{"-o", dir_.string()}}), {dir_.string(), "folder"});
  // The same checks for --save-latent, with an existing -o that must survive.
  expect_rejected({{"--save-latent", no_folder}}, {no_folder});
  expect_rejected({{"--save-latent", dir_.string()}}, {dir_.string()});
  // --dump creates its folder, so only a path that is a file already cannot be one.
  const std::string file = (dir_ / "a-file").string();
  write_file(file, "x");
  expect_rejected({{"--dump", file}}, {file});
}

TEST_F(CliGenerate, ReadOnlyOutputFolder) {
  const fs::path ro = dir_ / "read-only";
  fs::create_directory(ro);
  const std::string out = (ro / "out.png").string(), previous = "existing image\n";
  write_file(out, previous);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  if (access(ro.c_str(), W_OK) == 0)  // root (or CAP_DAC_OVERRIDE) writes anyway
    GTEST_SKIP() << "running with write access to read-only folders (root?): cannot test a read-only output folder";
  expect_one_line_error(generate({{"-o", out}}), {out, "not writable"});
  EXPECT_EQ(read_file(out), previous);
  expect_no_temp_files(ro);
}

TEST_F(CliGenerate, NoModelFilesListsWhatIsNeeded) {
  // No model flags, an empty $CHROMA_MODELS, an empty download cache and no ./models: explain which
  // files and where to get them.
  const fs::path empty = dir_ / "empty-models";
  fs::create_directory(empty);
  const Outcome r = run({"generate", "-p", "cat", "-W", "64", "-H", "64", "-o", out_},
                        {"CHROMA_MODELS=" + empty.string(), "CHROMA_CACHE=" + empty.string()});
  EXPECT_TRUE(r.exited) << describe(r);
  EXPECT_NE(r.exit_code, 0) << describe(r);
  for (const char* flag : {"--dit", "--t5", "--vae", "--tokenizer", "huggingface.co"})
    EXPECT_NE(r.err.find(flag), std::string::npos) << flag << " not mentioned: " << describe(r);
}

// ---------------------------------------------------------------------------------------------------
// generate: a successful tiny run

TEST_F(CliGenerate, TinyRunWritesPngAndLatent) {
  const std::string latent = (dir_ / "latent.safetensors").string();
  const Outcome r = generate({{"--seed", "1"}, {"--save-latent", latent}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("seed 1"), std::string::npos) << r.err;

  const io::Image png = io::read_image(out_);
  const int w = png.width, h = png.height;
  const std::vector<uint8_t>& rgb = png.rgb;
  const io::TextChunks& text = png.text;
  EXPECT_EQ(w, 64);
  EXPECT_EQ(h, 64);
  EXPECT_EQ(rgb.size(), size_t(64 * 64 * 3));
  auto it = std::find_if(text.begin(), text.end(), [](const auto& t) { return t.first == "chroma.cpp"; });
  ASSERT_NE(it, text.end()) << "no 'chroma.cpp' text chunk";
  const json params = json::parse(it->second);
  EXPECT_EQ(params.at("seed"), 1);
  EXPECT_EQ(params.at("width"), 64);
  EXPECT_EQ(params.at("height"), 64);
  EXPECT_EQ(params.at("steps"), 2);
  EXPECT_EQ(params.at("prompt"), "a photo of a cat");

  auto f = io::SafetensorsFile::open(latent);
  ASSERT_EQ(f->tensors().size(), 1u);
  const TensorView& v = f->tensors().begin()->second;
  EXPECT_EQ(v.dtype, DType::F32);
  EXPECT_EQ(shape_str(v.shape), "[1, 16, 8, 8]");
  for (float x : v.to_f32().to_vector()) ASSERT_TRUE(std::isfinite(x)) << "non-finite latent value";
  expect_no_temp_files(dir_);
}

// ---------------------------------------------------------------------------------------------------
// generate: the command line itself reproduces the author's reference run (case e)

class CliReference : public CliGenerate {
 protected:
  // The case e run: 64×64, 4 steps, cfg 4, seed 42, the case c prompt, negative "" (the default).
  Flags case_e() const {
    return {{"-p", "a red fox sitting in fresh snow, golden hour"}, {"--steps", "4"}, {"--seed", "42"}, {"--cfg", "4"}};
  }
  std::unique_ptr<io::SafetensorsFile> reference(const char* file) {
    const std::string path = reference_path(file);
    if (!fs::exists(path)) return nullptr;
    return io::SafetensorsFile::open(path);
  }
};

TEST_F(CliReference, SeedRunWritesTheReferenceImage) {
  CHROMA_REQUIRE_FILE(reference_path("case-e-txt2img-fp32.safetensors"));
  auto ref = reference("case-e-txt2img-fp32.safetensors");
  const Outcome r = generate(case_e());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const io::Image png = io::read_image(out_);
  ASSERT_EQ(png.width * png.height, 64 * 64);
  expect_rgb8_close(png.rgb, ref->get("firstn0.output.image_u8"));
}

TEST_F(CliReference, Bf16SamplerReproducesTheReferenceLatent) {
  CHROMA_REQUIRE_FILE(reference_path("case-e-txt2img-bf16latent.safetensors"));
  auto ref = reference("case-e-txt2img-bf16latent.safetensors");
  const std::string latent = (dir_ / "latent.safetensors").string();
  Flags flags = case_e();
  flags.push_back({"--sampler-dtype", "bf16"});
  flags.push_back({"--save-latent", latent});
  const Outcome r = generate(flags);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  // bf16 resolution (tests/pipeline CaseEBf16): one bf16 ulp is 2⁻⁸ relative, a flipped rounding one ulp.
  expect_close("firstn0.output.latent", io::SafetensorsFile::open(latent)->get("latent").to_f32(),
               ref->get("firstn0.output.latent").to_f32(), Tolerance{1e-2});
}

TEST_F(CliReference, NoShiftRunsTheLinearReferenceSchedule) {
  // flow's unshifted schedule does not depend on the image size: 28 steps at 64×64 follow case b's
  // s28_n4096_noshift exactly.
  CHROMA_REQUIRE_FILE(reference_path("case-b-schedule.safetensors"));
  auto ref = reference("case-b-schedule.safetensors");
  const std::string dump = (dir_ / "dump").string();
  Flags flags = case_e();
  flags.push_back({"--no-shift", ""});
  flags.push_back({"--dump", dump});
  flags.push_back({"--steps", "28"});
  const Outcome r = generate(flags);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const Tensor ts = io::SafetensorsFile::open(dump + "/dump.safetensors")->get("output.timesteps").to_f32();
  EXPECT_EQ(ts.to_vector(), ref->get("output.schedule.s28_n4096_noshift").to_f32().to_vector());
}

// ---------------------------------------------------------------------------------------------------
// generate: flags checked before any work

TEST_F(CliGenerate, SeedMinusOneIsRandomAndOutOfRangeIsRefused) {
  const Outcome r = generate({{"--seed", "-1"}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(r.err.find("seed 18446744073709551615"), std::string::npos) << "-1 became 2^64 − 1: " << r.err;
  const io::TextChunks text = io::read_image(out_).text;
  auto it = std::find_if(text.begin(), text.end(), [](const auto& t) { return t.first == "chroma.cpp"; });
  ASSERT_NE(it, text.end());
  const json seed = json::parse(it->second).at("seed");
  ASSERT_TRUE(seed.is_number_unsigned()) << seed;
  EXPECT_NE(r.err.find("seed " + seed.dump()), std::string::npos) << "the random seed was not printed: " << r.err;
  expect_rejected({{"--seed", "18446744073709551616"}}, {"--seed", "18446744073709551616"});
  expect_rejected({{"--seed", "-2"}}, {"--seed", "-2"});
}

TEST_F(CliGenerate, TooManyThreadsNamesThreads) {
  expect_rejected({{"--threads", "10000"}}, {"--threads 10000", "per core"});
}

TEST_F(CliGenerate, InvalidUtf8PromptIsRefusedBeforeAnyWork) {
  expect_rejected({{"-p", "a fox \xff\xfe"}}, {"prompt", "UTF-8"});
  expect_rejected({{"-n", "blurry \xc3"}}, {"negative_prompt", "UTF-8"});
}

TEST_F(CliCompare, NanThresholdIsRefused) {
  const Outcome r = run({"compare", a_, b_, "--threshold", "nan"});
  expect_one_line_error(r, {"--threshold"});
}

// ---------------------------------------------------------------------------------------------------
// generate: img2img and inpainting at the command line

TEST_F(CliGenerate, Img2ImgRunsAndBadImagesAreRefused) {
  // A valid run first: the init image is the mini run's own output.
  ASSERT_EQ(generate({}).exit_code, 0);
  const std::string init = (dir_ / "init.png").string(), mask = (dir_ / "mask.png").string();
  fs::rename(out_, init);
  io::Image m = io::read_image(init);
  std::fill(m.rgb.begin(), m.rgb.end(), uint8_t(255));
  io::write_image(mask, m, io::ImageFormat::Png);
  const Outcome ok = generate({{"-i", init}, {"--strength", "0.5"}, {"--mask", mask}});
  ASSERT_EQ(ok.exit_code, 0) << describe(ok);
  const json params = pipeline::read_metadata(io::read_image(out_), out_);
  EXPECT_EQ(params.at("init_image"), init);
  EXPECT_EQ(params.at("strength"), 0.5);

  const std::string bytes = read_file(init);
  write_file(dir_ / "huge.png", png_with_size(bytes, 50000, 50000));
  write_file(dir_ / "zero.png", png_with_size(bytes, 0, 0));
  write_file(dir_ / "cut.png", bytes.substr(0, bytes.size() / 2));
  write_file(dir_ / "text.png", "not an image");
  io::Image small = m;
  small.width = small.height = 32;
  small.rgb.resize(32 * 32 * 3);
  io::write_image((dir_ / "small.png").string(), small, io::ImageFormat::Png);
  const std::string huge = (dir_ / "huge.png").string(), zero = (dir_ / "zero.png").string();
  expect_rejected({{"-i", huge}}, {huge, "50000×50000"});
  expect_rejected({{"-i", zero}}, {zero});
  expect_rejected({{"-i", (dir_ / "cut.png").string()}}, {"cut.png", "not a readable PNG"});
  expect_rejected({{"-i", (dir_ / "text.png").string()}}, {"text.png", "not a PNG"});
  expect_rejected({{"-i", (dir_ / "none.png").string()}}, {"none.png", "cannot open"});
  expect_rejected({{"-i", init}, {"--mask", (dir_ / "small.png").string()}}, {"32×32", "same size"});
  expect_rejected({{"-i", init}, {"--mask", huge}}, {huge, "50000×50000"});
  expect_rejected({{"--mask", mask}}, {"--mask", "init image"});
  expect_rejected({{"-i", init}, {"--strength", "1.5"}}, {"--strength", "1.5", "0 to 1"});
  expect_rejected({{"-i", init}, {"--strength", "-0.1"}}, {"--strength", "-0.1"});
}

// ---------------------------------------------------------------------------------------------------
// generate: batches, output names and formats, --from-png, info IMG

TEST_F(CliGenerate, BatchWritesEachImageAndTheGrid) {
  const std::string pattern = (dir_ / "fox_%02d.png").string();
  const Outcome r = generate({{"-o", pattern}, {"-b", "2"}, {"--grid", ""}, {"--seed", "42"}});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  const io::Image one = io::read_image((dir_ / "fox_01.png").string()), two = io::read_image((dir_ / "fox_02.png").string());
  EXPECT_EQ(pipeline::read_metadata(one, "1").at("seed"), 42);
  EXPECT_EQ(pipeline::read_metadata(two, "2").at("seed"), 43);
  const io::Image grid = io::read_image((dir_ / "fox_grid.png").string());
  EXPECT_EQ(grid.width, 128);
  EXPECT_EQ(grid.height, 64);
  for (int y = 0; y < 64; ++y)  // the right half of the sheet is image 2, pixel for pixel
    EXPECT_TRUE(std::equal(two.rgb.begin() + y * 64 * 3, two.rgb.begin() + (y + 1) * 64 * 3,
                           grid.rgb.begin() + (y * 128 + 64) * 3)) << "row " << y;
  // The A1111 text other tools read.
  EXPECT_NE(two.text.at(0).second.find("Steps: 2, Sampler: Euler, CFG scale: 4, Seed: 43, Size: 64x64"),
            std::string::npos) << two.text.at(0).second;
  expect_no_temp_files(dir_);
}

TEST_F(CliGenerate, FromPngMakesTheSameFileAgain) {
  ASSERT_EQ(generate({{"--seed", "7"}, {"--steps", "3"}, {"--cfg", "3.5"}}).exit_code, 0);
  const std::string again = (dir_ / "again.png").string();
  const Outcome r = run({"generate", "--dit", reference_abs("chroma-mini.safetensors"), "--t5",
                         reference_abs("t5-mini.safetensors"), "--vae", reference_abs("ae-mini.safetensors"),
                         "--tokenizer", spiece_path(), "--from-png", out_, "-o", again});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(read_file(again), read_file(out_)) << "--from-png must reproduce the file byte for byte";
  // A flag given with --from-png overrides what the metadata says.
  const Outcome other = generate({{"--from-png", out_}, {"--seed", "8"}, {"-o", again}, {"-p", kDrop}});
  ASSERT_EQ(other.exit_code, 0) << describe(other);
  EXPECT_EQ(pipeline::read_metadata(io::read_image(again), again).at("seed"), 8);
  EXPECT_EQ(pipeline::read_metadata(io::read_image(again), again).at("cfg"), 3.5);
}

TEST_F(CliGenerate, FromPngWithoutMetadataIsRefused) {
  const std::string plain = (dir_ / "plain.png").string();
  io::write_image(plain, {2, 2, std::vector<uint8_t>(12, 9), {}}, io::ImageFormat::Png);
  expect_rejected({{"--from-png", plain}, {"-p", kDrop}}, {plain, "no chroma.cpp"});
  expect_rejected({{"--from-png", (dir_ / "none.png").string()}, {"-p", kDrop}}, {"none.png"});
}

TEST_F(CliGenerate, OutputFormatsAndBadNames) {
  const std::string jpg = (dir_ / "fox.jpg").string(), webp = (dir_ / "fox.img").string();
  ASSERT_EQ(generate({{"-o", jpg}}).exit_code, 0);
  EXPECT_EQ(read_file(jpg).substr(0, 3), "\xff\xd8\xff");
  EXPECT_EQ(pipeline::read_metadata(io::read_image(jpg), jpg).at("seed"), 42) << "metadata in the JPEG comment";
  ASSERT_EQ(generate({{"-o", webp}, {"--output-format", "webp"}}).exit_code, 0);
  EXPECT_EQ(read_file(webp).substr(8, 4), "WEBP");
  expect_rejected({{"--output-format", "gif"}}, {"gif"});
  expect_rejected({{"-o", (dir_ / "a_%s.png").string()}}, {"%d"});
  expect_rejected({{"-b", "0"}}, {"--batch-count", "0"});
}

TEST_F(CliGenerate, OutputThatIsAnInputIsRefused) {
  ASSERT_EQ(generate({}).exit_code, 0);
  const std::string init = (dir_ / "init.png").string();
  fs::rename(out_, init);
  const std::string before = read_file(init);
  expect_one_line_error(generate({{"-i", init}, {"-o", init}}), {init, "input"});
  // The same file under another name (a hard link) is refused too (as a multiply-linked target).
  const std::string link = (dir_ / "link.png").string();
  fs::create_hard_link(init, link);
  expect_one_line_error(generate({{"-i", init}, {"-o", link}}), {link});
  expect_one_line_error(generate({{"-o", reference_abs("ae-mini.safetensors")}}), {"ae-mini.safetensors"});
  EXPECT_EQ(read_file(init), before);
}

TEST_F(CliGenerate, InfoPrintsAnImagesMetadata) {
  ASSERT_EQ(generate({{"--seed", "5"}}).exit_code, 0);
  const Outcome r = run({"info", out_});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("Seed: 5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"seed\": 5"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace chroma::test

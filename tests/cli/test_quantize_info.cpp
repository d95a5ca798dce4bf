// `chromacpp quantize IN OUT --type T` and `chromacpp info FILE` on the reference mini checkpoints: what
// info reports about a quantized file (model, configuration, tensor types, parameters) is checked
// against the source safetensors header read here, and every bad input fails with one error line,
// leaving an existing OUT byte-identical and no temporary file behind.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <tuple>

#include "cli_fixture.h"
#include "testdata.h"

namespace chroma::test {
namespace {

using json = nlohmann::json;

// The safetensors header of a file, read directly (8-byte little-endian length, then JSON).
struct Header {
  json tensors;  // name → {dtype, shape, data_offsets}
  json config;   // the "config" metadata the reference checkpoints carry (HF / BFL configuration)
  int64_t parameters = 0;
};

Header read_header(const std::string& path) {
  const std::string bytes = read_file(path);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data(), 8);
  Header h;
  h.tensors = json::parse(bytes.substr(8, len));
  h.config = json::parse(h.tensors["__metadata__"]["config"].get<std::string>());
  h.tensors.erase("__metadata__");
  for (const auto& [name, t] : h.tensors.items()) {
    int64_t n = 1;
    for (int64_t d : t["shape"]) n *= d;
    h.parameters += n;
  }
  return h;
}

// Matrices of the transformer blocks whose rows are whole blocks of `block` values: the ones
// `quantize` converts (io/quantize.h; the approximator, embeddings, final layer, norms and biases keep
// their bf16). `block_prefixes`: "double_blocks." / "single_blocks." for the DiT, "encoder.block." for T5.
int block_matrices(const Header& h, const std::vector<std::string>& block_prefixes, int64_t block) {
  int n = 0;
  for (const auto& [name, t] : h.tensors.items()) {
    const bool in_block = std::any_of(block_prefixes.begin(), block_prefixes.end(),
                                      [&](const std::string& p) { return name.starts_with(p); });
    const bool embedding = name.find("relative_attention_bias") != std::string::npos;
    n += in_block && !embedding && name.ends_with(".weight") && t["shape"].size() == 2 &&
         t["shape"][1].get<int64_t>() % block == 0;
  }
  return n;
}

// A line of `info`'s output starting with `key` (e.g. "model:"), or "".
std::string line_of(const std::string& out, const std::string& key) {
  for (const auto& l : split_lines(out))
    if (l.starts_with(key)) return l;
  return "";
}

// The tensor count info's type histogram gives `type` ("  Q8_0       20 tensors  …"), or −1.
int histogram_count(const std::string& out, const std::string& type) {
  for (const auto& l : split_lines(out)) {
    std::istringstream in(l);
    std::string word, unit;
    int n = -1;
    if (in >> word && word == type && in >> n >> unit && unit == "tensors") return n;
  }
  return -1;
}

// The exact parameter count info prints ("parameters: 5541184 (0.006 B) in …"), or −1.
int64_t parameters_of(const std::string& out) {
  std::smatch m;
  const std::string l = line_of(out, "parameters:");
  return std::regex_search(l, m, std::regex(R"(^parameters:\s+(\d+) )")) ? std::stoll(m[1].str()) : -1;
}

class CliQuantize : public Cli {
 protected:
  void SetUp() override {
    Cli::SetUp();
    dit_ = reference_abs("chroma-mini.safetensors");
    t5_ = reference_abs("t5-mini.safetensors");
    CHROMA_REQUIRE_FILE(dit_);
    CHROMA_REQUIRE_FILE(t5_);
    out_ = (dir_ / "out.gguf").string();
  }

  // quantize then info on the result; both must succeed.
  std::string quantize_and_info(const std::string& in, const std::string& type) {
    const Outcome q = run({"quantize", in, out_, "--type", type});
    EXPECT_EQ(q.exit_code, 0) << describe(q);
    EXPECT_NE(q.err.find("wrote " + out_), std::string::npos) << q.err;
    const Outcome i = run({"info", out_});
    EXPECT_EQ(i.exit_code, 0) << describe(i);
    EXPECT_NE(line_of(i.out, "file:").find("GGUF"), std::string::npos) << i.out;
    expect_no_temp_files(dir_);
    return i.out;
  }

  // A quantize that must fail: one error line naming `mentions`, an existing OUT left as it was and
  // no temporary file in its folder.
  void expect_rejected(const std::vector<std::string>& args, const std::vector<std::string>& mentions,
                       const std::string& out) {
    std::vector<std::string> argv = {"quantize"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::string command;
    for (const auto& a : argv) command += a + " ";
    SCOPED_TRACE(command);
    const std::string previous = "an earlier file that a failed quantize must not touch\n";
    const bool out_is_file = !fs::is_directory(out) && fs::is_directory(fs::path(out).parent_path());
    if (out_is_file) write_file(out, previous);
    expect_one_line_error(run(argv), mentions);
    if (out_is_file) {
      EXPECT_EQ(read_file(out), previous) << "the existing output file was modified";
    }
    expect_no_temp_files(dir_);
  }

  std::string dit_, t5_, out_;
};

// ---------------------------------------------------------------------------------------------------
// quantize → info

class CliQuantizeDit : public CliQuantize, public ::testing::WithParamInterface<const char*> {};

TEST_P(CliQuantizeDit, InfoReportsModelConfigTypesAndParameters) {
  const std::string type = GetParam(), type_upper = type == "q8_0" ? "Q8_0" : "Q4_K";
  const int64_t block = type == "q8_0" ? 32 : 256;  // values per ggml block
  const Header h = read_header(dit_);
  const std::string out = quantize_and_info(dit_, type);

  EXPECT_NE(line_of(out, "model:").find("Chroma DiT"), std::string::npos) << out;
  const std::string config = line_of(out, "config:");
  for (const std::string& want :
       {"hidden " + std::to_string(h.config["hidden_size"].get<int>()),
        "heads " + std::to_string(h.config["num_heads"].get<int>()),
        "double blocks " + std::to_string(h.config["depth"].get<int>()),
        "single blocks " + std::to_string(h.config["depth_single_blocks"].get<int>())})
    EXPECT_NE(config.find(want), std::string::npos) << "'" << want << "' not in: " << config;

  // The block matrices in the block type; everything else (approximator, img_in, txt_in, final_layer,
  // norms, biases) in the checkpoint's bf16. chroma-mini's K (256, 1024, 1280) are whole blocks.
  const int quantized = block_matrices(h, {"double_blocks.", "single_blocks."}, block);
  EXPECT_GT(quantized, 0);
  EXPECT_EQ(histogram_count(out, type_upper), quantized) << out;
  EXPECT_EQ(histogram_count(out, "BF16"), int(h.tensors.size()) - quantized) << out;
  EXPECT_EQ(parameters_of(out), h.parameters) << out;
  EXPECT_NE(out.find(R"(general.architecture = "flux")"), std::string::npos) << out;
}

INSTANTIATE_TEST_SUITE_P(Types, CliQuantizeDit, ::testing::Values("q8_0", "q4_k"));

TEST_F(CliQuantize, InfoOnTheSourceAgreesAndTheGgufLoadsBack) {
  const Header h = read_header(dit_);
  const Outcome src = run({"info", dit_});
  ASSERT_EQ(src.exit_code, 0) << describe(src);
  EXPECT_NE(line_of(src.out, "file:").find("safetensors"), std::string::npos) << src.out;
  EXPECT_EQ(parameters_of(src.out), h.parameters) << src.out;
  EXPECT_EQ(histogram_count(src.out, "BF16"), int(h.tensors.size())) << src.out;

  const std::string out = quantize_and_info(dit_, "q8_0");
  EXPECT_EQ(parameters_of(out), parameters_of(src.out));
  EXPECT_EQ(line_of(out, "config:"), line_of(src.out, "config:"));  // same shapes, same configuration

  // The engine runs from it: a 2-step generate of the mini models with the GGUF as --dit.
  const std::string png = (dir_ / "out.png").string();
  CHROMA_REQUIRE_FILE(reference_abs("ae-mini.safetensors"));
  CHROMA_REQUIRE_FILE(spiece_path());
  const Outcome g = run({"generate", "--dit", out_, "--t5", t5_, "--vae", reference_abs("ae-mini.safetensors"),
                         "--tokenizer", spiece_path(), "-p", "a photo of a cat", "-W", "64", "-H", "64", "--steps", "2",
                         "--seed", "1", "-o", png});
  EXPECT_EQ(g.exit_code, 0) << describe(g);
  EXPECT_TRUE(fs::exists(png));
}

TEST_F(CliQuantize, T5) {
  const Header h = read_header(t5_);
  for (const auto& [type, type_upper, block] :
       {std::tuple{"q8_0", "Q8_0", 32}, std::tuple{"q4_k", "Q4_K", 256}}) {
    SCOPED_TRACE(type);
    const std::string out = quantize_and_info(t5_, type);
    EXPECT_NE(line_of(out, "model:").find("T5 encoder"), std::string::npos) << out;
    const std::string config = line_of(out, "config:");
    for (const std::string& want : {"d_model " + std::to_string(h.config["d_model"].get<int>()),
                                    "d_ff " + std::to_string(h.config["d_ff"].get<int>()),
                                    "layers " + std::to_string(h.config["num_layers"].get<int>())})
      EXPECT_NE(config.find(want), std::string::npos) << "'" << want << "' not in: " << config;
    // Q8_0: all 14 attention and feed-forward matrices; Q4_K: only the 2 wo (K = d_ff = 256), the
    // rest (K = d_model = 128, half a block) stay bf16. shared and relative_attention_bias stay bf16.
    const int quantized = block_matrices(h, {"encoder.block."}, block);
    EXPECT_GT(quantized, 0);
    EXPECT_EQ(histogram_count(out, type_upper), quantized) << out;
    EXPECT_EQ(histogram_count(out, "BF16"), int(h.tensors.size()) - quantized) << out;
    EXPECT_EQ(parameters_of(out), h.parameters) << out;
    EXPECT_NE(out.find(R"(general.architecture = "t5encoder")"), std::string::npos) << out;
  }
}

// ---------------------------------------------------------------------------------------------------
// quantize: bad input

TEST_F(CliQuantize, UnknownOrMissingType) {
  expect_rejected({dit_, out_, "--type", "q3_x"}, {"q3_x", "q8_0", "q4_k"}, out_);
  expect_rejected({dit_, out_, "--type", ""}, {"--type"}, out_);
  expect_rejected({dit_, out_}, {"--type"}, out_);
  expect_rejected({dit_, "--type", "q8_0"}, {"out"}, out_);  // OUT missing
}

TEST_F(CliQuantize, MissingTruncatedOrCorruptInput) {
  const std::string missing = (dir_ / "absent.safetensors").string();
  expect_rejected({missing, out_, "--type", "q8_0"}, {missing}, out_);

  const std::string full = read_file(dit_), cut = (dir_ / "cut.safetensors").string();
  write_file(cut, full.substr(0, full.size() / 2));  // the offsets point past the end
  expect_rejected({cut, out_, "--type", "q8_0"}, {cut, "truncated"}, out_);
  write_file(cut, full.substr(0, 100));  // inside the header
  expect_rejected({cut, out_, "--type", "q8_0"}, {cut}, out_);
  write_file(cut, "");
  expect_rejected({cut, out_, "--type", "q8_0"}, {cut}, out_);

  const std::string bad = (dir_ / "bad.safetensors").string();
  std::mt19937 rng(99);
  std::string noise(4096, '\0');
  for (char& c : noise) c = char(rng());
  write_file(bad, noise);
  expect_rejected({bad, out_, "--type", "q8_0"}, {bad}, out_);

  // A GGUF written by quantize, cut short.
  const std::string gguf = (dir_ / "whole.gguf").string(), cut_gguf = (dir_ / "cut.gguf").string();
  ASSERT_EQ(run({"quantize", dit_, gguf, "--type", "q8_0"}).exit_code, 0);
  const std::string g = read_file(gguf);
  write_file(cut_gguf, g.substr(0, g.size() / 2));
  expect_rejected({cut_gguf, out_, "--type", "q4_k"}, {cut_gguf}, out_);
  write_file(cut_gguf, g.substr(0, 40));  // inside the metadata
  expect_rejected({cut_gguf, out_, "--type", "q4_k"}, {cut_gguf}, out_);
}

TEST_F(CliQuantize, InputThatIsNotADitOrT5) {
  const std::string vae = reference_abs("ae-mini.safetensors");
  CHROMA_REQUIRE_FILE(vae);
  expect_rejected({vae, out_, "--type", "q8_0"}, {vae, "Flux VAE"}, out_);
  const std::string other = (dir_ / "other.safetensors").string();
  write_file(other, [] {
    const std::string h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    const uint64_t len = h.size();
    return std::string(reinterpret_cast<const char*>(&len), 8) + h + std::string(8, '\0');
  }());
  expect_rejected({other, out_, "--type", "q8_0"}, {other, "unrecognised model"}, out_);
  const std::string text = (dir_ / "notes.txt").string();
  write_file(text, "not a weight file at all\n");
  expect_rejected({text, out_, "--type", "q8_0"}, {text}, out_);
}

TEST_F(CliQuantize, UnwritableOutput) {
  const std::string no_folder = (dir_ / "no-such-folder" / "out.gguf").string();
  expect_rejected({dit_, no_folder, "--type", "q8_0"}, {no_folder, "does not exist"}, no_folder);
  const std::string file = (dir_ / "a-file").string(), under_file = file + "/out.gguf";
  write_file(file, "x");
  expect_rejected({dit_, under_file, "--type", "q8_0"}, {under_file, "does not exist"}, under_file);
  expect_rejected({dit_, dir_.string(), "--type", "q8_0"}, {dir_.string(), "folder"}, dir_.string());
}

TEST_F(CliQuantize, ReadOnlyOutputFolder) {
  const fs::path ro = dir_ / "read-only";
  fs::create_directory(ro);
  const std::string out = (ro / "out.gguf").string(), previous = "existing file\n";
  write_file(out, previous);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  if (access(ro.c_str(), W_OK) == 0)  // root (or CAP_DAC_OVERRIDE) writes anyway
    GTEST_SKIP() << "running with write access to read-only folders (root?): cannot test a read-only output folder";
  expect_one_line_error(run({"quantize", dit_, out, "--type", "q8_0"}), {out, "not writable"});
  EXPECT_EQ(read_file(out), previous);
  expect_no_temp_files(ro);
}

TEST_F(CliQuantize, OutputIsTheInput) {
  const std::string copy = (dir_ / "copy.safetensors").string(), link = (dir_ / "link.safetensors").string();
  fs::copy_file(dit_, copy);
  fs::permissions(copy, fs::perms::owner_write, fs::perm_options::add);  // the reference is 0444: refused as read-only first
  fs::create_symlink(copy, link);
  const std::string before = read_file(copy);
  for (const std::string& out : {copy, std::string("./copy.safetensors"), link}) {
    SCOPED_TRACE(out);
    expect_one_line_error(run({"quantize", copy, out, "--type", "q8_0"}), {out, "input"});
    EXPECT_EQ(read_file(copy), before) << "the input was overwritten";
    EXPECT_TRUE(fs::is_symlink(link));
    expect_no_temp_files(dir_);
  }
}

// ---------------------------------------------------------------------------------------------------
// info: bad input

TEST_F(CliQuantize, InfoOnBadInput) {
  const std::string missing = (dir_ / "absent.gguf").string();
  expect_one_line_error(run({"info", missing}), {missing});
  const std::string text = (dir_ / "notes.txt").string();
  write_file(text, "not a weight file at all\n");
  expect_one_line_error(run({"info", text}), {text});
  const std::string full = read_file(dit_), cut = (dir_ / "cut.safetensors").string();
  write_file(cut, full.substr(0, full.size() / 2));
  expect_one_line_error(run({"info", cut}), {cut});
  expect_one_line_error(run({"info"}), {"file"});
}

}  // namespace
}  // namespace chroma::test

// safetensors reader/writer: real reference files, every validation rule, shards, atomic writes.
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "testdata.h"

namespace chroma::io {
namespace {
namespace fs = std::filesystem;

// A fresh temporary folder per test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("chroma-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

// Expects open() to throw a one-line chroma::Error mentioning every string in `needles`.
void expect_open_error(const std::string& path, std::initializer_list<std::string> needles) {
  try {
    SafetensorsFile::open(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

TEST(Safetensors, ReadsReferenceWeights) {
  const std::string path = test::reference_path("chroma-mini.safetensors");
  CHROMA_REQUIRE_FILE(path);
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->tensors().size(), 87u);  // README §1: 87 tensors
  const TensorView& w = f->get("img_in.weight");
  EXPECT_EQ(w.dtype, DType::BF16);
  EXPECT_EQ(shape_str(w.shape), "[256, 64]");
  EXPECT_TRUE(f->metadata().count("config"));
}

TEST(Safetensors, ReadsAllReferenceDtypes) {
  const std::string path = test::reference_path("case-g-rng.safetensors");
  CHROMA_REQUIRE_FILE(path);
  auto f = SafetensorsFile::open(path);
  const TensorView& sum = f->get("output.s42.1x16x128x128.sum");
  EXPECT_EQ(sum.dtype, DType::F64);
  const std::string e = test::reference_path("case-e-txt2img-fp32.safetensors");
  auto fe = SafetensorsFile::open(e);
  EXPECT_EQ(fe->get("firstn0.output.image_u8").dtype, DType::U8);
  auto ids = fe->get("input.pos_ids").to_i64();
  EXPECT_EQ(ids[0], 3);  // README case c: prompt ids start [3, 9, 1131, ...]
  EXPECT_EQ(ids[12], 1);
}

TEST(Safetensors, WriterRoundTripIsExact) {
  TempDir dir;
  Tensor a({2, 3}, {1, -2, 3.5f, 4, 5, 1e-30f});
  Tensor b({1}, {7});
  write_safetensors(dir.file("x.safetensors"), {{"a", &a}, {"b.c", &b}}, {{"k", "v"}});
  auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  EXPECT_EQ(f->get("a").to_f32().data, a.data);
  EXPECT_EQ(f->get("b.c").to_f32().data, b.data);
  EXPECT_EQ(f->metadata().at("k"), "v");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f->get("a").data) % 8, 0u);
}

TEST(Safetensors, RejectsMissingAndTinyFiles) {
  TempDir dir;
  expect_open_error(dir.file("nope.safetensors"), {"nope.safetensors", "cannot open"});
  std::ofstream(dir.file("tiny")) << "abc";
  expect_open_error(dir.file("tiny"), {"tiny", "shorter"});
  expect_open_error(dir.path.string(), {"not a regular file"});
}

TEST(Safetensors, RejectsHeaderLengthBeyondFile) {
  TempDir dir;
  std::ofstream out(dir.file("h"), std::ios::binary);
  uint64_t n = 1000;
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << "{}";
  out.close();
  expect_open_error(dir.file("h"), {"header length 1000"});
}

TEST(Safetensors, RejectsBadJson) {
  TempDir dir;
  write_raw(dir.file("j"), "{\"a\": [", "");
  expect_open_error(dir.file("j"), {"not valid JSON"});
  write_raw(dir.file("k"), "[1,2]", "");
  expect_open_error(dir.file("k"), {"not a JSON object"});
}

TEST(Safetensors, RejectsLyingEntries) {
  TempDir dir;
  const std::string data(16, '\0');
  write_raw(dir.file("dtype"), R"({"w":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", data);
  expect_open_error(dir.file("dtype"), {"'w'", "unsupported dtype"});
  write_raw(dir.file("size"), R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data);
  expect_open_error(dir.file("size"), {"'w'", "8 bytes stored", "needs 12"});
  write_raw(dir.file("beyond"), R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", data);
  expect_open_error(dir.file("beyond"), {"'w'", "outside", "truncated"});
  write_raw(dir.file("reversed"), R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", data);
  expect_open_error(dir.file("reversed"), {"'w'", "outside"});
  write_raw(dir.file("overlap"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            data);
  expect_open_error(dir.file("overlap"), {"'a'", "'b'", "overlap"});
  write_raw(dir.file("negshape"), R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", data);
  expect_open_error(dir.file("negshape"), {"'w'", "negative"});
  write_raw(dir.file("noshape"), R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", data);
  expect_open_error(dir.file("noshape"), {"'w'", "needs dtype, shape and data_offsets"});
}

TEST(Safetensors, RejectsTruncatedRealFile) {
  const std::string src = test::reference_path("t5-mini.safetensors");
  CHROMA_REQUIRE_FILE(src);
  TempDir dir;
  std::ifstream in(src, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir.file("t5.safetensors"), std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() / 2));
  expect_open_error(dir.file("t5.safetensors"), {"t5.safetensors", "truncated"});
}

TEST(WeightStore, ShardsViaIndexAndPrefixStripping) {
  TempDir dir;
  Tensor a({2}, {1, 2}), b({3}, {3, 4, 5});
  write_safetensors(dir.file("m-1.safetensors"), {{"model.diffusion_model.x.weight", &a}});
  write_safetensors(dir.file("m-2.safetensors"), {{"model.diffusion_model.y.weight", &b}});
  std::ofstream(dir.file("m.safetensors.index.json"))
      << R"({"metadata":{},"weight_map":{"model.diffusion_model.x.weight":"m-1.safetensors","model.diffusion_model.y.weight":"m-2.safetensors"}})";
  for (const std::string& p : {dir.file("m.safetensors.index.json"), dir.path.string()}) {
    WeightStore s = WeightStore::open(p);
    s.strip_prefix("model.diffusion_model.");
    EXPECT_EQ(s.require("y.weight", {3}).to_f32().data, b.data);
    EXPECT_THROW(s.require("y.weight", {4}), Error);
    EXPECT_THROW(s.require("z.weight"), Error);
  }
}

TEST(WeightStore, IndexNamingAMissingShardFails) {
  TempDir dir;
  std::ofstream(dir.file("m.safetensors.index.json")) << R"({"weight_map":{"x":"gone.safetensors"}})";
  EXPECT_THROW(WeightStore::open(dir.file("m.safetensors.index.json")), Error);
  std::ofstream(dir.file("bad.safetensors.index.json")) << R"({"weight_map":{"x":"../etc/passwd"}})";
  EXPECT_THROW(WeightStore::open(dir.file("bad.safetensors.index.json")), Error);
}

TEST(WeightStore, CountsIndexedBlocks) {
  const std::string path = test::reference_path("chroma-mini.safetensors");
  CHROMA_REQUIRE_FILE(path);
  WeightStore s = WeightStore::open(path);
  EXPECT_EQ(s.count_indexed("double_blocks."), 2);  // README §4: 2 double, 2 single blocks
  EXPECT_EQ(s.count_indexed("single_blocks."), 2);
  EXPECT_EQ(s.count_indexed("distilled_guidance_layer.layers."), 5);
}

TEST(AtomicFile, FailedWriteLeavesExistingFileUntouched) {
  TempDir dir;
  const std::string out = dir.file("keep.bin");
  std::ofstream(out) << "precious";
  EXPECT_THROW(write_atomically(out, [](const std::string& tmp) {
                 std::ofstream(tmp) << "half";
                 throw Error("simulated failure");
               }),
               Error);
  std::ifstream in(out);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "precious");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}), 1);  // no temp left
}

TEST(AtomicFile, UnwritableDestinationsAreNamed) {
  TempDir dir;
  EXPECT_THROW(check_writable(dir.file("missing/x.png")), Error);
  EXPECT_THROW(check_writable(dir.path.string()), Error);
  EXPECT_NO_THROW(check_writable(dir.file("ok.png")));
}

TEST(Dtypes, ConversionsAreExact) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);  // tie → even
  EXPECT_EQ(f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);  // tie → even (up)
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);                // e4m3fn max
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
}

}  // namespace
}  // namespace chroma::io

// safetensors reader/writer: real reference files, every validation rule, shards, atomic writes.
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "forked.h"
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
  EXPECT_EQ(f->get("a").to_f32().to_vector(), a.to_vector());
  EXPECT_EQ(f->get("b.c").to_f32().to_vector(), b.to_vector());
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
  expect_open_error(dir.file("reversed"), {"'w'", "reversed"});
  write_raw(dir.file("overlap"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            data);
  expect_open_error(dir.file("overlap"), {"'a'", "'b'", "overlap"});
  write_raw(dir.file("negshape"), R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", data);
  expect_open_error(dir.file("negshape"), {"'w'", "negative"});
  write_raw(dir.file("noshape"), R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", data);
  expect_open_error(dir.file("noshape"), {"'w'", "needs dtype, shape and data_offsets"});
}

// An empty tensor reads no bytes, so its offset need not be aligned (Chroma1-Radiance's "__x0__" flag,
// F32 [0], may follow bf16 data); a non-empty one must be.
TEST(Safetensors, EmptyTensorAtAnyOffset) {
  TempDir dir;
  write_raw(dir.file("flag"),
            R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"__x0__":{"dtype":"F32","shape":[0],"data_offsets":[2,2]}})",
            std::string(2, '\0'));
  const auto f = io::SafetensorsFile::open(dir.file("flag"));
  EXPECT_EQ(f->tensors().at("__x0__").nbytes, 0u);
  write_raw(dir.file("odd"),
            R"({"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
            std::string(6, '\0'));
  expect_open_error(dir.file("odd"), {"'b'", "misaligned"});
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
    EXPECT_EQ(s.require("y.weight", {3}).to_f32().to_vector(), b.to_vector());
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

// ---- hostile headers (issue 13): each case once crashed, hung or was silently accepted ----

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(Safetensors, DeepNestingIsRefusedBeforeParsing) {
  TempDir dir;
  const std::string data(4, '\0');
  // 100,000 levels overflowed the stack (nlohmann's parse, dump() and destructor recurse per level).
  write_raw(dir.file("shape"), R"({"w":{"dtype":"F32","shape":)" + nested(100000) + R"(,"data_offsets":[0,4]}})", data);
  expect_open_error(dir.file("shape"), {"shape", "nested deeper than 128"});
  write_raw(dir.file("meta"), R"({"__metadata__":{"k":)" + nested(100000) + "}}", "");
  expect_open_error(dir.file("meta"), {"meta", "nested deeper than 128"});
  write_raw(dir.file("objects"), std::string(200, '{') + std::string(200, '}'), "");
  expect_open_error(dir.file("objects"), {"nested deeper than 128"});
}

TEST(Safetensors, NestingWithinTheLimitAndBracketsInStringsAreFine) {
  TempDir dir;
  write_raw(dir.file("ok"), R"({"__metadata__":{"k":")" + std::string(1000, '[') + R"(","n":)" + nested(100) + "}}", "");
  auto f = SafetensorsFile::open(dir.file("ok"));
  EXPECT_EQ(f->metadata().at("k"), std::string(1000, '['));
  EXPECT_EQ(f->metadata().at("n"), nested(100));
}

TEST(Safetensors, ByteCountThatOverflowsIsRefused) {
  TempDir dir;
  // 2^62 F32 elements are 2^64 bytes: the product wrapped to 0 and matched offsets [0, 0].
  write_raw(dir.file("wrap"), R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", "");
  expect_open_error(dir.file("wrap"), {"'w'", "overflows"});
  write_raw(dir.file("wrap2"), R"({"w":{"dtype":"F64","shape":[4294967296,536870912],"data_offsets":[0,0]}})", "");
  expect_open_error(dir.file("wrap2"), {"'w'", "overflows"});
}

TEST(Safetensors, DuplicateKeysAreRefused) {
  TempDir dir;
  const std::string data(16, '\0');
  write_raw(dir.file("tensor"),
            R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
            data);
  expect_open_error(dir.file("tensor"), {"'w'", "twice"});
  write_raw(dir.file("meta"), R"({"__metadata__":{"k":"a","k":"b"}})", "");
  expect_open_error(dir.file("meta"), {"'k'", "twice"});
  write_raw(dir.file("field"), R"({"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", data.substr(8));
  expect_open_error(dir.file("field"), {"'dtype'", "twice"});
}

TEST(Safetensors, OffsetsMustTileTheDataSection) {
  TempDir dir;
  write_raw(dir.file("gap"),
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
            std::string(12, '\0'));
  expect_open_error(dir.file("gap"), {"'b'", "gap", "4"});
  write_raw(dir.file("leading"), R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0'));
  expect_open_error(dir.file("leading"), {"'a'", "gap"});
  write_raw(dir.file("trailing"), R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(16, '\0'));
  expect_open_error(dir.file("trailing"), {"8 bytes", "after the last tensor"});
  write_raw(dir.file("empty"), R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", std::string(4, '\0'));
  expect_open_error(dir.file("empty"), {"4 bytes", "after the last tensor"});
  // Zero-size tensors anywhere in the sequence are fine.
  write_raw(dir.file("ok"),
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            std::string(8, '\0'));
  EXPECT_EQ(SafetensorsFile::open(dir.file("ok"))->tensors().size(), 3u);
}

TEST(Safetensors, ReversedOffsetsAreNotCalledTruncation) {
  TempDir dir;
  write_raw(dir.file("reversed"), R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", std::string(8, '\0'));
  try {
    SafetensorsFile::open(dir.file("reversed"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reversed"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

// Every byte of the message is printable ASCII (or UTF-8 we wrote ourselves), and it is short.
void expect_printable_short(const std::string& msg) {
  EXPECT_LT(msg.size(), 600u) << msg.substr(0, 600);
  for (unsigned char c : msg) ASSERT_TRUE(c >= 0x20 && c != 0x7f) << "control byte " << int(c) << " in: " << msg.substr(0, 600);
  EXPECT_EQ(msg.find("\xff"), std::string::npos);
}

TEST(Safetensors, RawBytesInErrorsAreQuotedSafely) {
  TempDir dir;
  std::string junk = "{\"a\": \x1b[31m\x01\xff";
  junk += std::string(100000, '\x07');
  write_raw(dir.file("junk"), junk, "");
  try {
    SafetensorsFile::open(dir.file("junk"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
    expect_printable_short(e.what());
  }
  // A JSON-escaped control character in a name, and a huge name, come out escaped and cut.
  const std::string name = "a\\nb\\u001b" + std::string(100000, 'n');
  write_raw(dir.file("name"), "{\"" + name + R"(":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}})", std::string(4, '\0'));
  try {
    SafetensorsFile::open(dir.file("name"));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a\\nb\\x1b"), std::string::npos) << std::string(e.what()).substr(0, 300);
    expect_printable_short(e.what());
  }
}

TEST(Safetensors, NonRegularFilesAreRefusedWithoutBlocking) {
  TempDir dir;
  ASSERT_TRUE(test::make_fifo(dir.file("pipe.safetensors")));
  EXPECT_TRUE(test::throws_within(5, [&] { SafetensorsFile::open(dir.file("pipe.safetensors")); },
                                  {"pipe.safetensors", "not a regular file"}));
  EXPECT_TRUE(test::throws_within(5, [&] { WeightStore::open(dir.file("pipe.safetensors")); },
                                  {"pipe.safetensors", "not a regular file"}));
  EXPECT_TRUE(test::throws_within(5, [&] { WeightStore::open("/dev/zero"); }, {"/dev/zero", "not a regular file"}));
}

TEST(WeightStore, ShardIndexIsReadWithTheSameLimits) {
  TempDir dir;
  Tensor a({2}, {1, 2});
  write_safetensors(dir.file("m-1.safetensors"), {{"x", &a}});
  const std::string index = dir.file("m.safetensors.index.json");
  auto expect_index_error = [&](const std::string& text, std::initializer_list<std::string> needles) {
    std::ofstream(index, std::ios::trunc) << text;
    try {
      WeightStore::open(index);
      ADD_FAILURE() << "no error for " << text.substr(0, 80);
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << n << " not in: " << e.what();
      expect_printable_short(e.what());
    }
  };
  expect_index_error(R"({"weight_map":{"x":"m-1.safetensors"},"metadata":)" + nested(100000) + "}", {"nested deeper than 128"});
  expect_index_error(R"({"weight_map":{"x":"m-1.safetensors","x":"m-2.safetensors"}})", {"'x'", "twice"});
  expect_index_error("{\"weight_map\": \x01\x02\xfe" + std::string(100000, '\x1b'), {"not valid JSON"});
  fs::remove(index);
  ASSERT_TRUE(test::make_fifo(index));
  EXPECT_TRUE(test::throws_within(5, [&] { WeightStore::open(index); }, {"m.safetensors.index.json", "not a regular file"}));
  EXPECT_TRUE(test::throws_within(5, [&] { WeightStore::open(dir.path.string()); }, {"not a regular file"}));
  fs::remove(index);
  ASSERT_TRUE(test::make_fifo(dir.file("m-2.safetensors")));
  std::ofstream(index) << R"({"weight_map":{"x":"m-1.safetensors","y":"m-2.safetensors"}})";
  EXPECT_TRUE(test::throws_within(5, [&] { WeightStore::open(index); }, {"m-2.safetensors", "not a regular file"}));
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

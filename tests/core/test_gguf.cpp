// GGUF: our writer read back by our reader (names, shapes, types, metadata, data), hand-built files
// checking ggml's reversed dimension order, every way a file can lie (each a one-line error naming
// the file and tensor), and the llama.cpp T5 names seen through WeightStore as HF names.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "tensor/quant.h"
#include "forked.h"

namespace chroma::io {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("chroma_test_gguf_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}

// ---- a hand-built GGUF: header, metadata, tensor infos, padding, data ----

struct RawTensor {
  std::string name;
  std::vector<uint64_t> ne;  // innermost first, as stored
  uint32_t type = 0;         // ggml_type
  uint64_t offset = 0;
};

struct RawFile {
  char magic[4] = {'G', 'G', 'U', 'F'};
  uint32_t version = 3;
  std::vector<std::pair<std::string, uint32_t>> u32_kvs;  // key, value (type U32)
  std::vector<RawTensor> tensors;
  uint64_t data_bytes = 0;  // zero bytes appended after the aligned header
  int64_t tensor_count = -1, kv_count = -1;  // override the counts (lies)

  std::string bytes() const {
    std::string b;
    auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
    auto str = [&](const std::string& s) {
      put(uint64_t(s.size()));
      b += s;
    };
    b.append(magic, 4);
    put(version);
    put(uint64_t(tensor_count >= 0 ? uint64_t(tensor_count) : tensors.size()));
    put(uint64_t(kv_count >= 0 ? uint64_t(kv_count) : u32_kvs.size()));
    for (const auto& [k, v] : u32_kvs) {
      str(k);
      put(uint32_t(4));
      put(v);
    }
    for (const auto& t : tensors) {
      str(t.name);
      put(uint32_t(t.ne.size()));
      for (uint64_t n : t.ne) put(n);
      put(t.type);
      put(t.offset);
    }
    b.append((32 - b.size() % 32) % 32, '\0');
    b.append(size_t(data_bytes), '\0');
    return b;
  }
};

// A valid file: F32 "w" stored with ne = [4, 3] (PyTorch [3, 4]) and Q8_0 "q" with ne = [32, 2].
RawFile valid_file() {
  RawFile f;
  f.u32_kvs = {{"general.alignment", 32}};
  f.tensors = {{"w", {4, 3}, 0, 0}, {"q", {32, 2}, 8, 64}};
  f.data_bytes = 64 + 2 * 34;
  return f;
}

// Opening must throw a one-line chroma::Error containing every one of `needles`.
void expect_rejected(const RawFile& f, const std::string& file, std::vector<std::string> needles) {
  const std::string path = temp_path(file);
  write_bytes(path, f.bytes());
  try {
    GgufFile::open(path);
    ADD_FAILURE() << file << ": opened without error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    needles.push_back(path);
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << file << ": '" << n << "' not in: " << msg;
  }
}

TEST(GgufRead, HandBuiltFileReversesDimensions) {
  const std::string path = temp_path("valid.gguf");
  write_bytes(path, valid_file().bytes());
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->tensors().at("w").shape, (Shape{3, 4}));  // ne [4, 3]: rows of 4
  EXPECT_EQ(f->tensors().at("w").nbytes, 48u);
  EXPECT_EQ(f->tensors().at("q").shape, (Shape{2, 32}));
  EXPECT_EQ(f->tensors().at("q").dtype, DType::Q8_0);
  EXPECT_EQ(f->tensors().at("q").nbytes, 68u);
  EXPECT_EQ(f->order(), (std::vector<std::string>{"w", "q"}));
  EXPECT_EQ(f->find_metadata("general.alignment")->integer, 32);
  EXPECT_EQ(static_cast<const char*>(f->tensors().at("q").data) - static_cast<const char*>(f->tensors().at("w").data), 64);
}

TEST(GgufRead, EveryTruncationIsAnErrorNotACrash) {
  const std::string full = valid_file().bytes();
  const std::string path = temp_path("truncated.gguf");
  for (size_t n = 0; n < full.size(); ++n) {
    write_bytes(path, full.substr(0, n));
    EXPECT_THROW(GgufFile::open(path), Error) << "truncated to " << n << " bytes";
  }
}

TEST(GgufRead, RejectsLies) {
  RawFile f = valid_file();
  std::memcpy(f.magic, "GGUG", 4);
  expect_rejected(f, "magic.gguf", {"not a GGUF file"});

  f = valid_file();
  f.version = 4;
  expect_rejected(f, "version.gguf", {"version 4"});

  f = valid_file();
  f.tensors[1].offset = 4096;
  expect_rejected(f, "offset.gguf", {"'q'", "outside the file"});

  f = valid_file();
  f.tensors[1].offset = 48;  // inside the file but not a multiple of 32
  expect_rejected(f, "misaligned.gguf", {"'q'", "alignment"});

  f = valid_file();
  f.tensors[1].offset = 32;  // aligned, but inside "w" (48 bytes from 0)
  expect_rejected(f, "overlap.gguf", {"'w'", "'q'", "overlap"});

  f = valid_file();
  f.tensors[1].type = 99;
  expect_rejected(f, "unknown-type.gguf", {"'q'", "unsupported ggml type 99"});

  f = valid_file();
  f.tensors[1].type = 10;  // Q2_K: a real ggml type we do not decode
  expect_rejected(f, "q2k.gguf", {"'q'", "unsupported ggml type 10"});

  f = valid_file();
  f.tensors[1].ne = {33, 2};
  expect_rejected(f, "partial-block.gguf", {"'q'", "33", "Q8_0"});

  f = valid_file();
  f.tensors[1].name = "w";
  expect_rejected(f, "duplicate.gguf", {"'w'", "twice"});

  f = valid_file();
  f.u32_kvs.push_back({"general.alignment", 32});
  expect_rejected(f, "duplicate-key.gguf", {"general.alignment", "twice"});

  f = valid_file();
  f.u32_kvs = {{"general.alignment", 24}};
  expect_rejected(f, "alignment.gguf", {"general.alignment", "power of two"});

  f = valid_file();
  f.tensors[0].ne = {4, 3, 1, 1, 1};
  expect_rejected(f, "dims.gguf", {"'w'", "5 dimensions"});

  f = valid_file();
  f.tensors[0].ne = {4, 0};
  expect_rejected(f, "zero-dim.gguf", {"'w'", "dimension 0"});

  f = valid_file();
  f.tensors[0].ne = {uint64_t(1) << 40, uint64_t(1) << 40};
  expect_rejected(f, "overflow.gguf", {"'w'", "overflow"});

  f = valid_file();
  f.tensor_count = int64_t(1) << 40;
  expect_rejected(f, "count.gguf", {"tensors, more than the file can hold"});

  f = valid_file();
  f.tensors[0].name = std::string(5, 'x');
  f.data_bytes = 0;  // the data section is empty: both tensors lie outside
  expect_rejected(f, "no-data.gguf", {"'xxxxx'", "outside the file"});
}

TEST(GgufRead, HugeStringLengthIsCaught) {
  RawFile f = valid_file();
  std::string b = f.bytes();
  const uint64_t huge = uint64_t(1) << 50;
  std::memcpy(&b[24], &huge, 8);  // the first key's length
  const std::string path = temp_path("string.gguf");
  write_bytes(path, b);
  try {
    GgufFile::open(path);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata key 0"), std::string::npos) << e.what();
  }
}

// ---- hostile files (issue 13) ----

// A GGUF holding one metadata array of `n` u8 under a key of `key_bytes` bytes, and no tensors.
std::string long_key_array_file(size_t key_bytes, uint64_t n) {
  std::string b = "GGUF";
  auto put = [&](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
  put(uint32_t(3));
  put(uint64_t(0));  // tensors
  put(uint64_t(1));  // key-value pairs
  put(uint64_t(key_bytes));
  b.append(key_bytes, 'k');
  put(uint32_t(9));  // ARRAY
  put(uint32_t(0));  // of U8
  put(n);
  b.append(size_t(n), '\1');
  return b;
}

TEST(GgufRead, ReadingTimeIsLinearInTheFileSize) {
  // 1 MB of key and 1 M elements: the error label (key included) was rebuilt per element, ~10^12
  // bytes copied (hours). Linear reading takes milliseconds, even under the sanitizers.
  const std::string path = temp_path("long-key.gguf");
  write_bytes(path, long_key_array_file(1 << 20, 1 << 20));
  const test::ChildEnd end = test::run_forked(10, [&] {
    const auto f = GgufFile::open(path);
    return f->metadata().begin()->second.count == uint64_t(1) << 20;
  });
  EXPECT_TRUE(end.exited && end.exit_code == 0) << "signal " << end.signal << " (14: over 10 s)";
}

TEST(GgufRead, ByteCountThatOverflowsIsRefused) {
  // ne[0] = 2^62 F32: row bytes wrapped to 0 (accepted as 0 bytes) and then divided by.
  RawFile f = valid_file();
  f.tensors = {{"w", {uint64_t(1) << 62}, 0, 0}};
  expect_rejected(f, "wrap.gguf", {"'w'", "overflows"});
  f.tensors = {{"w", {uint64_t(1) << 62, 2}, 0, 0}};
  expect_rejected(f, "wrap-rows.gguf", {"'w'", "overflows"});
  f.tensors = {{"w", {uint64_t(1) << 61, 4}, 0, 0}};  // row bytes 2^63 fit; × 4 rows do not
  expect_rejected(f, "wrap-total.gguf", {"'w'", "overflows"});
}

TEST(GgufRead, EachOffsetMustFollowThePreviousTensor) {
  // "a" BF16 [2, 32] (128 bytes) at 0, then "b" F32 [4] at 128: valid.
  RawFile f;
  f.tensors = {{"a", {32, 2}, 30, 0}, {"b", {4}, 0, 128}};
  f.data_bytes = 128 + 16;
  const std::string path = temp_path("tiled.gguf");
  write_bytes(path, f.bytes());
  EXPECT_NO_THROW(GgufFile::open(path));

  RawFile relabelled = f;
  relabelled.tensors[0].type = 8;  // BF16 → Q8_0: 68 bytes, so "b" should start at 96, not 128
  expect_rejected(relabelled, "relabelled.gguf", {"'b'", "gap", "96"});

  RawFile last = f;
  last.tensors = {{"b", {4}, 0, 0}, {"a", {32, 2}, 8, 32}};  // the relabelled tensor is the last one
  last.data_bytes = 32 + 128;
  expect_rejected(last, "relabelled-last.gguf", {"after the last tensor"});

  RawFile reordered = f;
  reordered.tensors = {{"b", {4}, 0, 128}, {"a", {32, 2}, 30, 0}};  // in the file, but not in order
  expect_rejected(reordered, "reordered.gguf", {"'b'", "128", "expected 0"});
}

TEST(GgufRead, NonRegularFilesAreRefusedWithoutBlocking) {
  const std::string fifo = temp_path("pipe.gguf");
  fs::remove(fifo);
  ASSERT_TRUE(test::make_fifo(fifo));
  EXPECT_TRUE(test::throws_within(5, [&] { GgufFile::open(fifo); }, {"pipe.gguf", "not a regular file"}));
  EXPECT_TRUE(test::run_forked(5, [&] { return !is_gguf_file(fifo); }).exit_code == 0);
  EXPECT_TRUE(test::throws_within(5, [&] { GgufFile::open("/dev/zero"); }, {"/dev/zero", "not a regular file"}));
}

TEST(GgufRead, KeysAndStringsFromTheFileAreEscaped) {
  // A key with a newline and a truncated value: the one-line error quotes the key escaped and cut.
  std::string b = long_key_array_file(10, 100);
  std::memcpy(&b[32], "a\nb\x1b", 4);
  const std::string path = temp_path("escaped-key.gguf");
  write_bytes(path, b.substr(0, b.size() - 50));
  try {
    GgufFile::open(path);
    ADD_FAILURE();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(msg.find("a\\nb\\x1b"), std::string::npos) << msg;
  }
  EXPECT_EQ(GgufValue::str("red\x1b[31m\n\tok").to_string(), "\"red\\x1b[31m\\n\\tok\"");
}

// ---- our writer, read back ----

TEST(GgufWrite, ReadBackNamesShapesTypesMetadataAndData) {
  Tensor a({3, 4}), v({5}), big({2, 256});
  for (int64_t i = 0; i < a.numel(); ++i) a.values()[size_t(i)] = float(i) - 5.5f;
  for (int64_t i = 0; i < v.numel(); ++i) v.values()[size_t(i)] = 0.25f * float(i);
  for (int64_t i = 0; i < big.numel(); ++i) big.values()[size_t(i)] = std::sin(float(i));
  auto encode = [](const Tensor& t, DType d) {
    std::vector<uint8_t> bytes(size_t(t.numel() / t.shape.back()) * dtype_row_bytes(d, t.shape.back()));
    quant::traits(d)->quantize(t.ptr(), bytes.data(), t.numel());
    return bytes;
  };
  const auto bf16 = encode(big, DType::BF16), q8 = encode(big, DType::Q8_0), q4k = encode(big, DType::Q4_K);
  auto copy = [](const void* p, size_t n) { return [p, n](void* dst) { std::memcpy(dst, p, n); }; };
  const std::vector<GgufTensorOut> out = {
      {"a.weight", DType::F32, a.shape, copy(a.ptr(), 48)},
      {"v.bias", DType::F32, v.shape, copy(v.ptr(), 20)},
      {"blocks.0.bf16", DType::BF16, big.shape, copy(bf16.data(), bf16.size())},
      {"blocks.0.q8", DType::Q8_0, big.shape, copy(q8.data(), q8.size())},
      {"blocks.0.q4k", DType::Q4_K, big.shape, copy(q4k.data(), q4k.size())},
  };
  const std::string path = temp_path("written.gguf");
  write_gguf(path, {{"general.architecture", GgufValue::str("flux")}, {"general.file_type", GgufValue::u32(7)}}, out);

  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->architecture(), "flux");
  EXPECT_EQ(f->find_metadata("general.file_type")->integer, 7);
  EXPECT_EQ(f->find_metadata("general.file_type")->type, GgufType::U32);
  ASSERT_EQ(f->order().size(), out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_EQ(f->order()[i], out[i].name);
    const TensorView& t = f->tensors().at(out[i].name);
    EXPECT_EQ(t.shape, out[i].shape) << out[i].name;
    EXPECT_EQ(t.dtype, out[i].dtype) << out[i].name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << out[i].name;
  }
  EXPECT_EQ(f->tensors().at("a.weight").to_f32().to_vector(), a.to_vector());
  EXPECT_EQ(f->tensors().at("v.bias").to_f32().to_vector(), v.to_vector());
  EXPECT_EQ(std::memcmp(f->tensors().at("blocks.0.q4k").data, q4k.data(), q4k.size()), 0);
  EXPECT_EQ(std::memcmp(f->tensors().at("blocks.0.q8").data, q8.data(), q8.size()), 0);
  EXPECT_EQ(std::memcmp(f->tensors().at("blocks.0.bf16").data, bf16.data(), bf16.size()), 0);
}

TEST(GgufWrite, RejectsRowsThatAreNotWholeBlocks) {
  const std::string path = temp_path("bad-row.gguf");
  const std::vector<GgufTensorOut> out = {{"x.weight", DType::Q4_K, {2, 128}, [](void*) {}}};
  try {
    write_gguf(path, {}, out);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'x.weight'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
}

// ---- T5 names ----

TEST(GgufT5Names, LlamaCppNamesMapToHfAndBack) {
  const std::pair<const char*, const char*> pairs[] = {
      {"token_embd.weight", "shared.weight"},
      {"enc.output_norm.weight", "encoder.final_layer_norm.weight"},
      {"enc.blk.0.attn_q.weight", "encoder.block.0.layer.0.SelfAttention.q.weight"},
      {"enc.blk.3.attn_k.weight", "encoder.block.3.layer.0.SelfAttention.k.weight"},
      {"enc.blk.3.attn_v.weight", "encoder.block.3.layer.0.SelfAttention.v.weight"},
      {"enc.blk.23.attn_o.weight", "encoder.block.23.layer.0.SelfAttention.o.weight"},
      {"enc.blk.0.attn_rel_b.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"},
      {"enc.blk.1.attn_norm.weight", "encoder.block.1.layer.0.layer_norm.weight"},
      {"enc.blk.1.ffn_gate.weight", "encoder.block.1.layer.1.DenseReluDense.wi_0.weight"},
      {"enc.blk.1.ffn_up.weight", "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"},
      {"enc.blk.1.ffn_down.weight", "encoder.block.1.layer.1.DenseReluDense.wo.weight"},
      {"enc.blk.1.ffn_norm.weight", "encoder.block.1.layer.1.layer_norm.weight"},
  };
  for (const auto& [gguf, hf] : pairs) {
    EXPECT_EQ(t5_gguf_to_hf(gguf), hf);
    EXPECT_EQ(t5_hf_to_gguf(hf), gguf);
  }
  EXPECT_EQ(t5_gguf_to_hf("double_blocks.0.img_attn.qkv.weight"), "double_blocks.0.img_attn.qkv.weight");
  EXPECT_EQ(t5_gguf_to_hf("enc.blk.x.attn_q.weight"), "enc.blk.x.attn_q.weight");
}

// WeightStore recognises GGUF by its magic (here behind a .safetensors name) and shows HF names.
TEST(GgufT5Names, WeightStoreOpensAT5Gguf) {
  Tensor emb({8, 32}), q({32, 32}), norm({32});
  auto fill = [](const Tensor& t) { return [&t](void* dst) { std::memcpy(dst, t.ptr(), size_t(t.numel()) * 4); }; };
  const std::string path = temp_path("t5-named-oddly.safetensors");
  write_gguf(path, {{"general.architecture", GgufValue::str("t5encoder")}},
             {{"token_embd.weight", DType::F32, emb.shape, fill(emb)},
              {"enc.blk.0.attn_q.weight", DType::F32, q.shape, fill(q)},
              {"enc.output_norm.weight", DType::F32, norm.shape, fill(norm)}});
  const WeightStore s = WeightStore::open(path);
  EXPECT_EQ(s.require("shared.weight", {8, 32}).dtype, DType::F32);
  EXPECT_TRUE(s.has("encoder.block.0.layer.0.SelfAttention.q.weight"));
  EXPECT_TRUE(s.has("encoder.final_layer_norm.weight"));
  EXPECT_FALSE(s.has("token_embd.weight"));
}

}  // namespace
}  // namespace chroma::io

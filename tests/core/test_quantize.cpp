// quantize_model (io/quantize.h) refusing an output that is one of the files its input resolves to:
// the atomic rename would replace a shard, the shard index or the single file of an input folder.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/quantize.h"
#include "testdata.h"

namespace chroma::io {
namespace {
namespace fs = std::filesystem;

std::string contents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void expect_refused(const std::string& in, const std::string& out) {
  const std::string before = contents(out);
  try {
    quantize_model(in, out, DType::Q8_0);
    ADD_FAILURE() << "quantized " << in << " onto " << out;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(out), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("input"), std::string::npos) << e.what();
  }
  EXPECT_EQ(contents(out), before) << out << " was overwritten";
}

TEST(Quantize, RefusesToWriteOverAnyFileTheInputResolvesTo) {
  const std::string src = test::reference_path("t5-mini.safetensors");
  CHROMA_REQUIRE_FILE(src);
  const fs::path dir = test::temp_path("quantize-onto-input");
  fs::remove_all(dir);
  fs::create_directories(dir / "single");
  fs::copy_file(src, dir / "shard.safetensors");
  fs::copy_file(src, dir / "single" / "only.safetensors");
  std::string index = R"({"weight_map":{)";
  const auto source = SafetensorsFile::open(src);
  for (const auto& [name, v] : source->tensors())
    index += (index.back() == '{' ? "\"" : ",\"") + name + R"(":"shard.safetensors")";
  std::ofstream(dir / "t5.safetensors.index.json") << index << "}}";

  const std::string idx = (dir / "t5.safetensors.index.json").string();
  expect_refused(idx, (dir / "shard.safetensors").string());  // a shard named in the index
  expect_refused(idx, idx);                                   // the index itself
  expect_refused(dir.string(), (dir / "shard.safetensors").string());  // via the folder
  expect_refused((dir / "single").string(), (dir / "single" / "only.safetensors").string());
  EXPECT_NO_THROW(quantize_model(idx, (dir / "t5.gguf").string(), DType::Q8_0));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace chroma::io

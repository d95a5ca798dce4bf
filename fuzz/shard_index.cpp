// Fuzzes a `*.safetensors.index.json` shard index through WeightStore::open, in a folder holding
// two valid shards (written once per process).
#include <filesystem>

#include "common.h"
#include "io/safetensors.h"

using namespace chroma;

namespace {

const std::string& shard_folder() {
  static const std::string dir = [] {
    const std::string d = fuzz::scratch_dir() + "/shards";
    std::filesystem::create_directories(d);
    Tensor x({2}, {1, 2}), y({2, 2}, {1, 2, 3, 4});
    io::write_safetensors(d + "/a.safetensors", {{"x", &x}});
    io::write_safetensors(d + "/b.safetensors", {{"y.weight", &y}});
    return d;
  }();
  return dir;
}

void make_seeds(const std::string& dir) {
  fuzz::add_seed(dir, "valid", R"({"metadata":{"total_size":24},"weight_map":{"x":"a.safetensors","y.weight":"b.safetensors"}})");
  fuzz::add_seed(dir, "one-shard", R"({"weight_map":{"x":"a.safetensors"}})");
  // The tensor names of a reference checkpoint, all in one shard that lacks them (the error path).
  const std::string file = fuzz::testdata_dir() + "/reference/chroma-mini.safetensors";
  std::string index = R"({"metadata":{},"weight_map":{)";
  const auto reference = io::SafetensorsFile::open(file);
  for (const auto& [name, v] : reference->tensors())
    index += (index.back() == '{' ? "\"" : ",\"") + name + R"(":"a.safetensors")";
  fuzz::add_seed(dir, "reference-names", index + "}}");
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string index = shard_folder() + "/m.safetensors.index.json";
  fuzz::write_file(index, std::string(reinterpret_cast<const char*>(data), size));
  try {
    io::WeightStore::open(index);
  } catch (const Error&) {
  }
  return 0;
}

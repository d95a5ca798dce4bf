// Fuzzes a safetensors file through WeightStore::open: the header reader (io/safetensors.cpp,
// io/untrusted.cpp), format recognition and name translation (io/formats.cpp), and the widening of
// small tensors (fp8 scales, to_f32).
#include <cstring>
#include <filesystem>

#include "common.h"
#include "io/safetensors.h"

using namespace chroma;

namespace {

// Header (8-byte length + JSON) plus the first `data_bytes` of the data section.
std::string header_and(const std::string& file, size_t data_bytes) {
  uint64_t len = 0;
  if (file.size() < 8) return file;
  std::memcpy(&len, file.data(), 8);
  return fuzz::prefix(file, size_t(std::min<uint64_t>(len + 8, file.size())) + data_bytes);
}

void make_seeds(const std::string& dir) {
  for (const auto& e : std::filesystem::directory_iterator(fuzz::testdata_dir() + "/reference")) {
    if (e.path().extension() != ".safetensors") continue;
    const std::string bytes = fuzz::read_file(e.path().string()), name = e.path().stem().string();
    if (bytes.size() <= 64 << 10) fuzz::add_seed(dir, name, bytes);  // small files whole
    fuzz::add_seed(dir, name + ".header", header_and(bytes, 0));
    fuzz::add_seed(dir, name + ".header+256", header_and(bytes, 256));
  }
  // A complete file with fp8 and a per-tensor scale (the ComfyUI scaled-fp8 path).
  Tensor scale({1}, {0.5f});
  io::write_safetensors(fuzz::scratch_dir() + "/s", {{"a.scale_weight", &scale}});
  fuzz::add_seed(dir, "scaled", fuzz::read_file(fuzz::scratch_dir() + "/s"));
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("input.safetensors", data, size);
  try {
    const io::WeightStore store = io::WeightStore::open(path);
    for (const auto& [name, v] : store.tensors())
      if (v.nbytes <= (64u << 10) && v.dtype != DType::U8 && !dtype_is_quantized(v.dtype)) v.to_f32();
  } catch (const Error&) {
  }
  return 0;
}

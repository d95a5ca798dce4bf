// Fuzzes a GGUF file through WeightStore::open: the GGUF reader (io/gguf.cpp), the llama.cpp T5
// name mapping and format recognition, and dequantisation of small tensors.
#include <cstring>
#include <utility>

#include "common.h"
#include "io/gguf.h"
#include "io/quantize.h"
#include "io/safetensors.h"

using namespace chroma;

namespace {

void make_seeds(const std::string& dir) {
  // The reference minis converted by our quantizer (T5 names mapped to llama.cpp's, DiT names kept).
  const std::string ref = fuzz::testdata_dir() + "/reference/";
  for (const char* model : {"t5-mini", "chroma-mini"})
    for (const auto& [type, dtype] : {std::pair{"q8_0", DType::Q8_0}, std::pair{"q4_k", DType::Q4_K}}) {
      const std::string out = fuzz::scratch_dir() + "/seed.gguf";
      io::quantize_model(ref + model + ".safetensors", out, dtype);
      const std::string bytes = fuzz::read_file(out), name = std::string(model) + "." + type;
      fuzz::add_seed(dir, name + ".head4k", fuzz::prefix(bytes, 4096));
      fuzz::add_seed(dir, name + ".head32k", fuzz::prefix(bytes, 32 << 10));
    }
  // A small complete file: metadata of several types, tensors of plain and block types.
  std::vector<uint8_t> q8(34 * 2, 0), f32(16, 0);
  io::GgufValue arr;
  arr.type = io::GgufType::ARRAY;
  arr.element_type = io::GgufType::I32;
  arr.integers = {3, 32};
  const std::string small = fuzz::scratch_dir() + "/small.gguf";
  io::write_gguf(small, {{"general.architecture", io::GgufValue::str("flux")}, {"general.alignment", io::GgufValue::u32(32)},
                         {"comfy.gguf.orig_shape.q", arr}},
                 {{"q", DType::Q8_0, {2, 32}, [&](void* d) { std::memcpy(d, q8.data(), q8.size()); }},
                  {"enc.blk.0.attn_q.weight", DType::F32, {2, 2}, [&](void* d) { std::memcpy(d, f32.data(), f32.size()); }}});
  fuzz::add_seed(dir, "small", fuzz::read_file(small));
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("input.gguf", data, size);
  try {
    const io::WeightStore store = io::WeightStore::open(path);
    for (const auto& [name, v] : store.tensors())
      if (v.nbytes <= (64u << 10) && dtype_is_float(v.dtype)) v.to_f32();
    io::summarize(store);
  } catch (const Error&) {
  }
  return 0;
}

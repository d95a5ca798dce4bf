// t5-mini written as GGUF under llama.cpp's T5 names (io/quantize.h, the ComfyUI-GGUF T5 layout) and read
// back through WeightStore's name mapping: the BF16 file holds the checkpoint's values exactly and must
// reproduce reference case c ("prompt"); a Q8_0 file stays within a bound derived from its weight error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "io/gguf.h"
#include "io/quantize.h"
#include "models/t5/t5.h"
#include "testdata.h"

namespace chroma::t5 {
namespace {

double rel_rms_error(const Tensor& got, const Tensor& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < ref.values().size(); ++i) {
    e += double(got.values()[i] - ref.values()[i]) * (got.values()[i] - ref.values()[i]);
    r += double(ref.values()[i]) * ref.values()[i];
  }
  return std::sqrt(e / r);
}

TEST(T5Gguf, PromptThroughLlamaCppNames) {
  const std::string weights = test::reference_path("t5-mini.safetensors");
  const std::string cases = test::reference_path("case-c-t5.safetensors");
  CHROMA_REQUIRE_FILE(weights);
  CHROMA_REQUIRE_FILE(cases);
  const auto c = io::SafetensorsFile::open(cases);
  const std::vector<int64_t> ids64 = c->get("input.prompt.ids").to_i64(), mask = c->get("input.prompt.mask").to_i64();
  std::vector<int32_t> ids;
  for (size_t i = 0; i < ids64.size(); ++i)
    if (mask[i]) ids.push_back(int32_t(ids64[i]));
  const int64_t n = int64_t(ids.size());
  Tensor ref = c->get("output.prompt.hidden").to_f32();
  ref.reshape({ref.dim(1), ref.dim(2)});
  ref = ref.rows(0, n + 1);  // valid rows and the one padding row

  const io::WeightStore original = io::WeightStore::open(weights);
  for (const char* type : {"bf16", "q8_0"}) {
    const std::string path = (std::filesystem::temp_directory_path() /
                              ("t5-mini-" + std::string(type) + "-" + std::to_string(::getpid()) + ".gguf")).string();
    io::quantize_model(weights, path, io::parse_quantize_type(type));
    {
      const auto raw = io::GgufFile::open(path);  // stored under llama.cpp names
      EXPECT_EQ(raw->architecture(), "t5encoder");
      EXPECT_TRUE(raw->tensors().count("enc.blk.1.ffn_gate.weight"));
      EXPECT_TRUE(raw->tensors().count("token_embd.weight"));
      EXPECT_EQ(raw->tensors().at("token_embd.weight").dtype, DType::BF16);  // embeddings keep precision
    }
    const io::WeightStore store = io::WeightStore::open(path);
    double eps_w = 0;
    for (const auto& [name, v] : store.tensors())
      eps_w = std::max(eps_w, rel_rms_error(v.to_f32(), original.find(name)->to_f32()));
    const Tensor out = T5Encoder(store).encode(ids);
    const double rel = rel_rms_error(out, ref);
    std::printf("  %-5s weight rel RMS err %.3g, hidden rel RMS err %.3g\n", type, eps_w, rel);
    if (std::string(type) == "bf16") {
      EXPECT_EQ(eps_w, 0.0);
      test::expect_close("hidden via GGUF bf16", out, ref, test::kForwardTol);
    } else {
      // Each quantized product adds about ε_w relative error (rounding uncorrelated with the input). A
      // path through one layer crosses at most 4 (q, k or v then o; wi_0 or wi_1 then wo); 2 layers: 8.
      EXPECT_LE(rel, 8 * eps_w);
    }
    std::filesystem::remove(path);
  }
}

}  // namespace
}  // namespace chroma::t5

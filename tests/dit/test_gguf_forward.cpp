// chroma-mini converted to GGUF by `chromacpp quantize` (io/quantize.h) and run through the DiT forward of
// reference case d (testdata/reference/README.md "case d"): F32 and BF16 files hold the BF16 checkpoint's
// values exactly and must match like the safetensors file; Q8_0 and Q4_K files are checked against a
// bound derived from the measured weight error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "io/quantize.h"
#include "models/chroma/model.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::kForwardTol;
using test::reference_path;

Tensor drop_leading_ones(Tensor t) {
  Shape s = t.shape;
  while (s.size() > 2 && s[0] == 1) s.erase(s.begin());
  t.reshape(s);
  return t;
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return std::sqrt(s / double(std::max<size_t>(v.size(), 1)));
}

double rel_rms_error(const Tensor& got, const Tensor& ref) {
  std::vector<float> d(ref.values().size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = got.values()[i] - ref.values()[i];
  return rms(d) / rms(ref.to_vector());
}

class GgufForward : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    source_ = reference_path("chroma-mini.safetensors");
    cases_ = reference_path("case-d-dit-forward.safetensors");
    CHROMA_REQUIRE_FILE(source_);
    CHROMA_REQUIRE_FILE(cases_);
  }
  std::string source_, cases_;
};

TEST_P(GgufForward, CaseDVelocity) {
  const std::string type = GetParam();
  const std::string gguf = (std::filesystem::temp_directory_path() /
                            ("chroma-mini-" + type + "-" + std::to_string(::getpid()) + ".gguf")).string();
  const io::QuantizeReport report = io::quantize_model(source_, gguf, io::parse_quantize_type(type));
  EXPECT_EQ(report.kind, io::ModelKind::DiT);

  const io::WeightStore store = io::WeightStore::open(gguf);
  const io::WeightStore original = io::WeightStore::open(source_);
  const DType want = io::parse_quantize_type(type);
  // Block matrices stay quantized in memory; the approximator, embeddings and final layer keep BF16.
  EXPECT_EQ(store.find("double_blocks.0.img_attn.qkv.weight")->dtype, want);
  EXPECT_EQ(store.find("single_blocks.1.linear2.weight")->dtype, want);
  EXPECT_EQ(store.find("img_in.weight")->dtype, DType::BF16);
  EXPECT_EQ(store.find("txt_in.weight")->dtype, DType::BF16);
  EXPECT_EQ(store.find("distilled_guidance_layer.layers.0.in_layer.weight")->dtype, DType::BF16);
  EXPECT_EQ(store.find("final_layer.linear.weight")->dtype, DType::BF16);
  EXPECT_EQ(store.tensors().size(), original.tensors().size());

  // ε_w: the largest relative RMS error of any quantized matrix (0 for F32/BF16).
  double eps_w = 0;
  for (const auto& [name, v] : store.tensors())
    eps_w = std::max(eps_w, rel_rms_error(v.to_f32(), original.find(name)->to_f32()));

  const auto c = io::SafetensorsFile::open(cases_);
  int64_t n_valid = 0;
  for (int64_t m : c->get("input.txt_mask").to_i64()) n_valid += m;
  const Tensor txt = drop_leading_ones(c->get("input.txt").to_f32()).rows(0, n_valid + 1);
  const ChromaModel model(store);
  const float t = c->get("input.timestep").to_f32().values()[0];
  const Tensor velocity = model.forward(c->get("input.latent").to_f32(), txt, model.modulations(t));
  const Tensor ref = c->get("output.velocity").to_f32();
  const test::Diff d = test::diff(velocity, ref);
  const double rel = rel_rms_error(velocity, ref);
  std::printf("  %-5s %2d quantized / %2d kept, %7zu → %7zu bytes; weight rel RMS err %.3g; velocity max abs err "
              "%.3g (ref max %.3g), rel RMS err %.3g\n",
              type.c_str(), report.quantized, report.kept, report.bytes_in, report.bytes_out, eps_w, d.max_abs,
              d.ref_max, rel);
  if (want == DType::F32 || want == DType::BF16) {
    EXPECT_EQ(eps_w, 0.0);  // BF16 values are exact in both
    test::expect_close("velocity " + type, velocity, ref, kForwardTol);
  } else {
    // Quantization rounding errors are uncorrelated with the activations, so each quantized matrix
    // perturbs its product by about ε_w relative. On the path to the velocity there are at most 4
    // quantized products per block (qkv, proj, mlp.0, mlp.2 or linear1, linear2) and 4 blocks; adding
    // them up gives at most 16 ε_w.
    constexpr double kQuantizedMatricesOnPath = 16;
    EXPECT_GT(eps_w, 0.0);
    EXPECT_LE(rel, kQuantizedMatricesOnPath * eps_w) << type;
  }
  std::filesystem::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(Types, GgufForward, ::testing::Values("f32", "bf16", "q8_0", "q4_k"));

}  // namespace
}  // namespace chroma::dit

// End-to-end runs of reference case e (README §5) from the mini DiT and mini T5 converted to GGUF by
// the project's own writer (io/quantize.h, the code `chromacpp quantize` runs), with the original VAE
// and tokenizer. F32 and BF16 hold the bf16-stored weights exactly: the run must equal the original
// files' run and match the reference like test_txt2img. Q8_0 and Q4_K are lossy: the 8-bit image is
// held to a PSNR bound against the reference image.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

#include "checkpoint_conversion.h"
#include "image_metrics.h"
#include "io/quantize.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "emulated_run.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_CASE_E()                                                                                  \
  if (!test::mini_checkpoints_exist()) {                                                                  \
    CHROMA_REQUIRE_FILE(test::reference_path("chroma-mini.safetensors") + " (and t5-mini, ae-mini, spiece.model)"); \
  }                                                                                                       \
  CHROMA_REQUIRE_FILE(test::reference_path("case-e-txt2img-fp32.safetensors"))

// The original files' run, computed once per test program.
const GeneratedImage& original_run() {
  static const GeneratedImage r = test::generate_one(test::mini_models(), test::case_e_options());
  return r;
}

// The dtype the writer must give the tensor `name` of the original checkpoint when converting to
// `type`, derived from chroma-spec.md and the GGUF block sizes (not from io/quantize.cpp's rules):
// only 2-D ".weight" matrices of the transformer blocks are converted. Kept in their stored bf16:
//   - vectors (biases, RMSNorm/LayerNorm scales);
//   - DiT: the approximator (distilled_guidance_layer: its output modulates every block), img_in,
//     txt_in and final_layer (touch every token); T5: shared (token embedding) and
//     relative_attention_bias (embedding tables, not products);
//   - matrices whose rows are not whole blocks (K % 32 for Q8_0, K % 256 for Q4_K): ggml cannot store a
//     partial block, and the writer keeps them rather than padding. chroma-mini's block matrices have
//     K = 256, 1024 or 1280, all whole blocks; t5-mini (d_model 128, d_ff 256) under Q4_K keeps q, k,
//     v, o, wi_0 and wi_1 (K = 128) in bf16, so only wo (K = 256) is quantized there.
DType expected_dtype(const std::string& name, const TensorView& v, DType type) {
  static const char* const kKept[] = {"distilled_guidance_layer.", "img_in.", "txt_in.", "final_layer.", "shared.",
                                      "relative_attention_bias"};
  const bool kept_by_name =
      std::any_of(std::begin(kKept), std::end(kKept), [&](const char* k) { return name.find(k) != std::string::npos; });
  const bool whole_blocks = v.shape.size() == 2 && v.dim(1) % dtype_block_size(type) == 0;
  return v.shape.size() == 2 && name.ends_with(".weight") && !kept_by_name && whole_blocks ? type : v.dtype;
}

// Converts the mini DiT and T5 to `type` (once per type per program) and checks every tensor's dtype
// in the written files; returns the files with the original VAE and tokenizer.
ModelFiles gguf_models(const std::string& type) {
  static struct Converted {  // type → files; removed when the test program ends
    std::map<std::string, ModelFiles> by_type;
    ~Converted() {
      std::error_code ec;
      for (const auto& [type, f] : by_type) fs::remove(f.dit, ec), fs::remove(f.t5, ec);
    }
  } converted;
  if (auto it = converted.by_type.find(type); it != converted.by_type.end()) return it->second;
  ModelFiles files = test::mini_models();
  const DType dtype = io::parse_quantize_type(type);
  for (std::string* path : {&files.dit, &files.t5}) {
    const std::string source = *path;
    *path = test::temp_path(fs::path(source).stem().string() + "-" + type + ".gguf").string();
    const io::QuantizeReport report = io::quantize_model(source, *path, dtype);
    const io::WeightStore original = io::WeightStore::open(source), gguf = io::WeightStore::open(*path);
    EXPECT_EQ(gguf.format().kind, original.format().kind) << *path;
    EXPECT_EQ(gguf.tensors().size(), original.tensors().size()) << *path;
    int converted_here = 0;
    double err2 = 0, ref2 = 0;  // over the converted matrices: relative RMS weight error, for the record
    for (const auto& [name, v] : original.tensors()) {
      const TensorView* g = gguf.find(name);  // T5: read back from llama.cpp's names
      if (!g) {
        ADD_FAILURE() << *path << " lacks " << name;
        continue;
      }
      const DType want = expected_dtype(name, v, dtype);
      EXPECT_EQ(dtype_name(g->dtype), std::string(dtype_name(want))) << type << " " << name << " " << shape_str(v.shape);
      EXPECT_EQ(shape_str(g->shape), shape_str(v.shape)) << name;
      if (want == dtype && want != v.dtype) {
        ++converted_here;
        const Tensor a = g->to_f32(), b = v.to_f32();
        for (size_t i = 0; i < b.values().size(); ++i) {
          err2 += double(a.values()[i] - b.values()[i]) * (a.values()[i] - b.values()[i]);
          ref2 += double(b.values()[i]) * b.values()[i];
        }
      }
    }
    std::printf("  %-4s %-24s %2d tensors quantized, %2d kept; %8zu → %8zu bytes; weight rel RMS err %.2g\n",
                type.c_str(), fs::path(source).filename().c_str(), report.quantized, report.kept, report.bytes_in,
                report.bytes_out, ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0);
    // Not vacuous: each conversion changes some matrices (t5-mini under Q4_K: the 2 wo matrices).
    if (dtype != DType::BF16) {
      EXPECT_GT(converted_here, 0) << *path;
    }
  }
  return converted.by_type[type] = files;
}

class GgufLossless : public ::testing::TestWithParam<const char*> {};

// Lossless: the same values reach the kernels (F32 in place, BF16 widened to the same floats), so the
// run is bit-identical to the original files' run, and matches the reference with test_txt2img's
// tolerances.
TEST_P(GgufLossless, ReproducesTheReference) {
  REQUIRE_CASE_E();
  auto ref = io::SafetensorsFile::open(test::reference_path("case-e-txt2img-fp32.safetensors"));
  const GeneratedImage got = test::generate_one(gguf_models(GetParam()), test::case_e_options());
  EXPECT_EQ(got.latent.to_vector(), original_run().latent.to_vector()) << "GGUF " << GetParam() << " differs from the original files";
  EXPECT_EQ(got.image.to_vector(), original_run().image.to_vector()) << "GGUF " << GetParam() << " differs from the original files";
  test::expect_close("output.latent", got.latent, ref->get("firstn0.output.latent").to_f32(), test::kEndToEndTol);
  test::expect_close("output.image", got.image, ref->get("firstn0.output.image").to_f32(), test::kEndToEndTol);
  // 8-bit image: as test_txt2img, equal but for pixels on a quantisation boundary (≤ 0.5 % off by one).
  test::expect_rgb8_close(to_rgb8(got.image), ref->get("firstn0.output.image_u8"));
}

INSTANTIATE_TEST_SUITE_P(Types, GgufLossless, ::testing::Values("f32", "bf16"));

struct LossyCase {
  const char* type;
  Compute compute;
  double min_psnr;  // dB, 8-bit image vs the reference
};

class GgufLossy : public ::testing::TestWithParam<LossyCase> {};

TEST_P(GgufLossy, StaysCloseToTheReference) {
  REQUIRE_CASE_E();
  const LossyCase& c = GetParam();
  if (c.compute == Compute::Int8 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
    GTEST_SKIP() << "this CPU has no AVX2: int8 compute is refused here";
  auto ref = io::SafetensorsFile::open(test::reference_path("case-e-txt2img-fp32.safetensors"));
  const GeneratedImage got = test::generate_one(gguf_models(c.type), test::case_e_options(), nullptr, false, c.compute);
  const double psnr = test::psnr_u8(to_rgb8(got.image), ref->get("firstn0.output.image_u8"));
  std::printf("GGUF %s (DiT + T5), %s compute, case e: 8-bit PSNR %.2f dB vs the reference\n", c.type,
              compute_name(c.compute), psnr);
  EXPECT_GE(psnr, c.min_psnr) << c.type;
  if (c.compute == Compute::Int8) {
    const GeneratedImage f32 =
        test::generate_one(gguf_models(c.type), test::case_e_options(), nullptr, false, Compute::F32);
    EXPECT_NE(got.image.to_vector(), f32.image.to_vector()) << "the float32 image: the int8 products did not run";
  }
}

// The bounds. Each run prints the relative RMS error of the converted weights; the fp8 scaled run
// (test_model_files.cpp: ≈ 2 % on every matrix, DiT and T5) gives 29.9 dB against a 25 dB bound.
//   Q8_0: 8-bit codes with an f16 scale per 32 values: 0.54 % weight error on the 20 DiT block matrices
//         and the 14 T5 matrices; measured 48.2 dB. Bound 40 dB (RMS error ≈ 2.5 of 255 levels, not
//         visible), 8 dB below the measurement for float-order differences between machines, and far
//         above what a Q8_0 file that lost precision (Q4_K's 8 % → 29 dB) or a scale would give.
//   Q4_K: 4-bit codes, 6-bit sub-scales per 32, f16 scales per 256: 8 % weight error on the 20 DiT
//         block matrices and only the 2 T5 wo matrices (the others have K = 128, less than a block, and
//         stay bf16); measured 29.3 dB. Bound 25 dB as for fp8 (RMS error ≈ 14 levels: the same picture,
//         visibly noisier); a lost or misplaced scale makes the image unrelated (far below 15 dB).
//   int8 compute adds the inputs' rounding to 8-bit codes per 32 values: uniform error of ±d/2 with
//         d = max|x|/127, ≈ 0.23 % of the block's largest value RMS, ≈ 0.5 % of its RMS for bell-shaped
//         activations: as large as Q8_0's weight error, so the two add in quadrature (≈ −3 dB):
//         measured 44.3 dB for Q8_0, bound 40 dB as above; beside Q4_K's 8 % it is negligible
//         (measured 29.3 dB), bound 25 dB.
INSTANTIATE_TEST_SUITE_P(Types, GgufLossy,
                         ::testing::Values(LossyCase{"q8_0", Compute::F32, 40.0}, LossyCase{"q4_k", Compute::F32, 25.0},
                                           LossyCase{"q8_0", Compute::Int8, 40.0},
                                           LossyCase{"q4_k", Compute::Int8, 25.0}),
                         [](const auto& info) {
                           return std::string(info.param.type) + "_" + compute_name(info.param.compute);
                         });

// Compute::Auto runs the DiT's block-quantized weights in int8 but keeps the text encoder in float32
// (run_context.h Stage): its T5 features are bit-identical to --compute f32's, its image is not.
TEST(GgufAuto, TextEncoderKeepsFloat32) {
  REQUIRE_CASE_E();
  if (!(__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni")))
    GTEST_SKIP() << "this CPU has no AVX-512 VNNI: auto is f32 everywhere here";
  const GenerationRequest r = test::case_e_options();
  auto text_of = [&](Compute compute) {
    PipelineConfig config;
    config.files = gguf_models("q8_0");
    config.compute = compute;
    return Pipeline(config).encode_text(r.prompt, r.negative_prompt);
  };
  const TextConditioning f32 = text_of(Compute::F32), automatic = text_of(Compute::Auto), int8 = text_of(Compute::Int8);
  EXPECT_EQ(automatic.positive.to_vector(), f32.positive.to_vector());
  EXPECT_EQ(automatic.negative.to_vector(), f32.negative.to_vector());
  EXPECT_NE(int8.positive.to_vector(), f32.positive.to_vector()) << "--compute int8 must still run T5 in int8";
  const GeneratedImage image_auto = test::generate_one(gguf_models("q8_0"), r, nullptr, false, Compute::Auto);
  const GeneratedImage image_f32 = test::generate_one(gguf_models("q8_0"), r, nullptr, false, Compute::F32);
  EXPECT_NE(image_auto.latent.to_vector(), image_f32.latent.to_vector()) << "the DiT's int8 products did not run under auto";
}

// Device-neutral tensors (issue 11): the int8 products, and auto's float32 text encoder beside them,
// on a backend whose tensors the host cannot read give the CPU run bit for bit (emulated_run.h).
TEST(GgufDeviceNeutral, Int8AndAutoComputeOnAnOffHostBackend) {
  REQUIRE_CASE_E();
  PipelineConfig config;
  config.files = gguf_models("q8_0");
  for (Compute compute : {Compute::Int8, Compute::Auto}) {
    SCOPED_TRACE(compute_name(compute));
    config.compute = compute;
    test::expect_same_run(config, test::case_e_options());
  }
}

}  // namespace
}  // namespace chroma::pipeline

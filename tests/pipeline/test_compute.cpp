// Case e in bf16 compute (--compute bf16): every bf16 weight multiplies its input rounded to bf16,
// products summed in float32 (backend.h). The image must stay close to the reference's, by a bound
// derived from the error the rounding brings (below).
#include <gtest/gtest.h>

#include <cstdio>

#include "io/safetensors.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "image_metrics.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

// Rounding an input to bf16 (8 significant bits) changes it by at most 2⁻⁹ relative, 0.11 % RMS
// over uniform mantissas: a fifth of Q8_0's 0.54 % weight error, whose case-e image measures
// 48.2 dB (test_gguf_end_to_end.cpp). Bound 40 dB, as Q8_0's: nothing visible (RMS ≈ 2.5 of 255
// levels), with margin for summation order, and far above what a wrong product gives (< 15 dB).
constexpr double kMinPsnrBf16 = 40.0;

TEST(Bf16Compute, CaseEStaysCloseToTheReference) {
  const ModelFiles files = test::mini_models();
  for (const std::string& f : {files.dit, files.t5, files.vae, files.tokenizer}) CHROMA_REQUIRE_FILE(f);
  CHROMA_REQUIRE_FILE(test::reference_path("case-e-txt2img-fp32.safetensors"));
  try {
    check_compute_supported(Compute::Bf16);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what() << " (the bf16 products themselves are tested on every CPU in test_linear_bf16.cpp)";
  }
  auto ref = io::SafetensorsFile::open(test::reference_path("case-e-txt2img-fp32.safetensors"));
  PipelineConfig config;
  config.files = files;
  config.compute = Compute::Bf16;
  Pipeline pipeline(config);
  EXPECT_EQ(pipeline.compute(), Compute::Bf16);
  const GeneratedImage got = std::move(pipeline.generate(test::case_e_options()).images.at(0));
  const double psnr = test::psnr_u8(got.rgb, ref->get("firstn0.output.image_u8"));
  std::printf("bf16 compute, case e: 8-bit PSNR %.2f dB vs the reference\n", psnr);
  EXPECT_GE(psnr, kMinPsnrBf16);
  const GeneratedImage f32 = test::generate_one(files, test::case_e_options());
  EXPECT_NE(got.rgb, f32.rgb) << "the float32 image: the bf16 products did not run";
}

}  // namespace
}  // namespace chroma::pipeline

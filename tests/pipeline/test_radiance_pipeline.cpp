// Chroma1-Radiance through the Pipeline (docs/radiance.md §6): a mini Radiance checkpoint the test
// writes (radiance_checkpoint.h, 16-pixel patches like the real model) with the reference T5-mini and
// tokenizer, no VAE file: text to image with CFG and a negative prompt, img2img and inpainting on
// pixels, the pixel-space noise and the author's Radiance schedule.
#include <gtest/gtest.h>

#include <cmath>

#include "emulated_run.h"
#include "pipeline/output.h"
#include "pipeline/pipeline.h"
#include "radiance_checkpoint.h"
#include "sampling/rng.h"
#include "sampling/schedule.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

// The real model's patch and DCT sizes, a small head; width 128 = T5-mini's d_model.
test::MiniRadiance mini_options() {
  test::MiniRadiance o;
  o.conv_patch = 16;
  o.max_freqs = 8;
  o.context = 128;
  o.x0 = true;
  return o;
}

class RadiancePipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    CHROMA_REQUIRE_FILE(test::reference_path("t5-mini.safetensors"));
    CHROMA_REQUIRE_FILE(test::tokenizer_path("spiece.model"));
    files_.dit = test::write_radiance(test::mini_radiance_tensors(mini_options()), "radiance_pipeline.safetensors");
    files_.t5 = test::reference_path("t5-mini.safetensors");
    files_.tokenizer = test::tokenizer_path("spiece.model");  // no --vae: Radiance decodes its own pixels
  }
  GenerationRequest request() const {
    GenerationRequest r;
    r.prompt = "a red fox in the snow";
    r.negative_prompt = "blurry";
    r.width = 48;
    r.height = 32;
    r.steps = 2;
    r.cfg = 4.0f;
    r.seed = 7;
    return r;
  }
  ModelFiles files_;
};

void expect_finite_image(const GeneratedImage& img, int width, int height) {
  ASSERT_EQ(shape_str(img.image.shape), shape_str({1, 3, height, width}));
  for (float v : img.image.values()) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(img.rgb.size(), size_t(width) * size_t(height) * 3);
  EXPECT_EQ(img.width, width);
  EXPECT_EQ(img.height, height);
}

// Device-neutral tensors (issue 11): the pixel-space run on a backend whose tensors the host cannot
// read gives the CPU run's pixels bit for bit (emulated_run.h).
TEST_F(RadiancePipeline, RunsOnAnOffHostBackendAsOnTheCpu) {
  PipelineConfig config;
  config.files = files_;
  test::expect_same_run(config, request());
}

TEST_F(RadiancePipeline, TextToImageWithoutVae) {
  PipelineConfig config;
  config.files = files_;
  Pipeline pipeline(config);
  EXPECT_TRUE(pipeline.pixel_space());
  EXPECT_NE(pipeline.model_name().find("Chroma1-Radiance"), std::string::npos) << pipeline.model_name();
  const GenerationRequest r = request();
  EXPECT_EQ(shape_str(pipeline.state_shape(r)), shape_str({1, 3, 32, 48}));

  Dump dump(test::temp_path("radiance-dump").string());
  RunHooks hooks;
  hooks.dump = &dump;
  int previews = 0;
  hooks.progress = [&](const Progress& p) {  // the x0 estimate is an image: previewed as such
    if (p.denoised) {
      EXPECT_EQ(shape_str(p.denoised->shape), shape_str({1, 3, 32, 48}));
      const io::Image preview = preview_image(*p.denoised);
      EXPECT_EQ(preview.width, 48);
      EXPECT_EQ(preview.height, 32);
      ++previews;
    }
    return true;
  };
  const GenerationResult result = pipeline.generate(r, hooks);
  ASSERT_EQ(result.images.size(), 1u);
  const GeneratedImage& img = result.images[0];
  expect_finite_image(img, 48, 32);
  EXPECT_FALSE(img.parameters["models"].contains("vae"));
  EXPECT_EQ(previews, 2);

  // The noise is PyTorch's randn of the pixel shape [1, 3, H, W] for the seed, the image is the
  // final state (no decoder), and 8-bit values are trunc(127.5·(clamp(x) + 1)).
  auto got = io::SafetensorsFile::open(dump.write());
  EXPECT_EQ(got->get("input.noise").to_f32().to_vector(), sampling::torch_randn(7, {1, 3, 32, 48}).to_vector());
  EXPECT_EQ(img.image.to_vector(), img.latent.to_vector());
  for (size_t i = 0; i < img.rgb.size(); i += 97) {
    const int64_t pixel = int64_t(i / 3), c = int64_t(i % 3);
    const float x = std::fmin(1.0f, std::fmax(-1.0f, img.image.values()[size_t(c * 32 * 48 + pixel)]));
    EXPECT_EQ(img.rgb[i], uint8_t(127.5f * (x + 1.0f)));
  }
  // Both steps ran CFG with the negative prompt; the author's Radiance schedule (sequence length 3).
  EXPECT_TRUE(got->has("step.0.v_neg"));
  EXPECT_TRUE(got->has("step.1.v_neg"));
  const std::vector<float> ts = sampling::flow_schedule(2, 3, true);
  EXPECT_EQ(got->get("step.1.t").to_f32().values()[0], ts[1]);
  EXPECT_EQ(request_schedule(r, true), ts);
}

TEST_F(RadiancePipeline, ImageToImageAndInpaintingOnPixels) {
  PipelineConfig config;
  config.files = files_;
  Pipeline pipeline(config);
  GenerationRequest r = request();
  io::Image init;
  init.width = 48;
  init.height = 32;
  init.rgb.resize(48 * 32 * 3);
  for (size_t i = 0; i < init.rgb.size(); ++i) init.rgb[i] = uint8_t((i * 37) % 256);
  r.init_pixels = init;
  r.strength = 0.5f;
  expect_finite_image(pipeline.generate(r).images.at(0), 48, 32);

  io::Image mask = init;
  for (size_t i = 0; i < mask.rgb.size(); ++i) mask.rgb[i] = (i / 3) % 48 < 24 ? 255 : 0;  // repaint the left half
  r.mask_pixels = mask;
  r.mask_blur = 0;
  const GeneratedImage inpainted = pipeline.generate(r).images.at(0);
  expect_finite_image(inpainted, 48, 32);
  // The right half is pasted back exactly.
  for (size_t px = 0; px < 48 * 32; ++px) {
    if (px % 48 < 24) continue;
    for (int c = 0; c < 3; ++c) ASSERT_EQ(inpainted.rgb[px * 3 + c], init.rgb[px * 3 + c]) << px;
  }
}

TEST_F(RadiancePipeline, LatentModelStillNeedsTheVae) {
  CHROMA_REQUIRE_FILE(test::reference_path("chroma-mini.safetensors"));
  PipelineConfig config;
  config.files = files_;
  config.files.dit = test::reference_path("chroma-mini.safetensors");
  EXPECT_NE(test::error_of([&] { Pipeline p(config); }).find("--vae"), std::string::npos);
}

}  // namespace
}  // namespace chroma::pipeline

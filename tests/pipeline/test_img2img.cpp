// img2img and inpainting on the mini models (issue: strength 0 is the VAE round trip, strength 1 is
// text to image with the same noise, the start state is the flow's x_t = (1 − t)·x0 + t·ε, and the
// mask keeps unmasked pixels exactly); the fitting rule and mask helpers against exact math.
#include <cmath>

#include "io/safetensors.h"
#include "pipeline/image_input.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

namespace fs = std::filesystem;

// The reference run's 8-bit image (case e firstn0) as an io::Image: a real 64×64 picture to start from.
io::Image reference_image(const io::SafetensorsFile& ref) {
  const TensorView& u8 = ref.get("firstn0.output.image_u8");
  const auto* p = static_cast<const uint8_t*>(u8.data);
  io::Image img;
  img.width = img.height = 64;
  img.rgb.resize(64 * 64 * 3);
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 64 * 64; ++i) img.rgb[size_t(i * 3 + c)] = p[c * 64 * 64 + i];
  return img;
}

// A mask: white (repaint) in columns ≥ `from`, black elsewhere.
io::Image right_mask(int from, int w = 64, int h = 64) {
  io::Image m;
  m.width = w;
  m.height = h;
  m.rgb.resize(size_t(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) m.rgb[size_t((y * w + x) * 3 + c)] = x >= from ? 255 : 0;
  return m;
}

class Img2Img : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string ref = test::reference_path("case-e-txt2img-fp32.safetensors");
    CHROMA_REQUIRE_FILE(ref);
    CHROMA_REQUIRE_FILE(test::mini_models().vae);
    ref_ = io::SafetensorsFile::open(ref);
    PipelineConfig c;
    c.files = test::mini_models();
    pipeline_ = std::make_unique<Pipeline>(c);
    init_ = reference_image(*ref_);
  }
  GenerationRequest request(float strength) const {
    GenerationRequest r = test::case_e_options(0);
    r.init_pixels = init_;
    r.strength = strength;
    return r;
  }
  GeneratedImage run(const GenerationRequest& r, Dump* dump = nullptr) {
    RunHooks h;
    h.dump = dump;
    return std::move(pipeline_->generate(r, h).images.at(0));
  }
  std::unique_ptr<io::SafetensorsFile> ref_;
  std::unique_ptr<Pipeline> pipeline_;
  io::Image init_;
};

TEST_F(Img2Img, EncoderMatchesTheReferenceVae) {
  const std::string path = test::reference_path("case-f-vae.safetensors");
  CHROMA_REQUIRE_FILE(path);
  auto f = io::SafetensorsFile::open(path);
  test::expect_close("output.latent", pipeline_->encode_image(f->get("input.image").to_f32()),
                     f->get("output.latent").to_f32(), test::kForwardTol);
}

TEST_F(Img2Img, StrengthZeroIsTheVaeRoundTrip) {
  const GeneratedImage got = run(request(0.0f));
  const Tensor round_trip = pipeline_->decode(pipeline_->encode_image(image_to_tensor(init_)));
  EXPECT_EQ(got.image.to_vector(), round_trip.to_vector());
  EXPECT_EQ(got.rgb, to_rgb8(round_trip));
}

TEST_F(Img2Img, StrengthOneIsTextToImageWithTheSameNoise) {
  const GeneratedImage img2img = run(request(1.0f));
  const GeneratedImage txt2img = run(test::case_e_options(0));
  EXPECT_EQ(img2img.latent.to_vector(), txt2img.latent.to_vector());
  test::expect_rgb8_close(img2img.rgb, ref_->get("firstn0.output.image_u8"));
}

TEST_F(Img2Img, StartsMidScheduleFromTheNoisedImage) {
  // steps 4, strength 0.5: floor(2) steps run, from index 2 of the 4-step schedule.
  Dump dump(test::temp_path("img2img-dump").string());
  const GenerationRequest r = request(0.5f);
  run(r, &dump);
  auto d = io::SafetensorsFile::open(dump.write());
  EXPECT_FALSE(d->has("step.0.latent_in"));
  EXPECT_FALSE(d->has("step.1.latent_in"));
  ASSERT_TRUE(d->has("step.2.latent_in"));
  const float t = request_schedule(r)[2];
  EXPECT_EQ(t, ref_->get("firstn0.output.timesteps").to_f32().values()[2]);
  const Tensor x0 = d->get("input.init_latent").to_f32(), eps = d->get("input.noise").to_f32();
  Tensor want(x0.shape);
  for (size_t i = 0; i < want.values().size(); ++i) want.values()[i] = (1.0f - t) * x0.values()[i] + t * eps.values()[i];
  EXPECT_EQ(d->get("step.2.latent_in").to_f32().to_vector(), want.to_vector()) << "x_t = (1 − t)·x0 + t·ε, exactly";
}

TEST_F(Img2Img, MaskKeepsUnmaskedPixelsExactly) {
  for (int blur : {0, 4}) {
    GenerationRequest r = request(1.0f);
    r.mask_pixels = right_mask(32);
    r.mask_blur = blur;
    const GeneratedImage got = run(r);
    int64_t changed = 0;
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x)
        for (int c = 0; c < 3; ++c) {
          const size_t i = size_t((y * 64 + x) * 3 + c);
          // The Gaussian's radius is `blur` px: beyond it from the edge the mask is exactly 0.
          if (x < 32 - blur) ASSERT_EQ(got.rgb[i], init_.rgb[i]) << "blur " << blur << " x " << x << " y " << y;
          if (x >= 32 + blur) changed += got.rgb[i] != init_.rgb[i];
        }
    EXPECT_GT(changed, 0) << "the masked half was not repainted (blur " << blur << ")";
  }
  // An all-black mask repaints nothing.
  GenerationRequest r = request(1.0f);
  r.mask_pixels = right_mask(64);
  EXPECT_EQ(run(r).rgb, init_.rgb);
}

TEST_F(Img2Img, BadInputsAreRefusedBeforeAnyWork) {
  auto error_of = [&](const GenerationRequest& r) {
    try {
      pipeline_->generate(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  GenerationRequest r = request(0.5f);
  r.init_pixels = {};
  r.init_image = "/no/such/image.png";
  EXPECT_NE(error_of(r).find("/no/such/image.png"), std::string::npos);
  r = request(0.5f);
  r.mask_pixels = right_mask(10, 32, 32);
  EXPECT_NE(error_of(r).find("same size"), std::string::npos);
  r = test::case_e_options(0);
  r.mask = "m.png";
  EXPECT_NE(error_of(r).find("init image"), std::string::npos);
  r = request(1.5f);
  EXPECT_NE(error_of(r).find("strength"), std::string::npos);
}

// ---- image_input.h against exact math ----

TEST(FitImage, CoversThenCropsTheCentre) {
  // 4×2 → 2×2: scale max(2/4, 2/2) = 1 on height, 0.5 on width would not cover → scale 1, centre
  // columns 1..2 kept as they are (a 1:1 resample reproduces the pixels).
  io::Image img;
  img.width = 4;
  img.height = 2;
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 4; ++x)
      for (int c = 0; c < 3; ++c) img.rgb.push_back(uint8_t(10 * x + 100 * y + c));
  const io::Image out = fit_image(img, 2, 2);
  ASSERT_EQ(out.width * out.height, 4);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 2; ++x) EXPECT_EQ(out.rgb[size_t((y * 2 + x) * 3)], 10 * (x + 1) + 100 * y) << x << "," << y;
  // A 2× shrink of a 2-pixel period: the widened triangle (weights ¼ ¾ ¾ ¼ over 100, 200, 100, 200)
  // gives exactly the mean 150 away from the borders; a constant image stays constant everywhere.
  io::Image stripes, flat;
  stripes.width = flat.width = 8;
  stripes.height = flat.height = 8;
  for (int i = 0; i < 64; ++i)
    for (int c = 0; c < 3; ++c) {
      stripes.rgb.push_back(i % 2 ? 200 : 100);
      flat.rgb.push_back(77);
    }
  const io::Image half = fit_image(stripes, 4, 4);
  for (int y = 0; y < 4; ++y)
    for (int x = 1; x < 3; ++x) EXPECT_EQ(half.rgb[size_t((y * 4 + x) * 3)], 150) << x << "," << y;
  for (uint8_t v : fit_image(flat, 3, 5).rgb) EXPECT_EQ(v, 77);
}

TEST(MaskHelpers, LatentMaskAveragesBlocksAndPasteBackBlends) {
  Tensor m({16, 16});
  for (int64_t y = 0; y < 16; ++y)
    for (int64_t x = 0; x < 16; ++x) m.values()[size_t(y * 16 + x)] = x < 4 ? 1.0f : 0.0f;
  const Tensor lm = latent_mask(m);
  EXPECT_EQ(lm.to_vector(), (std::vector<float>{0.5f, 0.0f, 0.5f, 0.0f}));
  Tensor half({1, 2}, {0.5f, 0.0f});
  EXPECT_EQ(paste_back({200, 200, 200, 10, 10, 10}, {100, 100, 100, 50, 50, 50}, half),
            (std::vector<uint8_t>{150, 150, 150, 50, 50, 50}));
}

}  // namespace
}  // namespace chroma::pipeline

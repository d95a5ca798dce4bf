// Output names, contact sheet and metadata (pipeline/output.h) against exact expectations, and a
// batch run: image k is the run of seed + k − 1, bit for bit.
#include "io/safetensors.h"
#include "pipeline/output.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

using nlohmann::json;
using Paths = std::vector<std::string>;

using test::error_of;

TEST(OutputPaths, PatternsAndPlainNames) {
  EXPECT_EQ(output_paths("out.png", 1), (Paths{"out.png"}));
  EXPECT_EQ(output_paths("dir/out.png", 3), (Paths{"dir/out_1.png", "dir/out_2.png", "dir/out_3.png"}));
  EXPECT_EQ(output_paths("fox_%03d.png", 2), (Paths{"fox_001.png", "fox_002.png"}));
  EXPECT_EQ(output_paths("%d.jpg", 2), (Paths{"1.jpg", "2.jpg"}));
  EXPECT_EQ(output_paths("100%%_%2d.png", 1), (Paths{"100%_ 1.png"}));
  EXPECT_EQ(output_paths("100%%.png", 1), (Paths{"100%.png"}));
  EXPECT_EQ(grid_path("fox_%03d.png"), "fox_grid.png");
  EXPECT_EQ(grid_path("a/b.webp"), "a/b_grid.webp");
  EXPECT_NE(error_of([] { output_paths("a_%s.png", 1); }).find("%d"), std::string::npos);
  EXPECT_NE(error_of([] { output_paths("a_%d_%d.png", 2); }).find("more than one"), std::string::npos);
  EXPECT_NE(error_of([] { output_paths("a_%0d.png", 0); }), "");
}

TEST(ContactSheet, LaysImagesOutRowByRow) {
  // Three 1×1 images → 2 columns × 2 rows; the fourth cell stays black.
  std::vector<io::Image> imgs;
  for (uint8_t v : {10, 20, 30}) imgs.push_back({1, 1, {v, v, v}, {}});
  const io::Image s = contact_sheet(imgs);
  EXPECT_EQ(s.width, 2);
  EXPECT_EQ(s.height, 2);
  EXPECT_EQ(s.rgb, (std::vector<uint8_t>{10, 10, 10, 20, 20, 20, 30, 30, 30, 0, 0, 0}));
  imgs.push_back({2, 1, {1, 1, 1, 1, 1, 1}, {}});
  EXPECT_THROW(contact_sheet(imgs), Error);
}

TEST(Metadata, InfotextInA1111FormAndTheRequestBack) {
  GenerationRequest r;
  r.prompt = "a red fox";
  r.negative_prompt = "blurry";
  r.steps = 28;
  r.cfg = 4.5f;
  r.seed = 42;
  r.width = 1024;
  r.height = 768;
  json p = request_to_json(r);
  p["models"] = {{"dit", "Chroma1-HD.safetensors"}};
  EXPECT_EQ(infotext(p),
            "a red fox\nNegative prompt: blurry\nSteps: 28, Sampler: Euler, CFG scale: 4.5, Seed: 42, Size: 1024x768, "
            "Model: Chroma1-HD, Version: chroma.cpp");
  const io::Image img{1, 1, {0, 0, 0}, metadata_chunks(p)};
  EXPECT_EQ(request_to_json(request_from_metadata(read_metadata(img, "x.png"))), request_to_json(r));
  EXPECT_NE(error_of([] { read_metadata(io::Image{1, 1, {0, 0, 0}, {{"parameters", "a fox"}}}, "plain.png"); })
                .find("plain.png"),
            std::string::npos);
  EXPECT_NE(error_of([] { read_metadata(io::Image{1, 1, {0, 0, 0}, {{"chroma.cpp", "{oops"}}}, "bad.png"); })
                .find("bad.png"),
            std::string::npos);
}

TEST(Batch, ImageKIsTheRunOfSeedPlusK) {
  CHROMA_REQUIRE_FILE(test::reference_path("case-e-txt2img-fp32.safetensors"));
  CHROMA_REQUIRE_FILE(test::mini_models().dit);
  auto ref = io::SafetensorsFile::open(test::reference_path("case-e-txt2img-fp32.safetensors"));
  PipelineConfig c;
  c.files = test::mini_models();
  Pipeline pipeline(c);
  GenerationRequest r = test::case_e_options(0);
  r.batch_count = 2;
  std::vector<std::pair<int, int>> images;
  RunHooks h;
  h.progress = [&](const Progress& p) {
    if (p.phase == Progress::Phase::Denoising && p.step == p.steps) images.push_back({p.image, p.images});
    return true;
  };
  const GenerationResult batch = pipeline.generate(r, h);
  ASSERT_EQ(batch.images.size(), 2u);
  EXPECT_EQ(images, (std::vector<std::pair<int, int>>{{1, 2}, {2, 2}}));
  test::expect_rgb8_close(batch.images[0].rgb, ref->get("firstn0.output.image_u8"));
  GenerationRequest second = test::case_e_options(0);
  second.seed = 43;
  const GeneratedImage alone = std::move(pipeline.generate(second).images.at(0));
  EXPECT_EQ(batch.images[1].latent.to_vector(), alone.latent.to_vector());
  EXPECT_EQ(batch.images[1].parameters, alone.parameters) << "each image records what makes it alone";
  EXPECT_EQ(batch.images[1].parameters.at("seed"), 43);
  EXPECT_EQ(batch.images[1].parameters.at("batch_count"), 1);
}

}  // namespace
}  // namespace chroma::pipeline

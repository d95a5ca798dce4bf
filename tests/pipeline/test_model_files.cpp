// Finding model files by content (pipeline/model_files.h), and end-to-end runs of case e from the
// reference mini checkpoints rewritten in the diffusers layout and in ComfyUI's fp8 scaled format.
#include <cmath>
#include <cstdio>

#include "backend/ops.h"
#include "checkpoint_conversion.h"
#include "image_metrics.h"
#include "pipeline/model_files.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_MINI_CHECKPOINTS()                                                                   \
  if (!test::mini_checkpoints_exist())                                                                 \
  CHROMA_REQUIRE_FILE(test::reference_path("chroma-mini.safetensors") + " (and t5-mini, ae-mini, spiece.model)")

// The converted folders are written once per test program (they take a fraction of a second).
const fs::path& diffusers_dir() {
  static const fs::path dir = [] {
    fs::path d = test::temp_path("model-files-diffusers");
    fs::remove_all(d);
    test::write_diffusers_layout(d);
    return d;
  }();
  return dir;
}
const fs::path& fp8_dir() {
  static const fs::path dir = [] {
    fs::path d = test::temp_path("model-files-fp8");
    fs::remove_all(d);
    test::write_fp8_scaled_folder(d);
    return d;
  }();
  return dir;
}

TEST(ModelFiles, FindsTheDiffusersLayoutByContent) {
  REQUIRE_MINI_CHECKPOINTS();
  const ModelFiles f = find_model_files(diffusers_dir().string());
  EXPECT_EQ(f.dit, (diffusers_dir() / "transformer").string());
  EXPECT_EQ(f.t5, (diffusers_dir() / "text_encoder").string());
  EXPECT_EQ(f.vae, (diffusers_dir() / "vae").string());
  EXPECT_EQ(f.tokenizer, (diffusers_dir() / "tokenizer" / "spiece.model").string());
}

TEST(ModelFiles, FindsSingleFilesByContentNotName) {
  REQUIRE_MINI_CHECKPOINTS();
  // a/b/c.safetensors: the names say nothing, the tensor names say DiT / T5 / VAE.
  ModelFiles f;
  EXPECT_EQ(resolve_model_files(f, {fp8_dir().string()}), "");
  EXPECT_EQ(f.dit, (fp8_dir() / "a.safetensors").string());
  EXPECT_EQ(f.t5, (fp8_dir() / "b.safetensors").string());
  EXPECT_EQ(f.vae, (fp8_dir() / "c.safetensors").string());
  EXPECT_EQ(f.tokenizer, (fp8_dir() / "spiece.model").string());
  // Explicit paths win over the folder.
  ModelFiles g;
  g.vae = "/explicit/ae.safetensors";
  EXPECT_EQ(resolve_model_files(g, {fp8_dir().string()}), "");
  EXPECT_EQ(g.vae, "/explicit/ae.safetensors");
}

TEST(ModelFiles, MissingComponentIsNamedWithItsFlagAndSource) {
  REQUIRE_MINI_CHECKPOINTS();
  const fs::path dir = fs::path(::testing::TempDir()) / "model-files-no-vae";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* sub : {"transformer", "text_encoder", "tokenizer"})
    fs::copy(diffusers_dir() / sub, dir / sub, fs::copy_options::recursive);
  ModelFiles f;
  const std::string msg = resolve_model_files(f, {dir.string()});
  EXPECT_NE(msg.find(dir.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("--vae"), std::string::npos) << msg;
  EXPECT_NE(msg.find("FLUX.1-schnell"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("--dit"), std::string::npos) << msg;  // only what is missing
  EXPECT_EQ(msg.find("--tokenizer"), std::string::npos) << msg;
  EXPECT_EQ(f.dit, (dir / "transformer").string());
  fs::remove_all(dir);
}

TEST(ModelFiles, TwoCheckpointsOfOneKindAreAmbiguous) {
  REQUIRE_MINI_CHECKPOINTS();
  const fs::path dir = fs::path(::testing::TempDir()) / "model-files-two-dits";
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(test::reference_path("chroma-mini.safetensors"), dir / "one.safetensors");
  fs::copy_file(test::reference_path("chroma-mini.safetensors"), dir / "two.safetensors");
  try {
    find_model_files(dir.string());
    ADD_FAILURE() << "no error for two DiT files";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("one.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("two.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--dit"), std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

TEST(ModelFiles, ModelsFlagMustBeAFolder) {
  EXPECT_THROW(model_search_dirs("/nonexistent/models"), Error);
  EXPECT_EQ(model_search_dirs(::testing::TempDir()), std::vector<std::string>{::testing::TempDir()});
}

// The weight views the formats produce, through the backend: a joined view multiplies like the
// packed original, a scaled view like its dequantised float32 copy (both exact: same products).
TEST(FormatsInTheBackend, LinearOnJoinedAndScaledViews) {
  REQUIRE_MINI_CHECKPOINTS();
  const io::WeightStore diffusers = io::WeightStore::open((diffusers_dir() / "transformer").string());
  auto mini = io::SafetensorsFile::open(test::reference_path("chroma-mini.safetensors"));
  const TensorView& joined = diffusers.require("single_blocks.0.linear1.weight");
  ASSERT_TRUE(joined.parts);
  Tensor x({3, joined.dim(1)});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = std::sin(0.37f * float(i));
  const Tensor want = ops::linear(x, mini->get("single_blocks.0.linear1.weight"), mini->get("single_blocks.0.linear1.bias"));
  const Tensor got = ops::linear(x, joined, diffusers.require("single_blocks.0.linear1.bias"));
  EXPECT_EQ(got.to_vector(), want.to_vector());

  io::WeightStore fp8 = io::WeightStore::open((fp8_dir() / "a.safetensors").string());
  fp8.strip_prefix("model.diffusion_model.");
  const TensorView& w = fp8.require("txt_in.weight");
  ASSERT_EQ(w.dtype, DType::F8_E4M3);
  Tensor xt({2, w.dim(1)});
  for (int64_t i = 0; i < xt.numel(); ++i) xt.values()[size_t(i)] = std::cos(0.11f * float(i));
  const Tensor dequantised = w.to_f32();
  EXPECT_EQ(ops::linear(xt, w).to_vector(), ops::linear(xt, view_of(dequantised)).to_vector());
}

// Lossless layout: the same bytes reach the same kernels, so the run is bit-identical to the
// original files' run, and matches the reference with test_txt2img's tolerances.
TEST(EndToEnd, DiffusersLayoutReproducesTheReference) {
  REQUIRE_MINI_CHECKPOINTS();
  const std::string ref_path = test::reference_path("case-e-txt2img-fp32.safetensors");
  CHROMA_REQUIRE_FILE(ref_path);
  auto ref = io::SafetensorsFile::open(ref_path);
  ModelFiles files;
  ASSERT_EQ(resolve_model_files(files, model_search_dirs(diffusers_dir().string())), "");
  const GeneratedImage got = test::generate_one(files, test::case_e_options());
  const GeneratedImage orig = test::generate_one(test::mini_models(), test::case_e_options());
  EXPECT_EQ(got.latent.to_vector(), orig.latent.to_vector()) << "diffusers layout differs from the original files";
  EXPECT_EQ(got.image.to_vector(), orig.image.to_vector()) << "diffusers layout differs from the original files";
  test::expect_close("output.latent", got.latent, ref->get("firstn0.output.latent").to_f32(), test::kEndToEndTol);
  test::expect_close("output.image", got.image, ref->get("firstn0.output.image").to_f32(), test::kEndToEndTol);
  // 8-bit image: as test_txt2img, equal but for pixels on a quantisation boundary (≤ 0.5 % off by one).
  const std::vector<uint8_t> rgb = to_rgb8(got.image);
  test::expect_rgb8_close(rgb, ref->get("firstn0.output.image_u8"));
}

// fp8 is lossy: e4m3 keeps 3 mantissa bits, so each weight moves by up to 2⁻⁴ (6 %) of itself,
// ≈ 2 % RMS, and the error compounds through 2 T5 layers, 4 DiT blocks and 4 sampling steps with
// CFG 4 (which amplifies differences). Measured: 29.9 dB. The bound, 25 dB (RMS error ≈ 14 of 255
// levels: the same picture, visibly noisier), leaves room for float-order differences between
// machines, while a lost or doubled scale makes the weights wrong by orders of magnitude and the
// image unrelated (far below 15 dB) or non-finite (generate throws).
TEST(EndToEnd, Fp8ScaledStaysCloseToTheReference) {
  REQUIRE_MINI_CHECKPOINTS();
  const std::string ref_path = test::reference_path("case-e-txt2img-fp32.safetensors");
  CHROMA_REQUIRE_FILE(ref_path);
  constexpr double kMinFp8Psnr = 25.0;
  auto ref = io::SafetensorsFile::open(ref_path);
  ModelFiles files;
  ASSERT_EQ(resolve_model_files(files, model_search_dirs(fp8_dir().string())), "");
  const GeneratedImage got = test::generate_one(files, test::case_e_options());
  const double psnr = test::psnr_u8(to_rgb8(got.image), ref->get("firstn0.output.image_u8"));
  std::printf("fp8 scaled (DiT + T5) case e: 8-bit PSNR %.2f dB vs the reference\n", psnr);
  EXPECT_GE(psnr, kMinFp8Psnr);
}

}  // namespace
}  // namespace chroma::pipeline

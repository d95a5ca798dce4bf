// Device-neutral tensors (issue 11, first part): a tensor in memory the host may not read refuses host
// access and crosses only through to_host / to_memory; and whole runs on a backend whose tensors live
// there (emulated_device.h: the CPU's kernels on copies, so the same values) give the CPU run's
// latent and image bit for bit. Every place the models, the sampler or the pipeline read a tensor's
// values without going through an op or a transfer would throw here.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "emulated_device.h"
#include "emulated_run.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

TEST(DeviceNeutralTensor, OffHostMemoryIsReachedOnlyThroughTransfers) {
  test::OffHostMemory device;
  const Tensor host({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor t = to_memory(host, device);
  EXPECT_EQ(&t.memory(), &device);
  EXPECT_FALSE(t.on_host());
  EXPECT_EQ(device.from_host_bytes, 6 * sizeof(float));
  const std::string error = test::error_of([&] { (void)t.ptr(); });
  EXPECT_NE(error.find("emulated-device"), std::string::npos) << error;
  EXPECT_THROW((void)t.values(), Error);
  EXPECT_EQ(t.to_vector(), host.to_vector());
  EXPECT_EQ(to_host(t).to_vector(), host.to_vector());

  // Copies, row slices and row copies stay in the tensor's memory.
  const Tensor copy = t;
  EXPECT_EQ(&copy.memory(), &device);
  const Tensor second = t.rows(1, 2);
  EXPECT_EQ(&second.memory(), &device);
  EXPECT_EQ(second.to_vector(), (std::vector<float>{4, 5, 6}));
  Tensor zeros({2, 3}, device);
  zeros.copy_rows_from(t, 1, 0, 1);
  EXPECT_EQ(zeros.to_vector(), (std::vector<float>{4, 5, 6, 0, 0, 0}));
  EXPECT_THROW(zeros.copy_rows_from(host, 0, 0, 1), Error);  // another memory
  EXPECT_THROW(zeros.copy_rows_from(t, 1, 1, 2), Error);     // past the end

  // host_readable copies only what is not on the host.
  Tensor holder;
  EXPECT_EQ(&host_readable(host, holder), &host);
  EXPECT_EQ(host_readable(t, holder).to_vector(), host.to_vector());
  EXPECT_TRUE(holder.on_host());
}

TEST(DeviceNeutralTensor, OpsRefuseATensorFromAnotherMemory) {
  test::OffHostMemory device;
  test::EmulatedDeviceBackend backend(device);
  const BackendScope scope(backend, 1);
  const Tensor host({4}, {1, 2, 3, 4});
  const Tensor on_device = ops::to_backend(host);
  EXPECT_EQ(&on_device.memory(), &device);
  EXPECT_EQ(&ops::zeros({3}).memory(), &device);
  // a·x + b·y computed on the device, read back through to_vector
  EXPECT_EQ(ops::axpby(2.0f, on_device, -1.0f, on_device).to_vector(), (std::vector<float>{1, 2, 3, 4}));
  const std::string error = test::error_of([&] { ops::axpby(1.0f, on_device, 1.0f, host); });
  EXPECT_NE(error.find("axpby got a tensor [4] in host memory"), std::string::npos) << error;
}

class DeviceNeutralRun : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const std::string& f : {test::reference_path("chroma-mini.safetensors"), test::reference_path("t5-mini.safetensors"),
                                 test::reference_path("ae-mini.safetensors"), test::tokenizer_path("spiece.model")})
      CHROMA_REQUIRE_FILE(f);
    config_.files = test::mini_models();
  }
  PipelineConfig config_;
};

TEST_F(DeviceNeutralRun, TextToImageWithAndWithoutCfg) {
  test::expect_same_run(config_, test::case_e_options(0));
  test::expect_same_run(config_, test::case_e_options(1));  // the first step without the negative pass
}

// A NaN in the state stops the run with the phase named, on the host and off it (the check runs where
// the latent is: ops::all_finite).
TEST_F(DeviceNeutralRun, NonFiniteLatentIsRefusedByName) {
  Tensor noise({1, 16, 8, 8});
  noise.ptr()[5] = NAN;
  const std::string path = test::temp_path("nan-noise.safetensors").string();
  io::write_safetensors(path, {{"noise", &noise}});
  GenerationRequest r = test::case_e_options(0);
  r.init_noise = path;
  test::OffHostMemory device;
  PipelineConfig off_host = config_;
  off_host.backend = [&device](Compute compute) { return std::make_unique<test::EmulatedDeviceBackend>(device, compute); };
  for (const PipelineConfig* c : {&config_, &off_host}) {
    const std::string error = test::error_of([&] { Pipeline(*c).generate(r); });
    EXPECT_NE(error.find("denoising produced non-finite values"), std::string::npos) << error;
  }
}

TEST_F(DeviceNeutralRun, Bf16Compute) {
  try {
    check_compute_supported(Compute::Bf16);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  config_.compute = Compute::Bf16;  // oneDNN's bf16 products on the bf16 mini weights
  test::expect_same_run(config_, test::case_e_options(0));
}

TEST_F(DeviceNeutralRun, Bf16SamplerStepCacheAndPromptWeights) {
  GenerationRequest r = test::case_e_options(0);
  r.sampler_dtype = SamplerDtype::BF16;
  r.prompt = "a (red fox:1.4) sitting in fresh snow";  // weighted: the empty prompt is encoded too
  r.cache = "fbcache:5";  // a threshold large enough that steps are skipped (the cache's reductions run)
  test::expect_same_run(config_, r);
}

TEST_F(DeviceNeutralRun, InpaintingWithAncestralSamplerTiledVaeAndKeyMaskedPadding) {
  GenerationRequest r = test::case_e_options(0);
  r.width = 576;  // wider than one 512-pixel VAE tile: two tiles blended on the host
  io::Image init, mask;
  init.width = mask.width = r.width;
  init.height = mask.height = r.height;
  init.rgb.resize(size_t(r.width * r.height * 3));
  mask.rgb.resize(init.rgb.size());
  for (size_t i = 0; i < init.rgb.size(); ++i) init.rgb[i] = uint8_t((i * 37) % 251);
  for (size_t p = 0; p < size_t(r.width * r.height); ++p)
    for (size_t c = 0; c < 3; ++c) mask.rgb[p * 3 + c] = int(p % size_t(r.width)) >= r.width / 2 ? 255 : 0;  // repaint the right half
  r.init_pixels = init;
  r.mask_pixels = mask;
  r.strength = 0.75f;
  r.sampler = "dpm++sde";  // two evaluations and fresh noise each step
  r.vae_tiling = true;
  r.text_padding = "diffusers";  // T5's padding row as a key-masked query (computed on the host)
  test::expect_same_run(config_, r);
}

}  // namespace
}  // namespace chroma::pipeline

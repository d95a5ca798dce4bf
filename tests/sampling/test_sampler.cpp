// CFG and Euler arithmetic against the author's sampler: reference case e, both sampler-state
// precisions (testdata/reference/README.md §5 case e, §6.1). Starting from the stored network
// outputs, every step is reproduced bit for bit.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "exact.h"
#include "sampling/rng.h"
#include "sampling/sampler.h"
#include "sampling/schedule.h"
#include "tensor/error.h"
#include "testdata.h"

namespace chroma::sampling {
namespace {

constexpr int kSteps = 4;           // case e: 4 steps, cfg 4, 64×64 px → 16 image tokens
constexpr float kCfg = 4.0f;
constexpr int64_t kImageTokens = 16;

struct CaseFile {
  const char* file;
  SamplerPrecision precision;
};

class SamplerReference : public ::testing::TestWithParam<CaseFile> {
 protected:
  void SetUp() override {
    const std::string path = test::reference_path(GetParam().file);
    CHROMA_REQUIRE_FILE(path);
    file_ = io::SafetensorsFile::open(path);
  }
  Tensor get(const std::string& name) const { return file_->get(name).to_f32(); }
  std::unique_ptr<io::SafetensorsFile> file_;
};

TEST_P(SamplerReference, InitialLatentIsSeed42Noise) {
  const SamplerPrecision precision = GetParam().precision;
  const Tensor noise = get("input.noise");
  // input.noise is PyTorch CPU manual_seed(42) + randn on an AVX2 machine.
  test::expect_bitwise_equal("input.noise", torch_randn(42, {1, 16, 8, 8}), noise);
  for (const char* run : {"firstn0.", "firstn1."})
    test::expect_bitwise_equal(std::string(run) + "step.0.latent_in", round_state(noise, precision),
                               get(std::string(run) + "step.0.latent_in"));
  if (precision == SamplerPrecision::BF16)
    test::expect_bitwise_equal("input.noise_bf16", round_state(noise, precision), get("input.noise_bf16"));
}

TEST_P(SamplerReference, EveryStepBitForBit) {
  const SamplerPrecision precision = GetParam().precision;
  const std::vector<float> ts = flow_schedule(kSteps, kImageTokens, true);
  for (int first_n : {0, 1}) {
    const std::string run = "firstn" + std::to_string(first_n) + ".";
    SCOPED_TRACE(run);
    test::expect_bitwise_equal(run + "output.timesteps", ts, get(run + "output.timesteps"));

    Tensor latent = get(run + "step.0.latent_in");  // chained: our own latent feeds the next step
    for (int n = 0; n < kSteps; ++n) {
      const std::string step = run + "step." + std::to_string(n) + ".";
      // The timestep the model sees.
      EXPECT_EQ(round_state(ts[size_t(n)], precision), get(step + "t").to_vector().at(0)) << step;

      // Guidance: CFG exactly on the steps where the reference ran the negative pass.
      const Tensor v_pos = get(step + "v_pos");
      const bool cfg = uses_cfg(n, first_n, kCfg);
      ASSERT_EQ(cfg, file_->has(step + "v_neg")) << step;
      const Tensor v = cfg ? cfg_combine(v_pos, get(step + "v_neg"), kCfg, precision) : v_pos;
      test::expect_bitwise_equal(step + "v_cfg", v, get(step + "v_cfg"));

      // Euler step, both from the stored latent and along our own chain.
      const Tensor want = n + 1 < kSteps ? get(run + "step." + std::to_string(n + 1) + ".latent_in")
                                         : get(run + "output.latent");
      test::expect_bitwise_equal(step + "euler (stored input)",
                                 euler_step(get(step + "latent_in"), get(step + "v_cfg"), ts[size_t(n)],
                                            ts[size_t(n + 1)], precision),
                                 want);
      latent = euler_step(latent, v, ts[size_t(n)], ts[size_t(n + 1)], precision);
      test::expect_bitwise_equal(step + "euler (chained)", latent, want);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CaseE, SamplerReference,
                         ::testing::Values(CaseFile{"case-e-txt2img-fp32.safetensors", SamplerPrecision::F32},
                                           CaseFile{"case-e-txt2img-bf16latent.safetensors", SamplerPrecision::BF16}),
                         [](const auto& info) {
                           return std::string(info.param.precision == SamplerPrecision::F32 ? "Fp32" : "Bf16");
                         });

TEST(Sampler, UsesCfg) {
  EXPECT_TRUE(uses_cfg(0, 0, 4.0f));
  EXPECT_FALSE(uses_cfg(0, 1, 4.0f));  // first_n_steps_without_cfg = 1
  EXPECT_TRUE(uses_cfg(1, 1, 4.0f));
  EXPECT_FALSE(uses_cfg(5, 6, 4.0f));
  EXPECT_FALSE(uses_cfg(0, -1, 4.0f));  // −1: never CFG
  EXPECT_FALSE(uses_cfg(30, -1, 4.0f));
  EXPECT_FALSE(uses_cfg(3, 0, 1.0f));   // cfg 1 is the positive velocity
  EXPECT_TRUE(uses_cfg(3, 0, 0.5f));
}

TEST(Sampler, ExactArithmetic) {
  // Exactly representable operands: the results are exact in both precisions.
  const Tensor pos({4}, {1.0f, 2.0f, -3.0f, 0.5f}), neg({4}, {0.5f, 2.0f, 1.0f, -0.5f});
  for (SamplerPrecision p : {SamplerPrecision::F32, SamplerPrecision::BF16}) {
    EXPECT_EQ(cfg_combine(pos, neg, 3.0f, p).to_vector(), (std::vector<float>{2.0f, 2.0f, -11.0f, 2.5f}));
    EXPECT_EQ(cfg_combine(pos, neg, 1.0f, p).to_vector(), pos.to_vector());
    EXPECT_EQ(euler_step(pos, neg, 1.0f, 0.75f, p).to_vector(), (std::vector<float>{0.875f, 1.5f, -3.25f, 0.625f}));
  }
}

TEST(Sampler, Bf16RoundsEveryOperation) {
  // 1 + 2⁻⁹ is not a bf16 value (spacing 2⁻⁷ near 1): the latent rounds to 1 before the add, and
  // dt·v = 0.25·2⁻⁷ = 2⁻⁹ is lost again when the sum rounds to bf16.
  const Tensor latent({1}, {1.0f + 0x1p-9f}), v({1}, {-0x1p-7f});
  EXPECT_EQ(euler_step(latent, v, 1.0f, 0.75f, SamplerPrecision::F32).values()[0], 1.0f + 0x1p-9f + 0x1p-9f);
  EXPECT_EQ(euler_step(latent, v, 1.0f, 0.75f, SamplerPrecision::BF16).values()[0], 1.0f);
  // cfg 5.2 becomes bf16 5.1875 first.
  const Tensor one({1}, {1.0f}), zero({1}, {0.0f});
  EXPECT_EQ(cfg_combine(one, zero, 5.2f, SamplerPrecision::BF16).values()[0], 5.1875f);
  EXPECT_EQ(cfg_combine(one, zero, 5.2f, SamplerPrecision::F32).values()[0], 5.2f);
  EXPECT_EQ(round_state(0.826064348f, SamplerPrecision::BF16), 0.82421875f);  // README case e
  EXPECT_EQ(round_state(0.826064348f, SamplerPrecision::F32), 0.826064348f);
}

TEST(Sampler, RejectsShapeMismatch) {
  const Tensor a({1, 16, 8, 8}), b({1, 16, 8, 4});
  EXPECT_THROW(cfg_combine(a, b, 4.0f), Error);
  EXPECT_THROW(euler_step(a, b, 1.0f, 0.5f), Error);
}

}  // namespace
}  // namespace chroma::sampling

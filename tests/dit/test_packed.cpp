// The packed DiT pass (ChromaModel::forward_packed): two prompts on one latent in one pass must
// give each prompt's own velocity — against the separate single-prompt forwards on chroma-mini, and
// against the author's step-0 velocities of reference case e (testdata/reference/README.md §5).
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "models/chroma/model.h"
#include "tensor/trace.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::expect_close;
using test::kForwardTol;
using test::reference_path;

using test::RecordingTracer;

void check(const std::string& name, const Tensor& got, const Tensor& ref) {
  const test::Diff d = test::diff(got, ref);
  std::printf("  %-36s max abs err %.3g (ref max %.3g)\n", name.c_str(), d.max_abs, d.ref_max);
  expect_close(name, got, ref, kForwardTol);
}

// Case e step 0: latent [1,16,8,8] (16 image tokens), positive prompt (14 visible text rows) and
// the empty negative prompt (2 visible rows) — sequences of different lengths.
class PackedForward : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string weights = reference_path("chroma-mini.safetensors");
    const std::string cases = reference_path("case-e-txt2img-fp32.safetensors");
    CHROMA_REQUIRE_FILE(weights);
    CHROMA_REQUIRE_FILE(cases);
    model_ = std::make_unique<ChromaModel>(io::WeightStore::open(weights));
    e_ = io::SafetensorsFile::open(cases);
    latent_ = e_->get("firstn0.step.0.latent_in").to_f32();
    mods_ = model_->modulations(e_->get("firstn0.step.0.t").to_f32().values()[0]);
    pos_ = visible_text("pos");
    neg_ = visible_text("neg");
  }
  // input.{side}_txt [1, 512, T] cut to the n_valid + 1 rows the masked DiT sees (README §3.2).
  Tensor visible_text(const std::string& side) const {
    int64_t n_valid = 0;
    for (int64_t m : e_->get("input." + side + "_mask").to_i64()) n_valid += m;
    Tensor t = e_->get("input." + side + "_txt").to_f32();
    t.reshape({t.dim(-2), t.dim(-1)});
    return t.rows(0, n_valid + 1);
  }

  std::unique_ptr<ChromaModel> model_;
  std::unique_ptr<io::SafetensorsFile> e_;
  Tensor latent_, mods_, pos_, neg_;
};

TEST_F(PackedForward, MatchesReferenceVelocities) {
  ASSERT_EQ(pos_.dim(0), 14);
  ASSERT_EQ(neg_.dim(0), 2);
  const std::vector<Tensor> v = model_->forward_packed(latent_, {pos_, neg_}, mods_);
  ASSERT_EQ(v.size(), 2u);
  check("packed v_pos vs case e", v[0], e_->get("firstn0.step.0.v_pos").to_f32());
  check("packed v_neg vs case e", v[1], e_->get("firstn0.step.0.v_neg").to_f32());
}

TEST_F(PackedForward, EqualsSeparateForwardsInEitherOrder) {
  const Tensor v_pos = model_->forward(latent_, pos_, mods_);
  const Tensor v_neg = model_->forward(latent_, neg_, mods_);
  const std::vector<Tensor> ab = model_->forward_packed(latent_, {pos_, neg_}, mods_);
  const std::vector<Tensor> ba = model_->forward_packed(latent_, {neg_, pos_}, mods_);
  check("packed [pos, neg] pos vs single", ab[0], v_pos);
  check("packed [pos, neg] neg vs single", ab[1], v_neg);
  check("packed [neg, pos] neg vs single", ba[0], v_neg);
  check("packed [neg, pos] pos vs single", ba[1], v_pos);
  // Three sequences, one repeated: each still sees only its own text.
  const std::vector<Tensor> three = model_->forward_packed(latent_, {neg_, pos_, neg_}, mods_);
  ASSERT_EQ(three.size(), 3u);
  check("packed x3 [2] vs single", three[2], v_neg);
}

// Each sequence's intermediates are traced under its own prefix, with the single forward's shapes.
TEST_F(PackedForward, TracesEachSequenceUnderItsPrefix) {
  RecordingTracer tracer;
  {
    ScopedTracer scoped(&tracer);
    model_->forward_packed(latent_, {{pos_, "pos."}, {neg_, "neg."}}, mods_);
  }
  const std::pair<const char*, Shape> expected[] = {
      {"pos.img_in", {16, 256}},           {"neg.img_in", {16, 256}},
      {"pos.txt_in_visible", {14, 256}},   {"neg.txt_in_visible", {2, 256}},
      {"pos.double.1.img", {16, 256}},     {"neg.double.1.txt_visible", {2, 256}},
      {"pos.single.1.joint_visible", {30, 256}}, {"neg.single.1.joint_visible", {18, 256}},
      {"neg.final_out", {16, 64}}};
  for (const auto& [name, shape] : expected) {
    ASSERT_TRUE(tracer.values.count(name)) << "not traced: " << name;
    EXPECT_EQ(shape_str(tracer.values[name].shape), shape_str(shape)) << name;
  }
}

TEST_F(PackedForward, RejectsBadInputs) {
  EXPECT_THROW(model_->forward_packed(latent_, {}, mods_), Error);
  EXPECT_THROW(model_->forward_packed(latent_, {pos_, Tensor({0, pos_.dim(1)})}, mods_), Error);
}

}  // namespace
}  // namespace chroma::dit

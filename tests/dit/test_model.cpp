// The Chroma DiT against the author's code: reference case d (chroma-mini, one forward with every
// block intermediate) and the modulation vectors of case e (testdata/reference/README.md §4, §5),
// plus config inference and the errors for malformed weights and inputs on a tiny synthetic model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/chroma/model.h"
#include "tensor/trace.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::expect_close;
using test::kEmbeddingTol;
using test::kForwardTol;
using test::reference_path;

using test::RecordingTracer;

// The reference stores a leading batch 1 ([1, 64, 256]); our token tensors are [64, 256].
Tensor drop_leading_ones(Tensor t) {
  Shape s = t.shape;
  while (s.size() > 2 && s[0] == 1) s.erase(s.begin());
  t.reshape(s);
  return t;
}

// Compares and prints the max error, so test logs show how close each quantity is.
void check(const std::string& name, const Tensor& got, const Tensor& ref, test::Tolerance tol) {
  const test::Diff d = test::diff(got, ref);
  std::printf("  %-28s max abs err %.3g (ref max %.3g)\n", name.c_str(), d.max_abs, d.ref_max);
  expect_close(name, got, ref, tol);
}

class DitReference : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string weights = reference_path("chroma-mini.safetensors");
    const std::string cases = reference_path("case-d-dit-forward.safetensors");
    CHROMA_REQUIRE_FILE(weights);
    CHROMA_REQUIRE_FILE(cases);
    model_ = std::make_unique<ChromaModel>(io::WeightStore::open(weights));
    case_ = io::SafetensorsFile::open(cases);
  }
  Tensor reference(const std::string& name) const { return drop_leading_ones(case_->get(name).to_f32()); }

  std::unique_ptr<ChromaModel> model_;
  std::unique_ptr<io::SafetensorsFile> case_;
};

// Reference README §4, chroma-mini column.
TEST_F(DitReference, ConfigInferredFromShapes) {
  const ChromaConfig& c = model_->config();
  EXPECT_EQ(c.hidden, 256);
  EXPECT_EQ(c.heads, 2);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.mlp_hidden, 1024);
  EXPECT_EQ(c.double_blocks, 2);
  EXPECT_EQ(c.single_blocks, 2);
  EXPECT_EQ(c.in_channels, 64);
  EXPECT_EQ(c.context_dim, 128);
  EXPECT_EQ(c.approx_in, 64);
  EXPECT_EQ(c.approx_hidden, 256);
  EXPECT_EQ(c.approx_layers, 5);
  EXPECT_EQ(c.mod_rows, 32);
  EXPECT_EQ(c.latent_channels(), 16);
}

// One forward from the reference inputs, checking every stored intermediate and the velocity.
TEST_F(DitReference, ForwardMatchesEveryIntermediate) {
  const Tensor latent = case_->get("input.latent").to_f32();  // [1, 16, 16, 16]
  const float t = case_->get("input.timestep").to_f32().values()[0];
  ASSERT_EQ(t, 0.75f);
  ASSERT_EQ(case_->get("input.guidance").to_f32().values()[0], 0.0f);  // the model always feeds 0

  // The visible text rows: n_valid + 1 (README §3.2).
  int64_t n_valid = 0;
  for (int64_t m : case_->get("input.txt_mask").to_i64()) n_valid += m;
  const int64_t n_vis = n_valid + 1;
  ASSERT_EQ(n_vis, 14);
  const Tensor txt = drop_leading_ones(case_->get("input.txt").to_f32()).rows(0, n_vis);  // [14, 128]

  RecordingTracer tracer;
  Tensor velocity;
  {
    ScopedTracer scoped(&tracer);
    TracePrefix prefix("inter.");
    const Tensor mods = model_->modulations(t);
    velocity = model_->forward(latent, txt, mods);
  }

  // The approximator input is pure embeddings; everything after it is a forward.
  std::vector<std::pair<std::string, test::Tolerance>> names = {
      {"img_packed", kEmbeddingTol}, {"approx_input", kEmbeddingTol}, {"mod_vectors", kForwardTol},
      {"img_in", kForwardTol},       {"txt_in_visible", kForwardTol}};
  for (int i = 0; i < 2; ++i) {
    names.push_back({"double." + std::to_string(i) + ".img", kForwardTol});
    names.push_back({"double." + std::to_string(i) + ".txt_visible", kForwardTol});
  }
  for (int i = 0; i < 2; ++i) names.push_back({"single." + std::to_string(i) + ".joint_visible", kForwardTol});
  names.push_back({"final_out", kForwardTol});

  for (const auto& [name, tol] : names) {
    const std::string full = "inter." + name;
    ASSERT_TRUE(tracer.values.count(full)) << "not traced: " << full;
    check(full, tracer.values[full], reference(full), tol);
  }
  check("output.velocity", velocity, case_->get("output.velocity").to_f32(), kForwardTol);
}

// Case e stores the approximator output of every sampler step: with float32 timesteps (fp32 file)
// and with the author's bf16 timesteps (bf16latent file, TimestepPrecision::BF16).
TEST_F(DitReference, ModulationsOfSamplerSteps) {
  const std::pair<std::string, TimestepPrecision> runs[] = {{"fp32", TimestepPrecision::F32},
                                                              {"bf16latent", TimestepPrecision::BF16}};
  for (const auto& [run, precision] : runs) {
    const std::string path = reference_path("case-e-txt2img-" + run + ".safetensors");
    CHROMA_REQUIRE_FILE(path);
    const auto e = io::SafetensorsFile::open(path);
    for (int step = 0; step < 4; ++step) {
      const std::string p = "firstn0.step." + std::to_string(step) + ".";
      const float t = e->get(p + "t").to_f32().values()[0];
      check(run + " " + p + "mod_vectors", model_->modulations(t, precision),
            drop_leading_ones(e->get(p + "mod_vectors").to_f32()), kForwardTol);
    }
  }
}

// Case e step 0 on a smaller latent ([1,16,8,8], 16 image tokens): the positive prompt (14 visible
// rows) and the empty negative prompt (EOS + 1 padding row = 2 visible rows).
TEST_F(DitReference, SamplerStepVelocities) {
  const std::string path = reference_path("case-e-txt2img-fp32.safetensors");
  CHROMA_REQUIRE_FILE(path);
  const auto e = io::SafetensorsFile::open(path);
  const Tensor latent = e->get("firstn0.step.0.latent_in").to_f32();
  const Tensor mods = model_->modulations(e->get("firstn0.step.0.t").to_f32().values()[0]);
  for (const std::string side : {"pos", "neg"}) {
    int64_t n_valid = 0;
    for (int64_t m : e->get("input." + side + "_mask").to_i64()) n_valid += m;
    const Tensor txt = drop_leading_ones(e->get("input." + side + "_txt").to_f32()).rows(0, n_valid + 1);
    check("v_" + side + " (" + std::to_string(n_valid + 1) + " text rows)", model_->forward(latent, txt, mods),
          e->get("firstn0.step.0.v_" + side).to_f32(), kForwardTol);
  }
}

// ---- malformed weights and inputs: a tiny synthetic model written to a temp dir ----

// A complete tiny Chroma: C 128 (one head of D 128, the fixed RoPE split 16+56+56), M 256, one block
// of each kind, context 8, approximator 64 → 32 with 2 layers. Float32, smooth values.
std::map<std::string, Tensor> tiny_model(const std::string& prefix = "") {
  std::map<std::string, Tensor> m;
  auto add = [&](const std::string& name, Shape shape, float base = 0.0f) {
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.values()[size_t(i)] = base + 0.1f * std::sin(float(i + 7 * m.size()));
    m[prefix + name] = t;
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    add(name + ".weight", {out, in});
    add(name + ".bias", {out});
  };
  linear("img_in", 128, 64);
  linear("txt_in", 128, 8);
  linear("distilled_guidance_layer.in_proj", 32, 64);
  for (const char* i : {"0", "1"}) {
    add(std::string("distilled_guidance_layer.norms.") + i + ".scale", {32}, 1.0f);
    linear(std::string("distilled_guidance_layer.layers.") + i + ".in_layer", 32, 32);
    linear(std::string("distilled_guidance_layer.layers.") + i + ".out_layer", 32, 32);
  }
  linear("distilled_guidance_layer.out_proj", 128, 32);
  for (const std::string s : {"img", "txt"}) {
    linear("double_blocks.0." + s + "_attn.qkv", 384, 128);
    add("double_blocks.0." + s + "_attn.norm.query_norm.scale", {128}, 1.0f);
    add("double_blocks.0." + s + "_attn.norm.key_norm.scale", {128}, 1.0f);
    linear("double_blocks.0." + s + "_attn.proj", 128, 128);
    linear("double_blocks.0." + s + "_mlp.0", 256, 128);
    linear("double_blocks.0." + s + "_mlp.2", 128, 256);
  }
  linear("single_blocks.0.linear1", 3 * 128 + 256, 128);
  linear("single_blocks.0.linear2", 128, 128 + 256);
  add("single_blocks.0.norm.query_norm.scale", {128}, 1.0f);
  add("single_blocks.0.norm.key_norm.scale", {128}, 1.0f);
  linear("final_layer.linear", 64, 128);
  return m;
}

io::WeightStore write_and_open(const std::map<std::string, Tensor>& model, const std::string& file) {
  const std::string path = test::temp_path(file).string();
  std::vector<io::NamedTensor> entries;
  for (const auto& [name, t] : model) entries.push_back({name, &t});
  io::write_safetensors(path, entries);
  return io::WeightStore::open(path);
}

// Expects construction to throw chroma::Error whose message names `tensor`.
void expect_rejected(const std::map<std::string, Tensor>& model, const std::string& tensor) {
  const io::WeightStore store = write_and_open(model, "dit_bad.safetensors");
  try {
    ChromaModel dit(store);
    ADD_FAILURE() << "accepted weights with a bad " << tensor;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tensor), std::string::npos) << e.what();
  }
}

// A smooth latent [1, 16, 4, 6] (non-square: 2×3 patches) and 3 text rows of width 8.
Tensor tiny_latent() {
  Tensor x({1, 16, 4, 6});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = std::cos(0.37f * float(i));
  return x;
}
Tensor tiny_txt() {
  Tensor x({3, 8});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = std::sin(0.51f * float(i));
  return x;
}

// The first-block cache against its definition: below its threshold it never skips and changes
// nothing; far above it, an evaluation after a full one skips the later blocks and adds their stored
// residual, so the same input gives the same velocity exactly; a new packing runs every block.
TEST(DitStepCache, SkipsOnlyWhereItsRuleSays) {
  const ChromaModel dit(write_and_open(tiny_model(), "dit_cache.safetensors"));
  const Tensor mods = dit.modulations(0.5f), other = dit.modulations(0.3f);
  const Tensor x = tiny_latent(), txt = tiny_txt();
  const Tensor plain = dit.forward(x, txt, mods), plain_other = dit.forward(x, txt, other);

  StepCache never(1e-30f);
  EXPECT_EQ(dit.forward_packed(x, {{txt}}, mods, &never)[0].to_vector(), plain.to_vector());
  EXPECT_EQ(dit.forward_packed(x, {{txt}}, other, &never)[0].to_vector(), plain_other.to_vector());
  EXPECT_EQ(never.evaluations, 2);
  EXPECT_EQ(never.skipped, 0);

  StepCache always(1e30f);
  EXPECT_EQ(dit.forward_packed(x, {{txt}}, mods, &always)[0].to_vector(), plain.to_vector()) << "the first evaluation runs every block";
  EXPECT_EQ(dit.forward_packed(x, {{txt}}, mods, &always)[0].to_vector(), plain.to_vector()) << "same input: residual identity";
  EXPECT_EQ(always.skipped, 1);
  const Tensor cached_other = dit.forward_packed(x, {{txt}}, other, &always)[0];
  EXPECT_EQ(always.skipped, 2);
  EXPECT_NE(cached_other.to_vector(), plain_other.to_vector()) << "skipped: not the full forward";
  // Two sequences: another packing, so every block runs (and the result is the uncached one).
  const std::vector<Tensor> two = dit.forward_packed(x, {{txt}, {txt}}, other, &always);
  EXPECT_EQ(always.skipped, 2);
  EXPECT_EQ(always.evaluations, 4);
  for (size_t i = 0; i < two[0].values().size(); ++i) EXPECT_NEAR(two[0].values()[i], plain_other.values()[i], 1e-5) << i;
}

TEST(DitWeights, TinyModelLoadsAndRuns) {
  const ChromaModel dit(write_and_open(tiny_model(), "dit_tiny.safetensors"));
  const ChromaConfig& c = dit.config();
  EXPECT_EQ(c.hidden, 128);
  EXPECT_EQ(c.heads, 1);
  EXPECT_EQ(c.mlp_hidden, 256);
  EXPECT_EQ(c.context_dim, 8);
  EXPECT_EQ(c.approx_hidden, 32);
  EXPECT_EQ(c.approx_layers, 2);
  EXPECT_EQ(c.mod_rows, 3 * 1 + 12 * 1 + 2);

  const Tensor mods = dit.modulations(0.5f);
  EXPECT_EQ(shape_str(mods.shape), shape_str({17, 128}));
  const Tensor v = dit.forward(tiny_latent(), tiny_txt(), mods);
  ASSERT_EQ(shape_str(v.shape), shape_str({1, 16, 4, 6}));
  for (float x : v.values()) ASSERT_TRUE(std::isfinite(x));
}

// sd.cpp-style names ("model.diffusion_model.*"), alone or beside other models' tensors, give the
// same model as bare names.
TEST(DitWeights, PrefixedNamesGiveTheSameModel) {
  const ChromaModel bare(write_and_open(tiny_model(), "dit_bare.safetensors"));
  const Tensor expected = bare.forward(tiny_latent(), tiny_txt(), bare.modulations(0.3f));

  auto prefixed = tiny_model(kComfyPrefix);
  const ChromaModel a(write_and_open(prefixed, "dit_prefixed.safetensors"));
  EXPECT_EQ(a.forward(tiny_latent(), tiny_txt(), a.modulations(0.3f)).to_vector(), expected.to_vector());

  prefixed["text_encoders.t5xxl.shared.weight"] = Tensor({4, 8});
  const ChromaModel b(write_and_open(prefixed, "dit_merged.safetensors"));
  EXPECT_EQ(b.forward(tiny_latent(), tiny_txt(), b.modulations(0.3f)).to_vector(), expected.to_vector());
}

TEST(DitWeights, MissingTensorIsNamed) {
  for (const std::string name :
       {"img_in.weight", "txt_in.bias", "distilled_guidance_layer.norms.1.scale",
        "distilled_guidance_layer.out_proj.weight", "double_blocks.0.img_attn.norm.query_norm.scale",
        "double_blocks.0.txt_mlp.2.bias", "single_blocks.0.norm.key_norm.scale", "single_blocks.0.linear2.weight",
        "final_layer.linear.bias"}) {
    auto model = tiny_model();
    model.erase(name);
    expect_rejected(model, name);
  }
}

TEST(DitWeights, MisshapedTensorIsNamed) {
  const std::pair<std::string, Shape> bad[] = {
      {"double_blocks.0.img_attn.qkv.weight", {383, 128}},
      {"double_blocks.0.txt_attn.proj.weight", {128, 127}},
      {"single_blocks.0.linear1.weight", {3 * 128 + 255, 128}},
      {"single_blocks.0.linear2.weight", {128, 383}},
      {"single_blocks.0.norm.query_norm.scale", {64}},
      {"distilled_guidance_layer.layers.1.in_layer.weight", {32, 31}},
      {"final_layer.linear.weight", {63, 128}},
  };
  for (const auto& [name, shape] : bad) {
    auto model = tiny_model();
    model[name] = Tensor(shape);
    expect_rejected(model, name);
  }
}

// The RoPE split 16 + 56 + 56 is not in the file (README §4), so heads of another size are refused.
TEST(DitWeights, HeadDimMustFitRopeAxes) {
  auto model = tiny_model();
  model["double_blocks.0.img_attn.norm.query_norm.scale"] = Tensor({64});
  const io::WeightStore store = write_and_open(model, "dit_bad_heads.safetensors");
  try {
    ChromaModel dit(store);
    ADD_FAILURE() << "accepted 64-dim heads";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("RoPE"), std::string::npos) << e.what();
  }
}

TEST(DitWeights, BadInputsAreRejected) {
  const ChromaModel dit(write_and_open(tiny_model(), "dit_tiny_inputs.safetensors"));
  const Tensor mods = dit.modulations(0.5f), txt = tiny_txt(), latent = tiny_latent();
  EXPECT_THROW(dit.forward(Tensor({1, 16, 5, 6}), txt, mods), Error);  // odd height
  EXPECT_THROW(dit.forward(Tensor({1, 16, 4, 7}), txt, mods), Error);  // odd width
  EXPECT_THROW(dit.forward(Tensor({1, 4, 4, 6}), txt, mods), Error);   // wrong channel count
  EXPECT_THROW(dit.forward(Tensor({16, 4, 6}), txt, mods), Error);     // no batch dim
  EXPECT_THROW(dit.forward(Tensor({2, 16, 4, 6}), txt, mods), Error);  // batch 2
  EXPECT_THROW(dit.forward(latent, Tensor({3, 9}), mods), Error);      // wrong context width
  EXPECT_THROW(dit.forward(latent, Tensor({0, 8}), mods), Error);      // no text rows
  EXPECT_THROW(dit.forward(latent, txt, Tensor({16, 128})), Error);    // mods of another model
}

}  // namespace
}  // namespace chroma::dit

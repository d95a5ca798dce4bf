// LoRA on the Chroma DiT (io/lora.h, ChromaModel::set_loras), on chroma-mini and the case d inputs.
// A random rank-4 LoRA is built here for a dozen linears (fused qkv, linear1 and linear2, MLPs, the
// Approximator, the embeddings) and merged here with plain loops into a float32 copy of the checkpoint;
// the model with the LoRA applied (runtime or fused) must give the merged checkpoint's forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint_conversion.h"
#include "io/lora.h"
#include "io/quantize.h"
#include "io/safetensors.h"
#include "models/chroma/model.h"
#include "tensor/quant.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::expect_close;
using test::kForwardTol;
using test::reference_path;
using test::temp_path;

// ---- a random LoRA, written in each key layout -------------------------------------------------

constexpr int64_t kRank = 4;

// One module's update in the test's own terms: original module name, A [r, K], B [N, r], alpha.
struct TestDelta {
  std::string target;
  Tensor down, up;
  std::optional<float> alpha;
  float scale() const { return alpha ? *alpha / float(kRank) : 1.0f; }
};

// The modules adapted: every kind of linear the model has, fused qkv / linear1 included.
const char* const kTargets[] = {
    "double_blocks.0.img_attn.qkv",  "double_blocks.1.txt_attn.qkv",       "double_blocks.1.img_attn.proj",
    "double_blocks.0.txt_mlp.0",     "double_blocks.1.img_mlp.2",          "single_blocks.0.linear1",
    "single_blocks.1.linear2",       "distilled_guidance_layer.in_proj",   "distilled_guidance_layer.layers.2.in_layer",
    "distilled_guidance_layer.out_proj", "img_in", "txt_in", "final_layer.linear",
};

// Uniform in [−a, a) from the standard-specified mt19937 bits, so the values are the same everywhere.
Tensor random_matrix(std::mt19937& rng, Shape shape, float a) {
  Tensor t(std::move(shape));
  for (float& x : t.values()) x = a * (float(rng() >> 8) / float(1 << 23) - 1.0f);
  return t;
}

// Every other module with alpha 8 (scale 2), the others without alpha (scale 1). Magnitudes such that
// s·B·A is of the order of the weights (|w| ≲ 0.1), so the LoRA changes the velocity clearly.
std::vector<TestDelta> random_lora(const io::SafetensorsFile& base) {
  std::mt19937 rng(12);
  std::vector<TestDelta> lora;
  for (const char* target : kTargets) {
    const TensorView& w = base.get(std::string(target) + ".weight");
    TestDelta d{target, random_matrix(rng, {kRank, w.dim(1)}, 0.2f), random_matrix(rng, {w.dim(0), kRank}, 0.2f), {}};
    if (lora.size() % 2 == 0) d.alpha = 8.0f;
    lora.push_back(std::move(d));
  }
  return lora;
}

enum class Layout {
  BflLoraAB,       // ComfyUI / ai-toolkit on original names: diffusion_model.<module>.lora_A.weight, .alpha
  BflDownUp,       // <module>.lora_down.weight / .lora_up.weight / .alpha
  Kohya,           // lora_unet_<module with _>.lora_down.weight / .lora_up.weight / .alpha
  Diffusers,       // transformer.<diffusers module>.lora_A.weight, q/k/v and linear1 split; no alpha
  KohyaDiffusers,  // lora_transformer_<diffusers module with _>.lora_down.weight ...
};
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::BflLoraAB: return "bfl-lora_A";
    case Layout::BflDownUp: return "bfl-lora_down";
    case Layout::Kohya: return "kohya";
    case Layout::Diffusers: return "diffusers";
    case Layout::KohyaDiffusers: return "kohya-diffusers";
  }
  return "?";
}

std::string underscored(std::string s) {
  for (char& c : s)
    if (c == '.') c = '_';
  return s;
}

Tensor scaled(const Tensor& t, float s) {
  Tensor r = t;
  for (float& x : r.values()) x *= s;
  return r;
}

using TensorMap = std::map<std::string, Tensor>;

void put_module(TensorMap& out, const std::string& module, const Tensor& down, const Tensor& up,
                std::optional<float> alpha, bool down_up) {
  out[module + (down_up ? ".lora_down.weight" : ".lora_A.weight")] = down;
  out[module + (down_up ? ".lora_up.weight" : ".lora_B.weight")] = up;
  if (alpha) out[module + ".alpha"] = Tensor({}, {*alpha});
}

// The LoRA's tensors under `layout`'s names. Diffusers splits fused targets into row blocks (the
// test's own table, checkpoint_conversion.h): each piece keeps A and takes its rows of B, which is the
// same update. Layouts without alpha get s·B instead.
TensorMap lora_tensors(const std::vector<TestDelta>& lora, Layout layout, int64_t C) {
  TensorMap out;
  for (const TestDelta& d : lora) {
    switch (layout) {
      case Layout::BflLoraAB: put_module(out, "diffusion_model." + d.target, d.down, d.up, d.alpha, false); break;
      case Layout::BflDownUp: put_module(out, d.target, d.down, d.up, d.alpha, true); break;
      case Layout::Kohya: put_module(out, "lora_unet_" + underscored(d.target), d.down, d.up, d.alpha, true); break;
      case Layout::Diffusers:
      case Layout::KohyaDiffusers:
        for (const test::DiffusersPiece& p : test::dit_to_diffusers(d.target + ".weight", d.up.dim(0), C)) {
          const std::string module = p.name.substr(0, p.name.size() - std::string(".weight").size());
          const Tensor up = p.end < 0 ? d.up : d.up.rows(p.begin, p.end);
          if (layout == Layout::Diffusers)
            put_module(out, "transformer." + module, d.down, scaled(up, d.scale()), {}, false);
          else
            put_module(out, "lora_transformer_" + underscored(module), d.down, up, d.alpha, true);
        }
        break;
    }
  }
  return out;
}

std::string write_tensors(const TensorMap& tensors, const std::string& file) {
  const std::string path = temp_path(file).string();
  std::vector<io::NamedTensor> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, &t});
  io::write_safetensors(path, entries);
  return path;
}

// The merged weights: W + strength · s · B·A for every delta, summed in double and rounded once to
// float32, from any base's tensors (dequantized).
TensorMap merge(const std::map<std::string, TensorView>& base, const std::vector<TestDelta>& lora, float strength) {
  TensorMap merged;
  for (const auto& [name, v] : base) merged[name] = v.to_f32();
  for (const TestDelta& d : lora) {
    Tensor& w = merged.at(d.target + ".weight");
    const int64_t N = w.dim(0), K = w.dim(1);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double sum = 0;
        for (int64_t j = 0; j < kRank; ++j) sum += double(d.up.values()[size_t(n * kRank + j)]) * d.down.values()[size_t(j * K + k)];
        w.values()[size_t(n * K + k)] = float(double(w.values()[size_t(n * K + k)]) + double(strength) * d.scale() * sum);
      }
  }
  return merged;
}

// Fuse mode stores each merged weight in the base weight's type, bf16 where that is fp8 (model.h
// LoraMode::Fuse).
DType fused_type(DType base) { return base == DType::F8_E4M3 ? DType::BF16 : base; }

// The merged weights rounded as fuse mode stores them: bf16 to nearest even, a block type quantized
// and dequantized. Written as float32, the forward of this checkpoint is the fused model's but for
// the weights whose float32 merge lies on the other side of a rounding boundary than the engine's
// (each moves one bf16 ulp or Q8_0 step): kEndToEndTol.
TensorMap as_fused(TensorMap merged, const std::map<std::string, TensorView>& base, const std::vector<TestDelta>& lora) {
  for (const TestDelta& d : lora) {
    Tensor& w = merged.at(d.target + ".weight");
    const DType type = fused_type(base.at(d.target + ".weight").dtype);
    if (type == DType::BF16) {
      for (float& x : w.values()) x = round_bf16(x);
    } else if (type != DType::F32) {
      const quant::TypeTraits* traits = quant::traits(type);
      std::vector<uint8_t> bytes(*tensor_bytes(type, w.shape));
      traits->quantize(w.ptr(), bytes.data(), w.numel());
      traits->dequantize(bytes.data(), w.ptr(), w.numel());
    }
  }
  return merged;
}

// Checks every adapted weight of a fused `model` against the exact merge m: stored in the fused type,
// and within its rounding — bf16 (nearest even): |f − m| ≤ 2^-8·|m|, half an ulp; Q8_0 (x = d·q,
// d = amax/127 stored as f16): |f − m| ≤ d·(1/2 + 127·2^-11) — plus the float32 error of computing
// W + s·B·A (2^-20·(|W| + |s·B·A|)), which decides values next to 0 or to a rounding boundary.
// Returns how many weights the LoRA moved by more than the bound (so that a LoRA left out shows).
int64_t expect_fused_weights(const ChromaModel& model, const TensorMap& merged, const std::map<std::string, TensorView>& base,
                             const std::vector<TestDelta>& lora) {
  ChromaWeights weights = model.weights();
  const auto layers = linear_layers(weights);
  int64_t moved = 0;
  for (const TestDelta& d : lora) {
    const TensorView& b = base.at(d.target + ".weight");
    const DType want = fused_type(b.dtype);
    const Tensor& m = merged.at(d.target + ".weight");
    const Tensor original = b.to_f32();
    const int64_t K = m.dim(1);
    int64_t row = 0;
    for (const LinearWeights* block : layers.at(d.target)) {
      const TensorView& f = block->weight;
      EXPECT_EQ(f.dtype, want) << d.target;
      EXPECT_TRUE(block->lora.empty()) << d.target;
      if (f.dtype != want) return 0;
      const Tensor got = f.to_f32();
      for (int64_t i = 0; i < got.numel(); ++i) {
        const size_t at = size_t(row * K + i);
        const double exact = m.values()[at];
        const double w = original.values()[at];
        double bound = std::ldexp(std::abs(w) + std::abs(exact - w), -20);
        if (want == DType::BF16) bound += std::ldexp(std::abs(exact), -8);
        if (want == DType::Q8_0) {
          const auto* blocks = static_cast<const quant::BlockQ8_0*>(f.data);
          bound += f16_to_f32(blocks[i / quant::kQK].d) * (0.5 + 127.0 / 2048.0);
        }
        if (std::abs(got.values()[size_t(i)] - exact) > bound) {
          ADD_FAILURE() << d.target << " row " << row + i / K << " col " << i % K << ": fused " << got.values()[size_t(i)]
                        << ", exact merge " << exact << ", bound " << bound;
          return moved;
        }
        moved += std::abs(exact - w) > 2 * bound;
      }
      row += f.dim(0);
    }
    EXPECT_EQ(row, m.dim(0)) << d.target;
  }
  return moved;
}

// ---- key names alone (no checkpoint needed) ---------------------------------------------------

// Each stored module path (with its suffix style) → the original module, row block and scale.
TEST(LoraKeys, EveryLayoutMapsOntoOriginalModules) {
  struct Case {
    std::string module, down_suffix, up_suffix;
    std::string target;
    int part, parts;
  };
  const Case cases[] = {
      {"diffusion_model.double_blocks.3.img_attn.qkv", ".lora_A.weight", ".lora_B.weight", "double_blocks.3.img_attn.qkv", 0, 1},
      {"model.diffusion_model.single_blocks.12.linear2", ".lora_down.weight", ".lora_up.weight", "single_blocks.12.linear2", 0, 1},
      {"lora_unet_double_blocks_0_txt_mlp_2", ".lora_down.weight", ".lora_up.weight", "double_blocks.0.txt_mlp.2", 0, 1},
      {"lora_unet_distilled_guidance_layer_layers_4_out_layer", ".lora_down.weight", ".lora_up.weight",
       "distilled_guidance_layer.layers.4.out_layer", 0, 1},
      {"transformer.transformer_blocks.5.attn.add_v_proj", ".lora_A.weight", ".lora_B.weight", "double_blocks.5.txt_attn.qkv", 2, 3},
      {"base_model.model.single_transformer_blocks.7.proj_mlp", ".lora_A", ".lora_B", "single_blocks.7.linear1", 3, 4},
      {"transformer.single_transformer_blocks.7.attn.to_k", ".lora.down.weight", ".lora.up.weight", "single_blocks.7.linear1", 1, 4},
      {"lora_transformer_transformer_blocks_1_ff_context_net_0_proj", ".lora_down.weight", ".lora_up.weight",
       "double_blocks.1.txt_mlp.0", 0, 1},
      {"lora_transformer_distilled_guidance_layer_layers_0_linear_1", ".lora_down.weight", ".lora_up.weight",
       "distilled_guidance_layer.layers.0.in_layer", 0, 1},
      {"transformer.proj_out", ".lora_A.weight", ".lora_B.weight", "final_layer.linear", 0, 1},
      {"transformer.x_embedder", ".lora_A.weight", ".lora_B.weight", "img_in", 0, 1},
  };
  for (const Case& c : cases) {
    TensorMap t;
    t[c.module + c.down_suffix] = Tensor({2, 3});
    t[c.module + c.up_suffix] = Tensor({5, 2});
    t[c.module + ".alpha"] = Tensor({}, {3.0f});
    const io::LoraFile f = io::LoraFile::open(write_tensors(t, "lora-keys.safetensors"));
    ASSERT_EQ(f.deltas().size(), 1u) << c.module;
    const io::LoraDelta& d = f.deltas()[0];
    EXPECT_EQ(d.target, c.target) << c.module;
    EXPECT_EQ(d.part, c.part) << c.module;
    EXPECT_EQ(d.parts, c.parts) << c.module;
    EXPECT_EQ(d.scale, 1.5f) << c.module;  // alpha 3 / rank 2
    EXPECT_EQ(d.keys.size(), 3u) << c.module;
    EXPECT_TRUE(f.unmatched().empty()) << c.module;
  }
}

// Without alpha the scale is 1; a module path that only starts like a known one is not a match.
TEST(LoraKeys, NoAlphaMeansScaleOneAndPartialPathsDoNotMatch) {
  TensorMap t;
  t["double_blocks.0.img_attn.proj.lora_A.weight"] = Tensor({4, 3});
  t["double_blocks.0.img_attn.proj.lora_B.weight"] = Tensor({5, 4});
  t["double_blocks.0.img_attn.proj.extra.lora_A.weight"] = Tensor({4, 3});
  t["double_blocks.0.img_attn.proj.extra.lora_B.weight"] = Tensor({5, 4});
  const io::LoraFile f = io::LoraFile::open(write_tensors(t, "lora-noalpha.safetensors"));
  ASSERT_EQ(f.deltas().size(), 1u);
  EXPECT_EQ(f.deltas()[0].scale, 1.0f);
  EXPECT_EQ(f.unmatched(), (std::vector<std::string>{"double_blocks.0.img_attn.proj.extra.lora_A.weight",
                                                     "double_blocks.0.img_attn.proj.extra.lora_B.weight"}));
  EXPECT_EQ(f.key_count(), 4u);
}

// ---- the fixture: chroma-mini, the case d inputs, the random LoRA -----------------------------

Tensor drop_leading_ones(Tensor t) {
  Shape s = t.shape;
  while (s.size() > 2 && s[0] == 1) s.erase(s.begin());
  t.reshape(s);
  return t;
}

struct Output {
  Tensor mods, velocity;
};

class Lora : public ::testing::Test {
 protected:
  void SetUp() override {
    base_path_ = reference_path("chroma-mini.safetensors");
    const std::string cases = reference_path("case-d-dit-forward.safetensors");
    CHROMA_REQUIRE_FILE(base_path_);
    CHROMA_REQUIRE_FILE(cases);
    base_ = io::SafetensorsFile::open(base_path_);
    const auto c = io::SafetensorsFile::open(cases);
    latent_ = c->get("input.latent").to_f32();
    t_ = c->get("input.timestep").to_f32().values()[0];
    int64_t n_valid = 0;
    for (int64_t m : c->get("input.txt_mask").to_i64()) n_valid += m;
    txt_ = drop_leading_ones(c->get("input.txt").to_f32()).rows(0, n_valid + 1);  // the visible rows
    lora_ = random_lora(*base_);
    hidden_ = base_->get("img_in.weight").dim(0);
  }

  Output run(const ChromaModel& model) const {
    Output o;
    o.mods = model.modulations(t_);
    o.velocity = model.forward(latent_, txt_, o.mods);
    return o;
  }
  std::string write_lora(Layout layout, const std::string& tag = "") const {
    return write_tensors(lora_tensors(lora_, layout, hidden_), std::string("lora-") + layout_name(layout) + tag +
                                                                   ".safetensors");
  }
  ChromaModel base_model() const { return ChromaModel(io::WeightStore::open(base_path_)); }

  std::string base_path_;
  std::unique_ptr<io::SafetensorsFile> base_;
  Tensor latent_, txt_;
  float t_ = 0;
  std::vector<TestDelta> lora_;
  int64_t hidden_ = 0;
};

// Runtime LoRA against the independently merged float32 checkpoint: the two compute the same function
// with float32 roundings in different places (W·x + s·B·(A·x) vs (W + s·B·A)·x, weights merged in
// double here): kForwardTol, the bound for one forward computed in another valid float32 order.
void expect_same_output(const std::string& what, const Output& got, const Output& want) {
  for (const auto& [name, g, w] : {std::tuple{"mod_vectors", &got.mods, &want.mods}, std::tuple{"velocity", &got.velocity, &want.velocity}}) {
    const test::Diff d = test::diff(*g, *w);
    std::printf("  %-34s %-11s max abs err %.3g (ref max %.3g)\n", what.c_str(), name, d.max_abs, d.ref_max);
  }
  expect_close(what + " mod_vectors", got.mods, want.mods, kForwardTol);
  expect_close(what + " velocity", got.velocity, want.velocity, kForwardTol);
}

// How far an output is from another, relative like expect_close, to show a LoRA did change it.
double rel_diff(const Tensor& a, const Tensor& b) {
  const test::Diff d = test::diff(a, b);
  return d.max_abs / std::max(1.0, d.ref_max);
}

TEST_F(Lora, RuntimeAndFuseMatchTheMergedCheckpoint) {
  ASSERT_EQ(base_->get("img_in.weight").dtype, DType::BF16);
  const TensorMap merged_weights = merge(base_->tensors(), lora_, 1.0f);
  const Output merged = run(ChromaModel(io::WeightStore::open(write_tensors(merged_weights, "merged.safetensors"))));
  ChromaModel model = base_model();
  const Output base = run(model);
  // The LoRA must matter far beyond the tolerance, or this test could not fail.
  EXPECT_GT(rel_diff(merged.velocity, base.velocity), 100 * kForwardTol.rel);
  EXPECT_GT(rel_diff(merged.mods, base.mods), 100 * kForwardTol.rel);

  const LoraSetting lora[] = {{io::LoraFile::open(write_lora(Layout::BflLoraAB)), 1.0f}};
  const std::vector<LoraReport> report = model.set_loras(lora, LoraMode::Runtime);
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0].applied_keys, 2 * std::size(kTargets) + 7);  // A and B of each, alpha of every other
  EXPECT_TRUE(report[0].unmatched_keys.empty());
  expect_same_output("runtime", run(model), merged);

  // Fused: the weights are the merge rounded to bf16, and the forward is that rounded merge's.
  model.set_loras(lora, LoraMode::Fuse);
  EXPECT_GT(expect_fused_weights(model, merged_weights, base_->tensors(), lora_), 1000);
  const Output rounded = run(ChromaModel(io::WeightStore::open(
      write_tensors(as_fused(merged_weights, base_->tensors(), lora_), "merged-bf16.safetensors"))));
  const Output fused = run(model);
  EXPECT_GT(rel_diff(rounded.velocity, merged.velocity), 2 * test::kEndToEndTol.rel);  // the rounding shows
  expect_close("fuse velocity", fused.velocity, rounded.velocity, test::kEndToEndTol);
  expect_close("fuse mod_vectors", fused.mods, rounded.mods, test::kEndToEndTol);
}

// Strength multiplies alpha/r; two LoRAs on the same layers add up.
TEST_F(Lora, StrengthAndTwoLorasAddUp) {
  const TensorMap merged_weights = merge(base_->tensors(), lora_, 1.5f);
  const Output merged = run(ChromaModel(io::WeightStore::open(write_tensors(merged_weights, "merged-1.5.safetensors"))));
  ChromaModel model = base_model();
  const io::LoraFile file = io::LoraFile::open(write_lora(Layout::Kohya));
  const LoraSetting at_1_5[] = {{file, 1.5f}};
  model.set_loras(at_1_5, LoraMode::Runtime);
  expect_same_output("strength 1.5", run(model), merged);
  const LoraSetting split[] = {{file, 1.0f}, {io::LoraFile::open(write_lora(Layout::BflDownUp)), 0.5f}};
  model.set_loras(split, LoraMode::Runtime);
  expect_same_output("1.0 + 0.5", run(model), merged);
  model.set_loras(split, LoraMode::Fuse);
  EXPECT_GT(expect_fused_weights(model, merged_weights, base_->tensors(), lora_), 1000);
}

// Every key layout reads as the same update as the original names, so the model gets the same
// per-layer terms and the outputs are bit for bit equal (the diffusers file stores s·B, which is
// exact here: s = 8/4 = 2 or 1). The diffusers layouts also check that split to_q/to_k/to_v (and
// linear1's to_q/to_k/to_v/proj_mlp) land on the rows of the fused qkv / linear1.
TEST_F(Lora, EveryKeyLayoutGivesTheOriginalNamesResult) {
  ChromaModel model = base_model();
  const LoraSetting bfl[] = {{io::LoraFile::open(write_lora(Layout::BflLoraAB)), 1.0f}};
  model.set_loras(bfl);
  const Output want = run(model);
  for (Layout layout : {Layout::BflDownUp, Layout::Kohya, Layout::Diffusers, Layout::KohyaDiffusers}) {
    const io::LoraFile file = io::LoraFile::open(write_lora(layout));
    EXPECT_TRUE(file.unmatched().empty()) << layout_name(layout) << ": " << file.unmatched().front();
    const LoraSetting lora[] = {{file, 1.0f}};
    const std::vector<LoraReport> report = model.set_loras(lora);
    EXPECT_EQ(report[0].applied_keys, file.key_count()) << layout_name(layout);
    const Output got = run(model);
    EXPECT_EQ(got.mods.to_vector(), want.mods.to_vector()) << layout_name(layout);
    EXPECT_EQ(got.velocity.to_vector(), want.velocity.to_vector()) << layout_name(layout);
  }
}

// Scale 0 and the empty list are the base model bit for bit; switching back and forth is repeatable.
TEST_F(Lora, ZeroStrengthAndEmptyListAreTheBaseModelExactly) {
  ChromaModel model = base_model();
  const Output base = run(model);
  const io::LoraFile file = io::LoraFile::open(write_lora(Layout::BflLoraAB));
  const LoraSetting zero[] = {{file, 0.0f}}, one[] = {{file, 1.0f}};

  model.set_loras(zero);
  Output o = run(model);
  EXPECT_EQ(o.mods.to_vector(), base.mods.to_vector());
  EXPECT_EQ(o.velocity.to_vector(), base.velocity.to_vector());

  model.set_loras(one);
  const Output with_lora = run(model);
  EXPECT_GT(rel_diff(with_lora.velocity, base.velocity), 100 * kForwardTol.rel);
  for (LoraMode mode : {LoraMode::Runtime, LoraMode::Fuse}) {
    model.set_loras(one, mode);
    model.set_loras({}, mode);
    o = run(model);
    EXPECT_EQ(o.mods.to_vector(), base.mods.to_vector());
    EXPECT_EQ(o.velocity.to_vector(), base.velocity.to_vector());
  }
  model.set_loras(one);
  EXPECT_EQ(run(model).velocity.to_vector(), with_lora.velocity.to_vector());
}

// Keys naming nothing in this model are reported, the rest applied.
TEST_F(Lora, UnmatchedKeysAreReported) {
  TensorMap t = lora_tensors(lora_, Layout::BflLoraAB, hidden_);
  std::mt19937 rng(3);
  const Tensor a = random_matrix(rng, {kRank, hidden_}, 0.1f);
  const Tensor b({3 * hidden_, kRank});
  t["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = a;  // a text-encoder LoRA
  t["diffusion_model.double_blocks.7.img_attn.qkv.lora_A.weight"] = a;       // deeper than chroma-mini
  t["diffusion_model.double_blocks.7.img_attn.qkv.lora_B.weight"] = b;
  t["diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight"] = a;        // Flux-only module
  t["lora_unet_double_blocks_0_img_attn_qkv.something_else"] = a;           // no LoRA role
  const std::string path = write_tensors(t, "lora-extra.safetensors");

  ChromaModel model = base_model();
  const LoraSetting lora[] = {{io::LoraFile::open(path), 1.0f}};
  const std::vector<LoraReport> report = model.set_loras(lora);
  EXPECT_EQ(report[0].path, path);
  EXPECT_EQ(report[0].applied_keys, t.size() - 5);
  const std::vector<std::string> want = {
      "diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight",
      "diffusion_model.double_blocks.7.img_attn.qkv.lora_A.weight",
      "diffusion_model.double_blocks.7.img_attn.qkv.lora_B.weight",
      "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
      "lora_unet_double_blocks_0_img_attn_qkv.something_else",
  };
  std::vector<std::string> got = report[0].unmatched_keys;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
}

// Runtime LoRA touches only activations, so it works on any base dtype: on fp8 scaled and GGUF Q8_0
// bases it must give the float32 merge of the dequantized base. Fuse stores the merged weights in the
// base's type where it can encode it (Q8_0: quantized again) and as bf16 otherwise (fp8).
TEST_F(Lora, QuantizedBases) {
  test::Fp8Storage storage;
  std::vector<test::Entry> entries;
  for (const auto& [name, v] : base_->tensors()) entries.push_back({"model.diffusion_model." + name, v});
  const std::string fp8 = temp_path("mini-fp8.safetensors").string();
  io::write_safetensors_views(fp8, test::named_views(test::quantize_fp8_scaled(entries, "model.diffusion_model.", {}, storage)));
  const std::string q8 = temp_path("mini-q8_0.gguf").string();
  io::quantize_model(base_path_, q8, io::parse_quantize_type("q8_0"));

  const LoraSetting lora[] = {{io::LoraFile::open(write_lora(Layout::Diffusers)), 1.0f}};
  for (const std::string& path : {fp8, q8}) {
    io::WeightStore store = io::WeightStore::open(path);
    store.strip_prefix("model.diffusion_model.");
    ASSERT_NE(store.tensors().at("single_blocks.0.linear1.weight").dtype, DType::BF16) << path;
    const TensorMap merged_weights = merge(store.tensors(), lora_, 1.0f);
    const Output merged = run(ChromaModel(io::WeightStore::open(write_tensors(merged_weights, "merged-deq.safetensors"))));
    ChromaModel model(store);
    const Output base = run(model);
    model.set_loras(lora, LoraMode::Runtime);
    const Output runtime = run(model);
    EXPECT_GT(rel_diff(runtime.velocity, base.velocity), 100 * kForwardTol.rel) << path;
    expect_same_output(path + " runtime", runtime, merged);
    model.set_loras(lora, LoraMode::Fuse);
    EXPECT_GT(expect_fused_weights(model, merged_weights, store.tensors(), lora_), 1000) << path;
    const Output rounded = run(ChromaModel(io::WeightStore::open(
        write_tensors(as_fused(merged_weights, store.tensors(), lora_), "merged-as-fused.safetensors"))));
    expect_close(path + " fuse velocity", run(model).velocity, rounded.velocity, test::kEndToEndTol);
  }
}

// LyCORIS LoHa and LoKr (io/lora.h formulas, ComfyUI's scale rules): their dense updates are merged
// into the weights in either mode. Built here with the kohya and original layouts, their updates
// worked out in double with plain loops; the merged weights must be those updates rounded to bf16
// (the base's type), and the forward the rounded merge's.
TEST_F(Lora, LohaAndLokrAreMergedAsTheyDefine) {
  std::mt19937 rng(5);
  const int64_t C = hidden_, M = base_->get("double_blocks.1.img_mlp.2.weight").dim(1);
  const int64_t K2 = base_->get("single_blocks.0.linear2.weight").dim(1);
  TensorMap file;
  struct Dense {
    std::string target;
    std::vector<double> delta;  // [N, K]
  };
  std::vector<Dense> expected;
  auto product = [](const Tensor& a, const Tensor& b) {  // [m, r] · [r, n] in double
    const int64_t m = a.dim(0), r = a.dim(1), n = b.dim(1);
    std::vector<double> out(size_t(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < r; ++k) out[size_t(i * n + j)] += double(a.values()[size_t(i * r + k)]) * b.values()[size_t(k * n + j)];
    return out;
  };
  {  // LoHa on the fused qkv, rank 3, alpha 6: scale 2.
    const std::string m = "lora_unet_double_blocks_0_img_attn_qkv";
    const Tensor w1a = random_matrix(rng, {3 * C, 3}, 0.3f), w1b = random_matrix(rng, {3, C}, 0.3f);
    const Tensor w2a = random_matrix(rng, {3 * C, 3}, 0.3f), w2b = random_matrix(rng, {3, C}, 0.3f);
    file[m + ".hada_w1_a"] = w1a, file[m + ".hada_w1_b"] = w1b, file[m + ".hada_w2_a"] = w2a, file[m + ".hada_w2_b"] = w2b;
    file[m + ".alpha"] = Tensor({}, {6.0f});
    std::vector<double> d = product(w1a, w1b);
    const std::vector<double> d2 = product(w2a, w2b);
    for (size_t i = 0; i < d.size(); ++i) d[i] *= d2[i] * 2.0;
    expected.push_back({"double_blocks.0.img_attn.qkv", d});
  }
  {  // LoKr on linear2: w1 [4, 8] whole, w2 = w2a [C/4, 2] · w2b [2, K2/8], alpha 4 over rank 2: scale 2.
    const std::string m = "single_blocks.0.linear2";
    const Tensor w1 = random_matrix(rng, {4, 8}, 0.5f), w2a = random_matrix(rng, {C / 4, 2}, 0.3f),
                 w2b = random_matrix(rng, {2, K2 / 8}, 0.3f);
    file[m + ".lokr_w1"] = w1, file[m + ".lokr_w2_a"] = w2a, file[m + ".lokr_w2_b"] = w2b, file[m + ".alpha"] = Tensor({}, {4.0f});
    const std::vector<double> w2 = product(w2a, w2b);
    const int64_t c = C / 4, e = K2 / 8;
    std::vector<double> d(size_t(C * K2));
    for (int64_t n = 0; n < C; ++n)
      for (int64_t k = 0; k < K2; ++k) d[size_t(n * K2 + k)] = 2.0 * w1.values()[size_t((n / c) * 8 + k / e)] * w2[size_t((n % c) * e + k % e)];
    expected.push_back({"single_blocks.0.linear2", d});
  }
  {  // LoKr with both factors whole on an MLP: scale 1, alpha ignored.
    const std::string m = "lora_unet_double_blocks_1_img_mlp_2";
    const Tensor w1 = random_matrix(rng, {16, 32}, 0.4f), w2 = random_matrix(rng, {C / 16, M / 32}, 0.4f);
    file[m + ".lokr_w1"] = w1, file[m + ".lokr_w2"] = w2, file[m + ".alpha"] = Tensor({}, {5.0f});
    const int64_t c = C / 16, e = M / 32;
    std::vector<double> d(size_t(C * M));
    for (int64_t n = 0; n < C; ++n)
      for (int64_t k = 0; k < M; ++k) d[size_t(n * M + k)] = double(w1.values()[size_t((n / c) * 32 + k / e)]) * w2.values()[size_t((n % c) * e + k % e)];
    expected.push_back({"double_blocks.1.img_mlp.2", d});
  }
  const io::LoraFile lora = io::LoraFile::open(write_tensors(file, "lycoris.safetensors"));
  EXPECT_TRUE(lora.unmatched().empty());

  // The merge, exact and rounded to bf16 as the engine stores it.
  TensorMap merged, rounded;
  for (const auto& [name, v] : base_->tensors()) merged[name] = v.to_f32();
  for (const Dense& d : expected) {
    Tensor& w = merged.at(d.target + ".weight");
    ASSERT_EQ(size_t(w.numel()), d.delta.size()) << d.target;
    for (size_t i = 0; i < d.delta.size(); ++i) w.values()[i] = float(double(w.values()[i]) + d.delta[i]);
  }
  rounded = merged;
  for (const Dense& d : expected)
    for (float& x : rounded.at(d.target + ".weight").values()) x = round_bf16(x);

  ChromaModel model = base_model();
  const Output base = run(model);
  const LoraSetting setting[] = {{lora, 1.0f}};
  model.set_loras(setting, LoraMode::Runtime);  // merged all the same
  ChromaWeights weights = model.weights();
  const auto layers = linear_layers(weights);
  int64_t moved = 0;
  for (const Dense& d : expected) {
    int64_t row = 0;
    const Tensor& m = merged.at(d.target + ".weight");
    const Tensor original = base_->get(d.target + ".weight").to_f32();
    for (const LinearWeights* block : layers.at(d.target)) {
      EXPECT_EQ(block->weight.dtype, DType::BF16) << d.target;
      EXPECT_TRUE(block->lora.empty() && block->dense_lora.empty()) << d.target;
      const Tensor got = block->weight.to_f32();
      for (int64_t i = 0; i < got.numel(); ++i) {
        const size_t at = size_t(row * m.dim(1) + i);
        const double exact = m.values()[at], bound = std::ldexp(std::abs(exact), -8) +
                                                 std::ldexp(std::abs(original.values()[at]) + std::abs(d.delta[at]), -20);
        ASSERT_LE(std::abs(got.values()[size_t(i)] - exact), bound) << d.target << " at " << at;
        moved += std::abs(d.delta[at]) > 2 * bound;
      }
      row += block->weight.dim(0);
    }
  }
  EXPECT_GT(moved, 10000);
  const Output want = run(ChromaModel(io::WeightStore::open(write_tensors(rounded, "merged-lycoris.safetensors"))));
  const Output got = run(model);
  EXPECT_GT(rel_diff(got.velocity, base.velocity), 100 * kForwardTol.rel);
  expect_close("lycoris velocity", got.velocity, want.velocity, test::kEndToEndTol);
  expect_close("lycoris mod_vectors", got.mods, want.mods, test::kEndToEndTol);
  // Back to the base model exactly.
  model.set_loras({}, LoraMode::Runtime);
  EXPECT_EQ(run(model).velocity.to_vector(), base.velocity.to_vector());
}

// ---- bad files: one chroma::Error naming the file and the tensor ------------------------------

// Runs `f`, expecting chroma::Error whose message holds every one of `parts`.
template <typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << parts.front();
  } catch (const Error& e) {
    const std::string msg = e.what();
    std::printf("  error: %s\n", msg.c_str());
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

TEST_F(Lora, BadFilesAreErrorsNamingFileAndTensor) {
  ChromaModel model = base_model();
  const LoraSetting good[] = {{io::LoraFile::open(write_lora(Layout::BflLoraAB)), 1.0f}};
  model.set_loras(good);
  const Output before = run(model);
  auto apply = [&](const std::string& path) {
    const LoraSetting lora[] = {{io::LoraFile::open(path), 1.0f}};
    model.set_loras(lora);
  };
  std::mt19937 rng(5);
  const Tensor a = random_matrix(rng, {kRank, hidden_}, 0.1f);

  // Nothing in it adapts this model.
  std::string p = write_tensors({{"lora_te1_encoder_fc1.lora_down.weight", a}}, "lora-nothing.safetensors");
  expect_error([&] { apply(p); }, {p, "adapts no layer", "lora_te1_encoder_fc1.lora_down.weight"});

  // A of the wrong width for its layer.
  TensorMap t;
  t["double_blocks.0.img_attn.proj.lora_A.weight"] = Tensor({kRank, hidden_ + 1});
  t["double_blocks.0.img_attn.proj.lora_B.weight"] = Tensor({hidden_, kRank});
  p = write_tensors(t, "lora-width.safetensors");
  expect_error([&] { apply(p); }, {p, "double_blocks.0.img_attn.proj.lora_A.weight", "double_blocks.0.img_attn.proj"});

  // B of the wrong height (a fused qkv LoRA with the rows of one part).
  t.clear();
  t["double_blocks.0.img_attn.qkv.lora_A.weight"] = Tensor({kRank, hidden_});
  t["double_blocks.0.img_attn.qkv.lora_B.weight"] = Tensor({hidden_, kRank});
  p = write_tensors(t, "lora-height.safetensors");
  expect_error([&] { apply(p); }, {p, "double_blocks.0.img_attn.qkv.lora_B.weight", "rows"});

  // A and B of different ranks.
  t.clear();
  t["lora_unet_single_blocks_0_linear2.lora_down.weight"] = Tensor({kRank, 5 * hidden_});
  t["lora_unet_single_blocks_0_linear2.lora_up.weight"] = Tensor({hidden_, kRank - 1});
  p = write_tensors(t, "lora-rank.safetensors");
  expect_error([&] { io::LoraFile::open(p); },
               {p, "lora_unet_single_blocks_0_linear2.lora_down.weight", "lora_unet_single_blocks_0_linear2.lora_up.weight", "rank"});

  // A without B.
  t.erase("lora_unet_single_blocks_0_linear2.lora_up.weight");
  p = write_tensors(t, "lora-half.safetensors");
  expect_error([&] { io::LoraFile::open(p); }, {p, "lora_unet_single_blocks_0_linear2", "no up"});

  // Tucker-decomposed LyCORIS (convolution) factors: refused by name, not half applied.
  for (const char* key : {"lora_unet_double_blocks_0_img_attn_qkv.hada_t1", "lora_unet_single_blocks_0_linear1.lokr_t2"}) {
    p = write_tensors({{key, a}}, "lora-lycoris.safetensors");
    expect_error([&] { io::LoraFile::open(p); }, {p, key, "not supported"});
  }
  // A LoHa with a factor missing, a LoKr factor stored twice, LoRA and LoHa tensors on one module.
  p = write_tensors({{"lora_unet_double_blocks_0_img_attn_proj.hada_w1_a", a}, {"lora_unet_double_blocks_0_img_attn_proj.hada_w1_b", a}},
                    "lora-loha-half.safetensors");
  expect_error([&] { io::LoraFile::open(p); }, {p, "lora_unet_double_blocks_0_img_attn_proj", "hada_w2_a"});
  p = write_tensors({{"single_blocks.0.linear2.lokr_w1", a}, {"single_blocks.0.linear2.lokr_w1_a", a},
                     {"single_blocks.0.linear2.lokr_w1_b", a}, {"single_blocks.0.linear2.lokr_w2", a}},
                    "lora-lokr-twice.safetensors");
  expect_error([&] { io::LoraFile::open(p); }, {p, "single_blocks.0.linear2", "both whole and decomposed"});
  p = write_tensors({{"single_blocks.0.linear2.lora_A.weight", a}, {"single_blocks.0.linear2.hada_w1_a", a}},
                    "lora-mixed.safetensors");
  expect_error([&] { io::LoraFile::open(p); }, {p, "single_blocks.0.linear2", "mixes adapter kinds"});
  // A LoKr whose Kronecker product does not fit its layer.
  p = write_tensors({{"single_blocks.0.linear2.lokr_w1", Tensor({4, 4})}, {"single_blocks.0.linear2.lokr_w2", Tensor({3, 3})}},
                    "lora-lokr-shape.safetensors");
  expect_error([&] { apply(p); }, {p, "single_blocks.0.linear2", "[12, 12]"});

  // A truncated file and a file that is not safetensors.
  const std::string whole = write_lora(Layout::Kohya, "-whole");
  p = temp_path("lora-truncated.safetensors").string();
  std::filesystem::copy_file(whole, p, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(p, std::filesystem::file_size(p) / 2);
  expect_error([&] { io::LoraFile::open(p); }, {p});
  p = temp_path("lora-text.safetensors").string();
  std::ofstream(p) << "this is not a LoRA\n";
  expect_error([&] { io::LoraFile::open(p); }, {p});

  // After every failed set_loras the model still has the good LoRA.
  const Output after = run(model);
  EXPECT_EQ(after.velocity.to_vector(), before.velocity.to_vector());
}

}  // namespace
}  // namespace chroma::dit

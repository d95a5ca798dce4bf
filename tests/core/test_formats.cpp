// Checkpoint formats (io/formats.h, io/name_tables.h): detection from tensor names, and the diffusers
// and ComfyUI fp8-scaled layouts of the reference mini checkpoints read back under the original names.
#include <cmath>

#include "checkpoint_conversion.h"
#include "io/formats.h"
#include "io/name_tables.h"
#include "io/safetensors.h"
#include "testdata.h"

namespace chroma::io {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_MINI_CHECKPOINTS() \
  if (!test::mini_checkpoints_exist()) CHROMA_REQUIRE_FILE(test::reference_path("chroma-mini.safetensors") + " (and t5-mini, ae-mini, spiece.model)")

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(test::temp_path("formats-" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// Raw bytes of a plain view, for "same stored data" checks.
std::string bytes_of(const TensorView& v) { return std::string(static_cast<const char*>(v.data), v.nbytes); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(NameTables, MapExamplesFromTheSpec) {
  // chroma-spec.md §1.2
  auto m = map_name(diffusers_dit_names(), "transformer_blocks.3.attn.add_k_proj.bias");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->original, "double_blocks.3.txt_attn.qkv.bias");
  EXPECT_EQ(m->part, 1);
  EXPECT_EQ(m->parts, 3);
  m = map_name(diffusers_dit_names(), "single_transformer_blocks.12.proj_mlp.weight");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->original, "single_blocks.12.linear1.weight");
  EXPECT_EQ(m->part, 3);
  EXPECT_EQ(m->parts, 4);
  EXPECT_EQ(map_name(diffusers_dit_names(), "single_transformer_blocks.1.proj_out.weight")->original,
            "single_blocks.1.linear2.weight");
  EXPECT_EQ(map_name(diffusers_dit_names(), "proj_out.bias")->original, "final_layer.linear.bias");
  EXPECT_EQ(map_name(diffusers_dit_names(), "distilled_guidance_layer.norms.4.weight")->original,
            "distilled_guidance_layer.norms.4.scale");
  EXPECT_FALSE(map_name(diffusers_dit_names(), "time_text_embed.mod_proj"));
  // chroma-spec.md §1.4: up blocks reversed, nin_shortcut renamed, attention 1×1 convs flagged
  m = map_name(diffusers_vae_names(), "decoder.up_blocks.0.resnets.2.conv_shortcut.weight", 4);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->original, "decoder.up.3.block.2.nin_shortcut.weight");
  EXPECT_EQ(map_name(diffusers_vae_names(), "decoder.up_blocks.3.upsamplers.0.conv.bias", 4)->original,
            "decoder.up.0.upsample.conv.bias");
  m = map_name(diffusers_vae_names(), "encoder.mid_block.attentions.0.to_out.0.weight");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->original, "encoder.mid.attn_1.proj_out.weight");
  EXPECT_TRUE(m->conv1x1);
}

TEST(Formats, DetectsTheOriginalCheckpoints) {
  REQUIRE_MINI_CHECKPOINTS();
  test::MiniCheckpoints mini;
  EXPECT_EQ(detect_format(mini.dit->tensors()), (Format{ModelKind::DiT, Naming::Original, false}));
  EXPECT_EQ(detect_format(mini.t5->tensors()), (Format{ModelKind::T5, Naming::Original, false}));
  EXPECT_EQ(detect_format(mini.vae->tensors()), (Format{ModelKind::VAE, Naming::Original, false}));
  EXPECT_EQ(detect_format({{"a", TensorView{}}}).kind, ModelKind::Unknown);
}

// Every original tensor is present under its name with the original dtype, shape and values, and
// nothing else is (the diffusers layout is lossless).
void expect_same_tensors(const WeightStore& got, const SafetensorsFile& want) {
  EXPECT_EQ(got.tensors().size(), want.tensors().size());
  for (const auto& [name, w] : want.tensors()) {
    const TensorView* g = got.find(name);
    ASSERT_NE(g, nullptr) << name;
    EXPECT_EQ(g->dtype, w.dtype) << name;
    ASSERT_EQ(shape_str(g->shape), shape_str(w.shape)) << name;
    EXPECT_EQ(g->to_f32().to_vector(), w.to_f32().to_vector()) << name;
  }
}

TEST(Formats, DiffusersLayoutReadsAsTheOriginal) {
  REQUIRE_MINI_CHECKPOINTS();
  TempDir dir("diffusers");
  test::write_diffusers_layout(dir.path);
  test::MiniCheckpoints mini;

  const WeightStore dit = WeightStore::open((dir.path / "transformer").string());
  EXPECT_EQ(dit.format(), (Format{ModelKind::DiT, Naming::Diffusers, false}));
  expect_same_tensors(dit, *mini.dit);
  const WeightStore t5 = WeightStore::open((dir.path / "text_encoder").string());
  EXPECT_EQ(t5.format(), (Format{ModelKind::T5, Naming::Original, false}));
  expect_same_tensors(t5, *mini.t5);
  const WeightStore vae = WeightStore::open((dir.path / "vae").string());
  EXPECT_EQ(vae.format(), (Format{ModelKind::VAE, Naming::Diffusers, false}));
  expect_same_tensors(vae, *mini.vae);

  // The joined qkv is no copy: its row blocks are the stored to_q / to_k / to_v themselves.
  const TensorView& qkv = dit.require("double_blocks.1.img_attn.qkv.weight");
  const int64_t C = qkv.dim(1);
  ASSERT_TRUE(qkv.parts);
  EXPECT_EQ(qkv.data, nullptr);
  const TensorView k = qkv.rows(C, 2 * C);
  EXPECT_FALSE(k.parts);
  EXPECT_EQ(k.name, "transformer_blocks.1.attn.to_k.weight");
  EXPECT_EQ(bytes_of(k), bytes_of(mini.dit->get("double_blocks.1.img_attn.qkv.weight").rows(C, 2 * C)));
  // A range across parts stays a (smaller) joined view with the right values.
  const TensorView across = qkv.rows(C / 2, 2 * C + 3);
  ASSERT_TRUE(across.parts);
  EXPECT_EQ(across.parts->size(), 3u);
  EXPECT_EQ(across.to_f32().to_vector(), mini.dit->get("double_blocks.1.img_attn.qkv.weight").rows(C / 2, 2 * C + 3).to_f32().to_vector());
}

TEST(Formats, Fp8ScaledReadsAsDequantisedWeights) {
  REQUIRE_MINI_CHECKPOINTS();
  TempDir dir("fp8");
  test::write_fp8_scaled_folder(dir.path);
  test::MiniCheckpoints mini;

  WeightStore dit = WeightStore::open((dir.path / "a.safetensors").string());
  EXPECT_EQ(dit.format(), (Format{ModelKind::DiT, Naming::Original, true}));
  dit.strip_prefix("model.diffusion_model.");  // the marker and scales are gone, so every name has it
  EXPECT_EQ(dit.tensors().size(), mini.dit->tensors().size());
  const WeightStore t5 = WeightStore::open((dir.path / "b.safetensors").string());
  EXPECT_EQ(t5.format(), (Format{ModelKind::T5, Naming::Original, true}));
  EXPECT_EQ(t5.tensors().size(), mini.t5->tensors().size());

  // e4m3 keeps 3 mantissa bits: rounding moves a normal value by at most 2⁻⁴ of itself, a subnormal
  // (below 2⁻⁶·scale) by at most half its spacing 2⁻⁹·scale. A wrong or missing scale breaks this.
  int64_t checked = 0;
  for (const WeightStore* store : std::initializer_list<const WeightStore*>{&dit, &t5})
    for (const auto& [name, v] : store->tensors()) {
      const Tensor want = (store == &dit ? mini.dit : mini.t5)->get(name).to_f32();
      const Tensor got = v.to_f32();
      // Every linear weight is quantised; the embedding tables and 1-D tensors are not.
      const bool linear = name.ends_with(".weight") && v.shape.size() == 2 && name != "shared.weight" &&
                          name.find("relative_attention_bias") == std::string::npos;
      EXPECT_EQ(v.dtype == DType::F8_E4M3, linear) << name;
      if (v.dtype != DType::F8_E4M3) {
        EXPECT_EQ(got.to_vector(), want.to_vector()) << name << " (not quantised: unchanged)";
        continue;
      }
      EXPECT_NE(v.scale, 1.0f) << name;
      for (size_t i = 0; i < want.values().size(); ++i) {
        const double bound = std::max(std::fabs(double(want.values()[i])) * 0x1p-4, double(v.scale) * 0x1p-10) * (1 + 1e-6);
        ASSERT_LE(std::fabs(double(got.values()[i]) - double(want.values()[i])), bound) << name << "[" << i << "]";
      }
      ++checked;
    }
  EXPECT_EQ(checked, 35 + 14);  // chroma-mini: 14 + 2·8 + 2·2 + 1 linear weights; t5-mini: 7 per block × 2
}

// Writes the diffusers transformer of chroma-mini with `edit` applied to its entries.
std::string write_edited_transformer(const fs::path& dir, const std::function<void(std::vector<test::Entry>&)>& edit) {
  test::MiniCheckpoints mini;
  std::vector<test::Entry> entries = test::diffusers_dit(*mini.dit);
  edit(entries);
  write_safetensors_views((dir / "t.safetensors").string(), test::named_views(entries));
  return (dir / "t.safetensors").string();
}

TEST(Formats, ClearErrorsForBrokenDiffusersFiles) {
  REQUIRE_MINI_CHECKPOINTS();
  TempDir dir("broken");
  auto erase = [](std::vector<test::Entry>& e, const std::string& name) {
    std::erase_if(e, [&](const test::Entry& x) { return x.name == name; });
  };
  auto find = [](std::vector<test::Entry>& e, const std::string& name) -> test::Entry& {
    return *std::find_if(e.begin(), e.end(), [&](const test::Entry& x) { return x.name == name; });
  };

  // A missing block of a joined projection names the original and the blocks found.
  std::string path = write_edited_transformer(dir.path, [&](auto& e) { erase(e, "transformer_blocks.0.attn.to_k.weight"); });
  std::string msg = error_of([&] { WeightStore::open(path); });
  EXPECT_NE(msg.find("'double_blocks.0.img_attn.qkv.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block 1 is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("transformer_blocks.0.attn.to_q.weight"), std::string::npos) << msg;

  // A block with another width cannot be joined.
  path = write_edited_transformer(dir.path, [&](auto& e) {
    find(e, "single_transformer_blocks.1.attn.to_v.weight").view = find(e, "x_embedder.weight").view;
  });
  msg = error_of([&] { WeightStore::open(path); });
  EXPECT_NE(msg.find("'single_transformer_blocks.1.attn.to_v.weight' is BF16 [256, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'single_blocks.1.linear1.weight'"), std::string::npos) << msg;

  // Both spellings of one tensor.
  path = write_edited_transformer(dir.path, [&](auto& e) { e.push_back({"img_in.weight", find(e, "x_embedder.weight").view}); });
  msg = error_of([&] { WeightStore::open(path); });
  EXPECT_NE(msg.find("map to 'img_in.weight'"), std::string::npos) << msg;

  // A misshaped single tensor passes the translation and is reported by the model's shape check.
  path = write_edited_transformer(dir.path, [&](auto& e) {
    TensorView& v = find(e, "context_embedder.weight").view;
    v = v.rows(0, v.dim(0) - 1);
  });
  const WeightStore s = WeightStore::open(path);
  msg = error_of([&] { s.require("txt_in.weight", {256, 128}); });
  EXPECT_NE(msg.find("'txt_in.weight' has shape [255, 128], expected [256, 128]"), std::string::npos) << msg;
  msg = error_of([&] { s.require("double_blocks.7.img_attn.qkv.weight"); });
  EXPECT_NE(msg.find("read as Chroma DiT, diffusers names"), std::string::npos) << msg;
}

TEST(Formats, ClearErrorsForBrokenScales) {
  TempDir dir("scales");
  const Tensor w({2, 2}, {1, 2, 3, 4}), s({2}, {1, 1}), one({}, {0.5f});
  write_safetensors((dir.path / "orphan.safetensors").string(), {{"x.weight", &w}, {"y.scale_weight", &one}});
  std::string msg = error_of([&] { WeightStore::open((dir.path / "orphan.safetensors").string()); });
  EXPECT_NE(msg.find("'y.scale_weight' has no weight 'y.weight'"), std::string::npos) << msg;
  write_safetensors((dir.path / "vector.safetensors").string(), {{"x.weight", &w}, {"x.scale_weight", &s}});
  msg = error_of([&] { WeightStore::open((dir.path / "vector.safetensors").string()); });
  EXPECT_NE(msg.find("per-channel or block scales are not"), std::string::npos) << msg;
  // A valid scale multiplies the widened values (F32 storage here: the scale is not fp8-specific).
  write_safetensors((dir.path / "ok.safetensors").string(), {{"x.weight", &w}, {"x.scale_weight", &one}});
  const WeightStore ok = WeightStore::open((dir.path / "ok.safetensors").string());
  EXPECT_TRUE(ok.format().scaled_fp8);
  EXPECT_EQ(ok.require("x.weight", {2, 2}).to_f32().to_vector(), (std::vector<float>{0.5f, 1, 1.5f, 2}));
  EXPECT_FALSE(ok.has("x.scale_weight"));
}

TEST(Formats, E4m3EncoderRoundsToNearestEven) {
  // Exact checks of the test fixture's quantiser: representable values map to themselves, halfway
  // points go to the even code, and overflow saturates at 448 (e4m3fn has no infinity).
  for (int c = 0; c < 127; ++c) EXPECT_EQ(test::to_e4m3(f8e4m3_to_f32(uint8_t(c))), c);
  EXPECT_EQ(test::to_e4m3(-1.0f), 0x80 | test::to_e4m3(1.0f));
  EXPECT_EQ(test::to_e4m3(1.0625f), test::to_e4m3(1.0f));  // 1 + 2⁻⁴ is halfway between 1 (code 56) and 1.125 (57)
  EXPECT_EQ(test::to_e4m3(1.1875f), test::to_e4m3(1.25f));  // halfway between 1.125 (57) and 1.25 (58)
  EXPECT_EQ(test::to_e4m3(1000.0f), 126);
}

}  // namespace
}  // namespace chroma::io

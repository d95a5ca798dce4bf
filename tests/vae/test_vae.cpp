// Flux VAE (src/models/vae) against reference case f (testdata/reference/README.md §5 "case f",
// ae-mini weights §4): config inference, decode and encode with every stored intermediate, and
// the errors a user can cause (missing or misshaped tensors, wrong input shapes).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include "models/vae/vae.h"
#include "tensor/trace.h"
#include "testdata.h"

namespace chroma::vae {
namespace {

using test::expect_close;
using test::kForwardTol;
using test::reference_path;

using Recorder = test::RecordingTracer;

// Records every traced tensor for the lifetime of the object, under the reference files' "inter." prefix.
struct ScopedRecorder {
  Recorder rec;
  TracePrefix prefix{"inter."};
  ScopedTracer installed{&rec};
};

// The reference stores a leading batch 1 ([1, C, H, W]); traced activations are [C, H, W].
Tensor drop_leading_ones(Tensor t) {
  while (t.rank() > 1 && t.dim(0) == 1) t.reshape(Shape(t.shape.begin() + 1, t.shape.end()));
  return t;
}

// Compares got with the reference tensor `name` and prints the error (for the report).
void compare(const std::string& name, const Tensor& got, const io::WeightStore& ref) {
  Tensor want = drop_leading_ones(ref.require(name).to_f32());
  Tensor have = drop_leading_ones(got);
  test::Diff d = test::diff(have, want);
  std::printf("  %-24s max abs err %.3g (ref max %.3g, rel %.3g)\n", name.c_str(), d.max_abs, d.ref_max,
              d.max_abs / std::max(1.0, d.ref_max));
  expect_close(name, have, want, kForwardTol);
}

// Compares every "inter.<stage>.*" tensor of the case file with what the model traced.
void compare_intermediates(const std::string& stage, const Recorder& rec, const io::WeightStore& ref) {
  int n = 0;
  for (const auto& [name, view] : ref.tensors()) {
    if (!name.starts_with("inter." + stage + ".")) continue;
    auto it = rec.values.find(name);
    ASSERT_NE(it, rec.values.end()) << "the model did not trace " << name;
    compare(name, it->second, ref);
    ++n;
  }
  EXPECT_GT(n, 0) << "no inter." << stage << ".* tensors in the case file";
}

TEST(VaeConfig, InferredFromAeMini) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  const VaeConfig cfg = VaeConfig::from_weights(ws);
  // Values from the file's own config metadata (README §4 ae-mini).
  EXPECT_EQ(cfg.ch, 32);
  EXPECT_EQ(cfg.ch_mult, (std::vector<int>{1, 2, 4, 4}));
  EXPECT_EQ(cfg.num_res_blocks, 2);
  EXPECT_EQ(cfg.z_channels, 16);
  EXPECT_EQ(cfg.in_channels, 3);
  EXPECT_EQ(cfg.out_channels, 3);
  EXPECT_EQ(cfg.downscale(), 8);
  // Not inferable: the Flux constants.
  EXPECT_FLOAT_EQ(cfg.scale_factor, 0.3611f);
  EXPECT_FLOAT_EQ(cfg.shift_factor, 0.1159f);
}

TEST(VaeDecoder, MatchesCaseF) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  CHROMA_REQUIRE_FILE(reference_path("case-f-vae.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  const io::WeightStore ref = io::WeightStore::open(reference_path("case-f-vae.safetensors"));
  const Decoder decoder(ws);
  ScopedRecorder scoped;
  const Tensor image = decoder.decode(ref.require("input.latent").to_f32());
  compare_intermediates("decode", scoped.rec, ref);
  compare("output.decoded", image, ref);
  EXPECT_EQ(image.rank(), 4);  // NCHW at the API
}

TEST(VaeEncoder, MatchesCaseF) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  CHROMA_REQUIRE_FILE(reference_path("case-f-vae.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  const io::WeightStore ref = io::WeightStore::open(reference_path("case-f-vae.safetensors"));
  const Encoder encoder(ws);
  ScopedRecorder scoped;
  const Tensor latent = encoder.encode(ref.require("input.image").to_f32());
  compare_intermediates("encode", scoped.rec, ref);
  compare("output.latent", latent, ref);
  EXPECT_EQ(latent.rank(), 4);
}

// ---- files a user may have: one half only, a tensor missing or misshaped ---------------------

// ae-mini's tensors (widened to f32: exact) whose names start with `prefix`, as owned tensors to edit.
std::map<std::string, Tensor> ae_mini_tensors(const std::string& prefix) {
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  std::map<std::string, Tensor> out;
  for (const auto& [name, view] : ws.tensors())
    if (name.starts_with(prefix)) out[name] = view.to_f32();
  return out;
}

// A safetensors file in the temp folder, removed when the object goes.
struct TempWeights {
  std::string path;
  explicit TempWeights(const std::map<std::string, Tensor>& tensors) {
    path = (std::filesystem::temp_directory_path() /
            ("chroma-test-vae-" + std::to_string(::getpid()) + ".safetensors"))
               .string();
    std::vector<io::NamedTensor> entries;
    for (const auto& [name, t] : tensors) entries.push_back({name, &t});
    io::write_safetensors(path, entries);
  }
  ~TempWeights() { std::filesystem::remove(path); }
};

// Runs `build` and expects a chroma::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F build, std::initializer_list<std::string> parts) {
  try {
    build();
    ADD_FAILURE() << "no chroma::Error thrown";
  } catch (const Error& e) {
    for (const std::string& part : parts)
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what();
  }
}

TEST(VaeDecoder, DecoderOnlyFileDecodesAndHasNoEncoder) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  CHROMA_REQUIRE_FILE(reference_path("case-f-vae.safetensors"));
  const TempWeights file(ae_mini_tensors("decoder."));
  const io::WeightStore ws = io::WeightStore::open(file.path);
  const VaeConfig cfg = VaeConfig::from_weights(ws);
  EXPECT_EQ(cfg.ch, 32);
  EXPECT_EQ(cfg.ch_mult, (std::vector<int>{1, 2, 4, 4}));
  EXPECT_EQ(cfg.num_res_blocks, 2);
  EXPECT_EQ(cfg.z_channels, 16);

  const io::WeightStore ref = io::WeightStore::open(reference_path("case-f-vae.safetensors"));
  const Tensor image = Decoder(ws).decode(ref.require("input.latent").to_f32());
  compare("output.decoded", image, ref);  // f32 weights hold the bf16 values exactly
  expect_error([&] { Encoder e(ws); }, {"encoder.conv_in.weight", "missing"});
}

TEST(VaeDecoder, MissingTensorIsNamed) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  auto tensors = ae_mini_tensors("decoder.");
  tensors.erase("decoder.up.1.block.2.conv2.bias");
  const TempWeights file(tensors);
  const io::WeightStore ws = io::WeightStore::open(file.path);
  expect_error([&] { Decoder d(ws); }, {"decoder.up.1.block.2.conv2.bias", "missing"});
}

TEST(VaeDecoder, MisshapedTensorIsNamed) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  auto tensors = ae_mini_tensors("decoder.");
  // A 1×1 conv squeezed to a Linear weight, as diffusers stores it: not a BFL file.
  tensors["decoder.mid.attn_1.q.weight"].reshape({128, 128});
  const TempWeights file(tensors);
  const io::WeightStore ws = io::WeightStore::open(file.path);
  expect_error([&] { Decoder d(ws); }, {"decoder.mid.attn_1.q.weight", "[128, 128]", "[128, 128, 1, 1]"});
}

TEST(VaeEncoder, MisshapedTensorIsNamed) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  auto tensors = ae_mini_tensors("encoder.");
  tensors["encoder.down.2.downsample.conv.bias"] = Tensor({64});  // level 2 has 128 channels
  const TempWeights file(tensors);
  const io::WeightStore ws = io::WeightStore::open(file.path);
  expect_error([&] { Encoder e(ws); }, {"encoder.down.2.downsample.conv.bias", "[64]", "[128]"});
}

TEST(VaeConfig, NotAVaeFile) {
  CHROMA_REQUIRE_FILE(reference_path("case-f-vae.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("case-f-vae.safetensors"));
  expect_error([&] { VaeConfig::from_weights(ws); }, {"decoder.conv_in.weight", "encoder.conv_in.weight"});
}

TEST(VaeDecoder, RejectsLatentWithWrongChannels) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  const Decoder decoder(ws);
  expect_error([&] { decoder.decode(Tensor({1, 4, 8, 8})); }, {"latent", "[1, 4, 8, 8]", "16"});
  expect_error([&] { decoder.decode(Tensor({16, 8, 8})); }, {"latent", "[16, 8, 8]"});
}

TEST(VaeEncoder, RejectsImageSizeNotMultipleOf8) {
  CHROMA_REQUIRE_FILE(reference_path("ae-mini.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(reference_path("ae-mini.safetensors"));
  const Encoder encoder(ws);
  expect_error([&] { encoder.encode(Tensor({1, 3, 60, 64})); }, {"image", "64x60", "multiples of 8"});
  expect_error([&] { encoder.encode(Tensor({1, 4, 64, 64})); }, {"image", "[1, 4, 64, 64]"});
}

}  // namespace
}  // namespace chroma::vae

// The DiT's weight-free transforms (chroma-spec.md §3.1–§3.3): timestep and modulation-index
// embeddings against reference case a, the RoPE table and patchify against case d
// (testdata/reference/README.md §5), plus exact identities from the spec.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "models/chroma/embeddings.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::expect_close;
using test::kEmbeddingTol;
using test::reference_path;

// Compares and prints the max error, so test logs show how close each quantity is.
void check(const std::string& name, const Tensor& got, const Tensor& ref, test::Tolerance tol) {
  const test::Diff d = test::diff(got, ref);
  std::printf("  %-28s max abs err %.3g (ref max %.3g)\n", name.c_str(), d.max_abs, d.ref_max);
  expect_close(name, got, ref, tol);
}

class TimestepEmbeddingReference : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = reference_path("case-a-timestep-embedding.safetensors");
    CHROMA_REQUIRE_FILE(path);
    case_ = io::SafetensorsFile::open(path);
  }
  std::unique_ptr<io::SafetensorsFile> case_;
};

// Row i of each [5, 16] output belongs to input.t[i].
TEST_F(TimestepEmbeddingReference, Float32Timestep) {
  const Tensor t = case_->get("input.t").to_f32(), ref = case_->get("output.temb16").to_f32();
  ASSERT_EQ(t.numel(), 5);
  for (int64_t i = 0; i < t.numel(); ++i)
    check("temb16 t=" + std::to_string(t.values()[size_t(i)]), timestep_embedding(t.values()[size_t(i)], 16).reshaped({1, 16}),
          ref.rows(i, i + 1), kEmbeddingTol);
}

// The bf16 path rounds t itself, so feeding the float32 t or its bf16 value gives the same vector.
TEST_F(TimestepEmbeddingReference, Bf16Timestep) {
  const Tensor t = case_->get("input.t").to_f32(), t_bf16 = case_->get("input.t_bf16").to_f32();
  const Tensor ref = case_->get("output.temb16_bf16_t").to_f32();
  for (int64_t i = 0; i < t.numel(); ++i) {
    check("temb16_bf16_t t=" + std::to_string(t.values()[size_t(i)]),
          timestep_embedding_bf16(t.values()[size_t(i)], 16).reshaped({1, 16}), ref.rows(i, i + 1), kEmbeddingTol);
    check("temb16_bf16_t (bf16 input)", timestep_embedding_bf16(t_bf16.values()[size_t(i)], 16).reshaped({1, 16}),
          ref.rows(i, i + 1), kEmbeddingTol);
  }
}

TEST_F(TimestepEmbeddingReference, ModulationIndexTable) {
  const Tensor ref = case_->get("output.mod_index_table").to_f32();  // [344, 32]
  check("mod_index_table", mod_index_table(344, 32), ref, kEmbeddingTol);
}

// Spec §3.3: emb(0) is exactly eight 1s (cos 0) then eight 0s (sin 0), in either precision.
TEST(TimestepEmbedding, ZeroIsExact) {
  for (const Tensor& e : {timestep_embedding(0.0f, 16), timestep_embedding_bf16(0.0f, 16)})
    for (int k = 0; k < 16; ++k) EXPECT_EQ(e.values()[size_t(k)], k < 8 ? 1.0f : 0.0f) << k;
}

// Spec §3.3 check values (float64 derivation, so agreement to float32 rounding of args ≤ 1000 rad).
TEST(TimestepEmbedding, SpecValuesAtOne) {
  const float spec[16] = {0.562379f, -0.477410f, 0.862319f, 0.978683f, -0.839072f, -0.999786f, 0.540302f, 0.950415f,
                          0.826880f, 0.878681f,  -0.506366f, 0.205378f, -0.544021f, -0.020684f, 0.841471f, 0.310984f};
  const Tensor e = timestep_embedding(1.0f, 16);
  // float32 args near 1000 rad: ≤ 3e-5 from rounding freq, ≤ 3e-5 from rounding the product;
  // plus 5e-7 for the 6 printed decimals.
  constexpr double kFloat32ArgsAt1000 = 1e-4;
  for (int k = 0; k < 16; ++k) EXPECT_NEAR(e.values()[size_t(k)], spec[k], kFloat32ArgsAt1000) << k;
}

// ---- RoPE and patchify against case d ----

class DitInputsReference : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = reference_path("case-d-dit-forward.safetensors");
    CHROMA_REQUIRE_FILE(path);
    case_ = io::SafetensorsFile::open(path);
  }
  std::unique_ptr<io::SafetensorsFile> case_;
};

// inter.pe_img [1, 1, 64, 64, 2, 2] holds [[cos, −sin], [sin, cos]] per image token and pair; our table
// holds (cos, sin). 14 visible text tokens come first and must be the identity (position 0).
TEST_F(DitInputsReference, RopeTable) {
  ChromaConfig config;
  config.head_dim = 128;
  const Tensor table = rope_table(14, 8, 8, config);
  ASSERT_EQ(shape_str(table.shape), shape_str({78, 64, 2}));

  const Tensor pe = case_->get("inter.pe_img").to_f32();
  Tensor ref({64, 64, 2});
  for (int64_t i = 0; i < 64 * 64; ++i) {
    const float* m = pe.ptr() + i * 4;  // row-major 2×2
    ASSERT_EQ(m[1], -m[2]);
    ASSERT_EQ(m[0], m[3]);
    ref.values()[size_t(2 * i)] = m[0];
    ref.values()[size_t(2 * i + 1)] = m[2];
  }
  check("pe_img", table.rows(14, 78), ref, kEmbeddingTol);
  for (int64_t i = 0; i < 14 * 64; ++i) {
    EXPECT_EQ(table.values()[size_t(2 * i)], 1.0f);
    EXPECT_EQ(table.values()[size_t(2 * i + 1)], 0.0f);
  }
}

// Pure data movement: exact.
TEST_F(DitInputsReference, PatchifyAndInverse) {
  const Tensor latent = case_->get("input.latent").to_f32();  // [1, 16, 16, 16]
  Tensor ref = case_->get("inter.img_packed").to_f32();       // [1, 64, 64]
  ref.reshape({64, 64});
  const Tensor packed = patchify(latent, 2);
  ASSERT_EQ(shape_str(packed.shape), shape_str(ref.shape));
  EXPECT_EQ(packed.to_vector(), ref.to_vector());
  EXPECT_EQ(unpatchify(packed, 16, 16, 2).to_vector(), latent.to_vector());
}

// A non-square latent: every value lands in its documented slot and comes back.
TEST(Patchify, NonSquareLayoutAndRoundTrip) {
  Tensor latent({1, 16, 4, 6});
  for (int64_t i = 0; i < latent.numel(); ++i) latent.values()[size_t(i)] = float(i);
  const Tensor packed = patchify(latent, 2);  // [2·3, 64]
  ASSERT_EQ(shape_str(packed.shape), shape_str({6, 64}));
  // token t = i·3 + j, feature f = c·4 + dy·2 + dx ← latent[c, 2i + dy, 2j + dx]
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t c = 0; c < 16; ++c)
        for (int64_t dy = 0; dy < 2; ++dy)
          for (int64_t dx = 0; dx < 2; ++dx)
            ASSERT_EQ(packed.values()[size_t((i * 3 + j) * 64 + c * 4 + dy * 2 + dx)],
                      latent.values()[size_t((c * 4 + 2 * i + dy) * 6 + 2 * j + dx)]);
  EXPECT_EQ(unpatchify(packed, 4, 6, 2).to_vector(), latent.to_vector());
  EXPECT_THROW(patchify(Tensor({1, 16, 5, 6}), 2), Error);
  EXPECT_THROW(patchify(Tensor({16, 4, 6}), 2), Error);
}

}  // namespace
}  // namespace chroma::dit

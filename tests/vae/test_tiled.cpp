// Tiled VAE decoding (models/vae/tiled.h): tile placement, the blend as a partition of unity (a
// decoder that acts pixel by pixel must give the same image tiled or not), one tile = the whole
// decode bit for bit on ae-mini, the measured difference of real tiles, per-tile callbacks and
// cancellation, and bad tilings.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "models/vae/tiled.h"
#include "models/vae/vae.h"
#include "tensor/error.h"
#include "testdata.h"

namespace chroma::vae {
namespace {

// Uniform in [−2, 2) from the standard-specified mt19937 bits, the same everywhere.
Tensor random_latent(uint32_t seed, Shape shape) {
  std::mt19937 rng(seed);
  Tensor t(std::move(shape));
  for (float& x : t.values()) x = 4.0f * (float(rng() >> 8) / float(1 << 24)) - 2.0f;
  return t;
}

TEST(VaeTiling, TilesCoverTheSideAndOverlapAtLeastAsAsked) {
  EXPECT_EQ(tile_starts(64, {64, 8}), (std::vector<int>{0}));
  EXPECT_EQ(tile_starts(40, {64, 8}), (std::vector<int>{0}));
  EXPECT_EQ(tile_starts(120, {64, 8}), (std::vector<int>{0, 56}));
  EXPECT_EQ(tile_starts(100, {64, 8}), (std::vector<int>{0, 36}));
  EXPECT_EQ(tile_starts(256, {64, 8}), (std::vector<int>{0, 56, 112, 168, 192}));
  for (int size : {65, 100, 128, 129, 200, 256, 300})
    for (const Tiling t : {Tiling{64, 8}, Tiling{32, 15}, Tiling{16, 0}}) {
      const std::vector<int> s = tile_starts(size, t);
      EXPECT_EQ(s.front(), 0);
      EXPECT_EQ(s.back() + t.tile, size);
      for (size_t i = 1; i < s.size(); ++i) EXPECT_LE(s[i], s[i - 1] + t.tile - t.overlap) << size;
    }
}

// A stand-in decoder that maps each latent pixel to an 8×8 block of its own (three channel mixes
// of the 16): with no spatial interaction, tiling must change nothing but float rounding.
Tensor pixelwise_decode(const Tensor& z) {
  const int64_t h = z.dim(2), w = z.dim(3);
  Tensor out({1, 3, 8 * h, 8 * w});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 8 * h; ++y)
      for (int64_t x = 0; x < 8 * w; ++x) {
        float v = 0;
        for (int64_t k = 0; k < 16; ++k) v += float((c + 1) * (k % 5) - 2) * z.values()[size_t((k * h + y / 8) * w + x / 8)];
        out.values()[size_t((c * 8 * h + y) * 8 * w + x)] = v + 0.001f * float(x % 8);
      }
  return out;
}

TEST(VaeTiling, BlendIsAPartitionOfUnity) {
  const Tensor z = random_latent(1, {1, 16, 40, 52});
  const Tensor whole = pixelwise_decode(z);
  int calls = 0, reported = 0;
  const Tensor tiled = decode_tiled([&](const Tensor& t) { ++calls; return pixelwise_decode(t); }, z, {16, 4},
                                    [&](int done, int total) {
                                      EXPECT_EQ(done, ++reported);
                                      EXPECT_EQ(total, 3 * 4);
                                    });
  EXPECT_EQ(calls, 12);  // starts 0, 12, 24 by 0, 12, 24, 36
  EXPECT_EQ(reported, 12);
  ASSERT_EQ(tiled.shape, whole.shape);
  double worst = 0;
  for (size_t i = 0; i < whole.values().size(); ++i) worst = std::max(worst, double(std::abs(tiled.values()[i] - whole.values()[i])));
  EXPECT_LT(worst, 1e-5);
}

TEST(VaeTiling, OneTileIsTheWholeDecodeAndRealTilesAreClose) {
  CHROMA_REQUIRE_FILE(test::reference_path("ae-mini.safetensors"));
  const io::WeightStore ws = io::WeightStore::open(test::reference_path("ae-mini.safetensors"));
  const Decoder decoder(ws);
  const Tensor z = random_latent(2, {1, 16, 24, 24});
  const auto decode = [&](const Tensor& t) { return decoder.decode(t); };
  const Tensor whole = decoder.decode(z);
  EXPECT_EQ(decode_tiled(decode, z, {24, 4}).to_vector(), whole.to_vector());
  // Real tiles: the decoder's convolutions and mid-block attention see only the tile, so values
  // move, most near tile borders; the blend must keep the image close (a misplaced or unweighted
  // tile is off by the image's own scale).
  const Tensor tiled = decode_tiled(decode, z, {12, 3});
  ASSERT_EQ(tiled.shape, whole.shape);
  double worst = 0, sum = 0, scale = 0;
  for (size_t i = 0; i < whole.values().size(); ++i) {
    const double d = std::abs(double(tiled.values()[i]) - whole.values()[i]);
    worst = std::max(worst, d);
    sum += d;
    scale = std::max(scale, double(std::abs(whole.values()[i])));
  }
  std::printf("  tiled (12, overlap 3) vs whole, ae-mini 192²: max abs %.3g, mean abs %.3g (image max %.3g)\n", worst,
              sum / double(whole.values().size()), scale);
  EXPECT_LT(sum / double(whole.values().size()), 0.05 * scale);
}

TEST(VaeTiling, CancellingBetweenTilesStopsDecoding) {
  const Tensor z = random_latent(1, {1, 16, 40, 40});
  int calls = 0;
  EXPECT_THROW(decode_tiled([&](const Tensor& t) { ++calls; return pixelwise_decode(t); }, z, {16, 4},
                            [](int done, int) {
                              if (done == 2) throw Error("cancelled");
                            }),
               Error);
  EXPECT_EQ(calls, 2);
}

TEST(VaeTiling, BadTilingsAreErrors) {
  const Tensor z = random_latent(1, {1, 16, 8, 8});
  for (const Tiling t : {Tiling{0, 0}, Tiling{16, 8}, Tiling{16, -1}})
    EXPECT_THROW(decode_tiled(pixelwise_decode, z, t), Error) << t.tile << " " << t.overlap;
}

}  // namespace
}  // namespace chroma::vae

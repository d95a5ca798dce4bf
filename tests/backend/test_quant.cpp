// ggml block types (tensor/quant.h): exact decoding of hand-built blocks against the layout formulas,
// f16 scalar conversions, quantize → dequantize error bounds that follow from each format, and the
// linear op widening quantized weights tile by tile.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "reference_ops.h"
#include "tensor/quant.h"
#include "testdata.h"

namespace chroma::quant {
namespace {

constexpr uint16_t kHalfOne = 0x3c00, kHalfHalf = 0x3800, kHalfMinusTwo = 0xc000;

std::vector<float> decode(DType t, const void* block) {
  std::vector<float> y(size_t(traits(t)->block_size));
  traits(t)->dequantize(block, y.data(), int64_t(y.size()));
  return y;
}

// ---- f16 ----

// IEEE binary16 from its definition: (−1)^s · 2^(e−15) · (1 + m/1024), subnormals 2^−14 · m/1024.
float f16_by_definition(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v = e == 0 ? std::ldexp(float(m), -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(float(1024 + m), e - 25);
  return (h & 0x8000) ? -v : v;
}

TEST(F16, EveryHalfRoundTripsAndMatchesTheDefinition) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = chroma::f16_to_f32(uint16_t(h)), ref = f16_by_definition(uint16_t(h));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    ASSERT_EQ(std::memcmp(&f, &ref, 4), 0) << "half 0x" << std::hex << h;
    ASSERT_EQ(f32_to_f16(f), uint16_t(h)) << "half 0x" << std::hex << h;
  }
}

TEST(F16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);      // halfway, even neighbour is 1.0
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);  // halfway, even neighbour is 1 + 2^-9
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);             // half the smallest subnormal → 0 (even)
  EXPECT_EQ(f32_to_f16(3 * 0x1p-25f), 0x0002);         // 1.5 subnormal units → 2
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);             // below the halfway point to 65536 → 65504
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);             // halfway rounds to even = infinity
  EXPECT_EQ(f32_to_f16(-2.0f), kHalfMinusTwo);
}

// ---- exact layouts: raw bytes → values by the formulas in quant.h ----

TEST(BlockLayout, Q8_0) {
  BlockQ8_0 b{kHalfHalf, {}};
  for (int j = 0; j < 32; ++j) b.qs[j] = int8_t(j - 16);
  const auto y = decode(DType::Q8_0, &b);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * float(j - 16)) << j;
}

TEST(BlockLayout, Q4_0LowNibblesFirstThenHigh) {
  BlockQ4_0 b{kHalfOne, {}};
  for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
  const auto y = decode(DType::Q4_0, &b);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], float(j - 8)) << j;
    EXPECT_EQ(y[j + 16], float(15 - j - 8)) << j + 16;
  }
}

TEST(BlockLayout, Q4_1AddsTheMinimum) {
  BlockQ4_1 b{kHalfHalf, kHalfMinusTwo, {}};
  b.qs[0] = 0x3f;  // value 0 = 15, value 16 = 3
  const auto y = decode(DType::Q4_1, &b);
  EXPECT_EQ(y[0], 0.5f * 15 - 2);
  EXPECT_EQ(y[16], 0.5f * 3 - 2);
  EXPECT_EQ(y[5], -2.0f);
}

TEST(BlockLayout, Q5_0FifthBitFromLittleEndianQh) {
  BlockQ5_0 b{kHalfOne, {0x01, 0x00, 0x00, 0x80}, {}};  // bits 0 and 31: values 0 and 31
  const auto y = decode(DType::Q5_0, &b);
  EXPECT_EQ(y[0], 0.0f);    // 16 − 16
  EXPECT_EQ(y[31], 0.0f);   // high nibble of qs[15] with bit 31
  for (int j = 1; j < 31; ++j) EXPECT_EQ(y[j], -16.0f) << j;
}

TEST(BlockLayout, Q5_1) {
  BlockQ5_1 b{kHalfHalf, kHalfOne, {0x00, 0x00, 0x01, 0x00}, {}};  // bit 16: value 16
  b.qs[0] = 0x21;  // value 0 = 1, value 16 = 2 | 16
  const auto y = decode(DType::Q5_1, &b);
  EXPECT_EQ(y[0], 0.5f * 1 + 1);
  EXPECT_EQ(y[16], 0.5f * 18 + 1);
}

// The 12 scale bytes of the K tests. By the packing rule (quant.h):
//   sc0 = 0x41 & 63 = 1        mn0 = scales[4] & 63 = 5
//   sc4 = (0x9A & 15) | (0x41 >> 6) << 4 = 26   mn4 = (0x9A >> 4) | (0x05 >> 6) << 4 = 9
//   sc5 = 0x0B & 15 = 11       mn5 = 0
//   sc6 = 0x0C & 15 = 12       mn6 = 0
//   sc7 = (0x3D & 15) | (0x04 >> 6) << 4 = 13   mn7 = (0x3D >> 4) | (0xC8 >> 6) << 4 = 3 + 48 = 51
const uint8_t kScales[12] = {0x41, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xC8, 0x9A, 0x0B, 0x0C, 0x3D};

TEST(BlockLayout, Q4_KScalesMinsAndNibbleOrder) {
  BlockQ4_K b{kHalfOne, kHalfHalf, {}, {}};
  std::memcpy(b.scales, kScales, 12);
  b.qs[64 + 3] = 0x57;  // chunk 2: value 128+3 (sub-block 4) low = 7, value 160+3 (sub-block 5) high = 5
  b.qs[96 + 2] = 0xF0;  // chunk 3: value 192+2 (sub-block 6) low = 0, value 224+2 (sub-block 7) high = 15
  const auto y = decode(DType::Q4_K, &b);
  EXPECT_EQ(y[0], -0.5f * 5);
  EXPECT_EQ(y[131], 26.0f * 7 - 0.5f * 9);
  EXPECT_EQ(y[163], 11.0f * 5);
  EXPECT_EQ(y[194], 0.0f);
  EXPECT_EQ(y[226], 13.0f * 15 - 0.5f * 51);
}

TEST(BlockLayout, Q5_KHighBitPerSubBlock) {
  BlockQ5_K b{kHalfOne, kHalfHalf, {}, {}, {}};
  std::memcpy(b.scales, kScales, 12);
  b.qs[64 + 3] = 0x57;
  b.qh[3] = 0x10;  // bit 4 = sub-block 4: value 128 + 3 gets 16 added
  const auto y = decode(DType::Q5_K, &b);
  EXPECT_EQ(y[131], 26.0f * 23 - 0.5f * 9);
  EXPECT_EQ(y[163], 11.0f * 5);  // sub-block 5 reads bit 5, unset
}

TEST(BlockLayout, Q6_KSplitLowAndHighBits) {
  BlockQ6_K b{};
  b.d = kHalfOne;
  for (int j = 0; j < 16; ++j) b.scales[j] = int8_t(j - 8);
  b.ql[0] = 0x05;   // value 0: low 4 bits 5
  b.qh[0] = 0x02;   //          high 2 bits (bits 0–1) = 2 → code 37
  b.ql[33] = 0xA0;  // value 97 (half 0, r = 3, l = 1): high nibble of ql[1 + 32] = 10
  b.qh[1] = 0xC0;   //          bits 6–7 of qh[1] = 3 → code 58
  b.ql[64] = 0x30;  // value 192 (half 1, r = 2, l = 0): high nibble of ql[64] = 3
  b.qh[32] = 0x10;  //          bits 4–5 of qh[32] = 1 → code 19
  const auto y = decode(DType::Q6_K, &b);
  EXPECT_EQ(y[0], -8.0f * (37 - 32));
  EXPECT_EQ(y[97], -2.0f * (58 - 32));   // sub-block 97 / 16 = 6
  EXPECT_EQ(y[192], 4.0f * (19 - 32));   // sub-block 12
  EXPECT_EQ(y[128], 0.0f * -32);         // sub-block 8 has scale 0
  EXPECT_EQ(y[16], -7.0f * -32);         // untouched value: code 0
}

// ---- quantize → dequantize bounds ----

// 16 super-blocks of test data: gaussian weights of scale 0.02 (like a checkpoint's), blocks that are
// all positive, all negative, all zero, constant, with one large outlier, and tiny values near the
// f16 subnormal range.
std::vector<float> test_values() {
  std::mt19937 rng(1234);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> x(16 * 256);
  for (float& v : x) v = g(rng);
  for (int i = 256; i < 512; ++i) x[size_t(i)] = std::fabs(x[size_t(i)]) + 0.1f;
  for (int i = 512; i < 768; ++i) x[size_t(i)] = -std::fabs(x[size_t(i)]) - 0.3f;
  for (int i = 768; i < 1024; ++i) x[size_t(i)] = 0.0f;
  for (int i = 1024; i < 1280; ++i) x[size_t(i)] = 0.25f;
  x[1300] = 3.0f;
  x[1600] = -5.0f;
  for (int i = 2048; i < 2304; ++i) x[size_t(i)] *= 1e-4f;
  return x;
}

struct RoundTrip {
  std::vector<float> x, y;
  std::vector<uint8_t> bytes;
};

RoundTrip round_trip(DType t) {
  RoundTrip r;
  r.x = test_values();
  const TypeTraits* tt = traits(t);
  r.bytes.resize(r.x.size() / size_t(tt->block_size) * tt->block_bytes);
  tt->quantize(r.x.data(), r.bytes.data(), int64_t(r.x.size()));
  r.y.resize(r.x.size());
  tt->dequantize(r.bytes.data(), r.y.data(), int64_t(r.x.size()));
  return r;
}

// Float arithmetic in decode (scale × code, minus offset): a few ulps of the magnitudes involved.
float arith_slack(float magnitude) { return 4e-7f * magnitude + 1e-30f; }

TEST(RoundTrip, Q8_0WithinHalfAStep) {
  // d = max|x| / 127 rounded up to f16, so |x| / d ≤ 127: rounding never clamps, |err| ≤ d/2.
  const RoundTrip r = round_trip(DType::Q8_0);
  const auto* b = reinterpret_cast<const BlockQ8_0*>(r.bytes.data());
  for (size_t i = 0; i < r.x.size(); ++i) {
    const float d = chroma::f16_to_f32(b[i / 32].d);
    ASSERT_LE(std::fabs(r.y[i] - r.x[i]), d / 2 + arith_slack(std::fabs(r.x[i]))) << i;
  }
}

// Q4_0 / Q5_0: d = x_absmax_signed / −2^(bits−1), its magnitude rounded up to f16; codes −2^(bits−1) ..
// 2^(bits−1) − 1. The extreme value takes the lowest code; values of the other sign beyond the top
// code + ½ are clamped to it.
void check_symmetric(DType t, int half_range) {
  const RoundTrip r = round_trip(t);
  const size_t block_bytes = traits(t)->block_bytes;
  for (size_t i = 0; i < r.x.size(); ++i) {
    uint16_t dh;
    std::memcpy(&dh, r.bytes.data() + (i / 32) * block_bytes, 2);  // d is the first field
    const float d = std::fabs(chroma::f16_to_f32(dh)), u = d ? std::fabs(r.x[i]) / d : 0.0f;
    ASSERT_LE(u, float(half_range)) << i;
    const float top = float(half_range - 1);
    const float bound = u > top + 0.5f ? (u - top) * d : d / 2;
    ASSERT_LE(std::fabs(r.y[i] - r.x[i]), bound + arith_slack(std::fabs(r.x[i]))) << dtype_name(t) << " " << i;
  }
}
TEST(RoundTrip, Q4_0WithinHalfAStepOrClampedAtTheTop) { check_symmetric(DType::Q4_0, 8); }
TEST(RoundTrip, Q5_0WithinHalfAStepOrClampedAtTheTop) { check_symmetric(DType::Q5_0, 16); }

// Q4_1 / Q5_1: m = f16 ≤ min, d = f16 ≥ (max − m)/top, both rounded outwards: nothing clamps, |err| ≤ d/2.
void check_affine(DType t) {
  const RoundTrip r = round_trip(t);
  const size_t block_bytes = traits(t)->block_bytes;
  for (size_t i = 0; i < r.x.size(); ++i) {
    uint16_t dm[2];
    std::memcpy(dm, r.bytes.data() + (i / 32) * block_bytes, 4);
    const float d = chroma::f16_to_f32(dm[0]), m = chroma::f16_to_f32(dm[1]);
    ASSERT_LE(m, r.x[i]) << i;
    ASSERT_LE(std::fabs(r.y[i] - r.x[i]), d / 2 + arith_slack(std::fabs(r.x[i]) + std::fabs(m))) << i;
  }
}
TEST(RoundTrip, Q4_1WithinHalfAStep) { check_affine(DType::Q4_1); }
TEST(RoundTrip, Q5_1WithinHalfAStep) { check_affine(DType::Q5_1); }

// Q4_K / Q5_K: per 32-value sub-block, scale S = d·sc and offset O = dmin·mn with the offset rounded up
// to cover −min and the scale up to cover (max + O)/top: nothing clamps, |err| ≤ S/2. And rounding
// the 6-bit scale up costs at most one step of d: S ≤ (max + O)/top + d.
void check_k(DType t, int top) {
  const RoundTrip r = round_trip(t);
  const size_t block_bytes = traits(t)->block_bytes;
  for (size_t sb = 0; sb < r.x.size() / 32; ++sb) {
    const uint8_t* block = r.bytes.data() + (sb / 8) * block_bytes;
    uint16_t dd[2];
    std::memcpy(dd, block, 4);
    const float d = chroma::f16_to_f32(dd[0]), dmin = chroma::f16_to_f32(dd[1]);
    // Decode sc, mn of sub-block j from the layout (quant.h), independently of the quantizer.
    const uint8_t* s = block + 4;
    const int j = int(sb % 8);
    const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    const int mn = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    const float S = d * float(sc), O = dmin * float(mn);
    float lo = 0, hi = r.x[sb * 32];
    for (size_t l = 0; l < 32; ++l) lo = std::min(lo, r.x[sb * 32 + l]), hi = std::max(hi, r.x[sb * 32 + l]);
    ASSERT_GE(O, -lo) << "offset of sub-block " << sb;
    ASSERT_LE(S, (hi + O) / float(top) + d + arith_slack(S)) << "scale of sub-block " << sb;
    for (size_t l = 0; l < 32; ++l) {
      const size_t i = sb * 32 + l;
      ASSERT_LE(std::fabs(r.y[i] - r.x[i]), S / 2 + arith_slack(std::fabs(r.x[i]) + O)) << dtype_name(t) << " " << i;
    }
  }
}
TEST(RoundTrip, Q4_KWithinHalfASubBlockStep) { check_k(DType::Q4_K, 15); }
TEST(RoundTrip, Q5_KWithinHalfASubBlockStep) { check_k(DType::Q5_K, 31); }

// Q6_K: per 16-value sub-block S = d·sc ≥ max|x|/31 (rounded up): codes stay in [−31, 31], |err| ≤ S/2,
// and S ≤ max|x|/31 + d.
TEST(RoundTrip, Q6_KWithinHalfASubBlockStep) {
  const RoundTrip r = round_trip(DType::Q6_K);
  const auto* b = reinterpret_cast<const BlockQ6_K*>(r.bytes.data());
  for (size_t sb = 0; sb < r.x.size() / 16; ++sb) {
    const float d = chroma::f16_to_f32(b[sb / 16].d), S = d * float(b[sb / 16].scales[sb % 16]);
    float amax = 0;
    for (size_t l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(r.x[sb * 16 + l]));
    ASSERT_LE(S, amax / 31 + d + arith_slack(S)) << sb;
    for (size_t l = 0; l < 16; ++l) {
      const size_t i = sb * 16 + l;
      ASSERT_LE(std::fabs(r.y[i] - r.x[i]), S / 2 + arith_slack(std::fabs(r.x[i]))) << i;
    }
  }
}

TEST(RoundTrip, ZeroBlocksStayZero) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const RoundTrip r = round_trip(t);
    for (size_t i = 768; i < 1024; ++i) ASSERT_EQ(r.y[i], 0.0f) << dtype_name(t) << " " << i;
  }
}

TEST(TypeTable, SizesNamesAndIds) {
  EXPECT_EQ(dtype_row_bytes(DType::Q8_0, 64), 68u);
  EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 3072), 12u * 144u);
  EXPECT_EQ(dtype_row_bytes(DType::BF16, 3), 6u);
  EXPECT_THROW(dtype_row_bytes(DType::Q6_K, 128), Error);
  EXPECT_STREQ(dtype_name(DType::Q5_K), "Q5_K");
  EXPECT_EQ(traits_for_ggml_type(14)->dtype, DType::Q6_K);
  EXPECT_EQ(traits_for_ggml_type(30)->dtype, DType::BF16);
  EXPECT_EQ(traits_for_name("q4_k")->dtype, DType::Q4_K);
  EXPECT_TRUE(dtype_is_float(DType::Q4_0));
  EXPECT_TRUE(dtype_is_quantized(DType::Q4_0));
  EXPECT_FALSE(dtype_is_quantized(DType::BF16));
}

// ---- the linear op on quantized weights ----

// A quantized weight and the same values decoded once to float32 must give identical products: the
// linear widens each panel with the same decoder and multiplies with the same sgemm.
TEST(QuantizedLinear, SameAsTheDecodedWeight) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const int64_t N = 40, K = 512, M = 9;
    const Tensor w = test::random_tensor({N, K}, 11, -0.1f, 0.1f);
    std::vector<uint8_t> bytes(size_t(N) * dtype_row_bytes(t, K));
    traits(t)->quantize(w.ptr(), bytes.data(), N * K);
    TensorView q;
    q.name = "w";
    q.dtype = t;
    q.shape = {N, K};
    q.data = bytes.data();
    q.nbytes = bytes.size();
    const Tensor decoded = q.to_f32();
    const Tensor x = test::random_tensor({M, K}, 12);
    const Tensor bias = test::random_tensor({N}, 13);
    const Tensor y = ops::linear(x, q, view_of(bias));
    const Tensor ref = ops::linear(x, view_of(decoded), view_of(bias));
    ASSERT_EQ(y.to_vector(), ref.to_vector()) << dtype_name(t);
    // A row block of a quantized weight (how Q | K | V are sliced out of qkv) is a plain view too.
    const Tensor y_rows = ops::linear(x, q.rows(8, 24), TensorView{});
    const Tensor ref_rows = ops::linear(x, view_of(decoded.rows(8, 24)), TensorView{});
    ASSERT_EQ(y_rows.to_vector(), ref_rows.to_vector()) << dtype_name(t);
  }
}

TEST(QuantizedLinear, RejectsAMisSizedView) {
  std::vector<uint8_t> bytes(100);
  TensorView q;
  q.name = "w";
  q.dtype = DType::Q8_0;
  q.shape = {4, 64};
  q.data = bytes.data();
  q.nbytes = bytes.size();  // needs 4 × 68
  EXPECT_THROW(ops::linear(Tensor({1, 64}), q, TensorView{}), Error);
}

}  // namespace
}  // namespace chroma::quant

// linear in bf16 compute (Compute::Bf16): bf16 weights multiply the inputs rounded to bf16 (to
// nearest even), the products summed in float32. Checked against the double reference of exactly
// that, round_bf16(x) · wᵀ + b; other weight types must be untouched. On a CPU without AVX-512 BF16
// the backend emulates the arithmetic in float32, so these tests hold on every CPU; CTest also runs
// them with oneDNN told the CPU is AVX2 only (linear_bf16_avx2), so both paths run on either CPU.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

// Binds a bf16-compute CPU backend to the calling thread for the scope.
struct Bf16Compute {
  std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Bf16);
  BackendScope scope{*backend, 0};
};

Tensor rounded_to_bf16(Tensor t) {
  for (float& v : t.values()) v = round_bf16(v);
  return t;
}

TEST(LinearBf16, RoundsTheInputsAndSumsInFloat32) {
  const Bf16Compute bf16;
  uint32_t seed = 1;
  for (auto [M, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 31, 33}, {33, 127, 65}, {70, 1024, 1100},
                                                                    {17, 12290, 70}, {3, 3072, 3000}})
    for (bool with_bias : {false, true}) {
      const Tensor x = random_tensor({M, K}, seed += 3);
      const StoredWeight w = random_weight(DType::BF16, {N, K}, seed + 1), b = random_weight(DType::BF16, {N}, seed + 2, "b");
      const Tensor y = ops::linear(x, w.view, with_bias ? b.view : TensorView{});
      const std::string name = "bf16 linear M" + std::to_string(M) + " K" + std::to_string(K) + " N" + std::to_string(N);
      expect_close(name, y, ref_linear(rounded_to_bf16(x), w.values, with_bias ? &b.values : nullptr), kSumTol);
    }
}

// The rounding is really there: 1 + 2⁻¹⁰ is 1 in bf16 (8 significant bits), so 64 such inputs against
// weights of 1 sum to exactly 64 in bf16 compute and to 64.0625 in float32.
TEST(LinearBf16, InputsBetweenBf16ValuesRoundToNearest) {
  Tensor x({1, 64});
  for (float& v : x.values()) v = 1.0f + 0x1p-10f;
  const StoredWeight w = random_weight(DType::BF16, {2, 64}, 1);
  StoredWeight ones = w;
  std::vector<uint16_t> one_bits(128, f32_to_bf16(1.0f));
  ones.view.data = one_bits.data();
  EXPECT_EQ(ops::linear(x, ones.view).values()[0], 64.0625f) << "float32 compute";
  const Bf16Compute bf16;
  const Tensor y = ops::linear(x, ones.view);
  EXPECT_EQ(y.values()[0], 64.0f);
  EXPECT_EQ(y.values()[1], 64.0f);
  // Halfway between two bf16 values rounds to the even one: 1 + 2⁻⁸ → 1, 1 + 3·2⁻⁸ → 1 + 2⁻⁶.
  for (float& v : x.values()) v = 1.0f + 0x1p-8f;
  EXPECT_EQ(ops::linear(x, ones.view).values()[0], 64.0f);
  for (float& v : x.values()) v = 1.0f + 3 * 0x1p-8f;
  EXPECT_EQ(ops::linear(x, ones.view).values()[0], 64.0f * (1.0f + 0x1p-6f));
}

// linear_concat rounds both halves; extra products (LoRA) stay float32 and add to the output.
TEST(LinearBf16, ConcatAndExtraProducts) {
  const Bf16Compute bf16;
  const int64_t M = 33, Ka = 40, Kb = 88, N = 1100, r = 8;
  const Tensor a = random_tensor({M, Ka}, 3), c = random_tensor({M, Kb}, 4), u = random_tensor({M, r}, 5);
  const StoredWeight w = random_weight(DType::BF16, {N, Ka + Kb}, 6), b = random_weight(DType::BF16, {N}, 7, "b");
  const StoredWeight v = random_weight(DType::F32, {N, r}, 8, "v");
  const Tensor joined = rounded_to_bf16(ops::concat_cols(a, c));
  expect_close("bf16 linear_concat", ops::linear_concat(a, c, w.view, b.view), ref_linear(joined, w.values, &b.values),
               kSumTol);
  const ops::ExtraProduct extra[] = {{&u, v.view}};
  const Tensor want = ref_linear(ops::concat_cols(joined, u), ops::concat_cols(w.values, v.values), &b.values);
  expect_close("bf16 linear_concat + extra", ops::linear_concat(a, c, w.view, b.view, extra), want, kSumTol);
  const Tensor x = ops::concat_cols(a, c);
  expect_close("bf16 linear + extra", ops::linear(x, w.view, b.view, extra), want, kSumTol);
}

// Weights that are not bf16 keep the float32 path, bit for bit.
TEST(LinearBf16, OtherWeightTypesAreUnchanged) {
  const Tensor x = random_tensor({9, 96}, 11);
  for (DType t : {DType::F32, DType::F16, DType::F8_E4M3}) {
    const StoredWeight w = random_weight(t, {40, 96}, 12);
    const Tensor f32 = ops::linear(x, w.view);
    const Bf16Compute bf16;
    EXPECT_EQ(ops::linear(x, w.view).to_vector(), f32.to_vector()) << dtype_name(t);
  }
}

TEST(Compute, NamesAndSupport) {
  EXPECT_EQ(parse_compute("f32"), Compute::F32);
  EXPECT_EQ(parse_compute("bf16"), Compute::Bf16);
  EXPECT_STREQ(compute_name(Compute::Bf16), "bf16");
  EXPECT_EQ(parse_compute("int8"), Compute::Int8);
  EXPECT_EQ(parse_compute("auto"), Compute::Auto);
  for (Compute c : {Compute::F32, Compute::Bf16, Compute::Int8, Compute::Auto})
    EXPECT_EQ(parse_compute(compute_name(c)), c);
  EXPECT_NE(error_of([] { parse_compute("int4"); }).find("expected auto, f32, bf16 or int8"), std::string::npos);
  EXPECT_NO_THROW(check_compute_supported(Compute::F32));
  EXPECT_NO_THROW(check_compute_supported(Compute::Auto));
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_NO_THROW(check_compute_supported(Compute::Int8));
  } else {
    EXPECT_NE(error_of([] { check_compute_supported(Compute::Int8); }).find("AVX2"), std::string::npos);
  }
  // Asked of the CPU directly, not through oneDNN's own detection that the backend uses.
  if (__builtin_cpu_supports("avx512bf16")) {
    EXPECT_NO_THROW(check_compute_supported(Compute::Bf16));
  } else {
    EXPECT_NE(error_of([] { check_compute_supported(Compute::Bf16); }).find("AVX-512 BF16"), std::string::npos);
  }
}

}  // namespace
}  // namespace chroma::test

// linear against the double reference for every weight dtype, awkward sizes, with and without bias.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "tensor/quant.h"
#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

const DType kWeightDtypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3};

void check_linear(DType dtype, int64_t M, int64_t K, int64_t N, bool with_bias, uint32_t seed) {
  const Tensor x = random_tensor({M, K}, seed);
  const StoredWeight w = random_weight(dtype, {N, K}, seed + 1);
  const StoredWeight b = random_weight(dtype, {N}, seed + 2, "b");
  const Tensor y = ops::linear(x, w.view, with_bias ? b.view : TensorView{});
  const Tensor ref = ref_linear(x, w.values, with_bias ? &b.values : nullptr);
  expect_close(std::string("linear ") + dtype_name(dtype) + " M" + std::to_string(M) + " K" + std::to_string(K) +
                   " N" + std::to_string(N) + (with_bias ? " +b" : ""),
               y, ref, kSumTol);
}

TEST(Linear, AllDtypesAwkwardSizes) {
  uint32_t seed = 1;
  for (DType dtype : kWeightDtypes)
    for (int64_t M : {1, 7, 33})
      for (int64_t K : {1, 31, 127})
        for (int64_t N : {1, 33})
          for (bool bias : {false, true}) check_linear(dtype, M, K, N, bias, seed += 3);
}

// K = 1024 makes a widening panel 1024 rows; N = 1100 needs two panels, the second partial.
TEST(Linear, SeveralWeightPanels) {
  for (DType dtype : kWeightDtypes) check_linear(dtype, 5, 1024, 1100, true, 77);
}

TEST(Linear, KeepsLeadingDims) {
  const Tensor x = random_tensor({2, 3, 16}, 5);
  const StoredWeight w = random_weight(DType::BF16, {8, 16}, 6);
  const Tensor y = ops::linear(x, w.view);
  EXPECT_EQ(shape_str(y.shape), "[2, 3, 8]");
  expect_close("linear 3-D", y.reshaped({6, 8}), ref_linear(x.reshaped({6, 16}), w.values, nullptr), kSumTol);
}

TEST(Linear, OneThreadMatchesReference) {
  active_backend().set_threads(1);
  EXPECT_EQ(active_backend().threads(), 1);
  check_linear(DType::BF16, 33, 127, 65, true, 9);
  active_backend().set_threads(0);
  EXPECT_GE(active_backend().threads(), 1);
}

// More threads than cores: many concurrent single-threaded sgemm calls must not interfere.
TEST(Linear, ManyThreadsMatchReference) {
  active_backend().set_threads(7);
  EXPECT_EQ(active_backend().threads(), 7);
  for (DType dtype : kWeightDtypes) check_linear(dtype, 65, 127, 200, true, 11);
  active_backend().set_threads(0);
}

// linear_concat(a, b) is linear of [a | b]: against the double reference of the concatenation, and
// against concat_cols + linear (the same products, summed in two parts instead of one: equal up to
// float32 summation order, hence the same kSumTol).
void check_linear_concat(DType dtype, int64_t M, int64_t Ka, int64_t Kb, int64_t N, bool with_bias, uint32_t seed) {
  const Tensor a = random_tensor({M, Ka}, seed), b = random_tensor({M, Kb}, seed + 1);
  const StoredWeight w = random_weight(dtype, {N, Ka + Kb}, seed + 2);
  const StoredWeight bias = random_weight(dtype, {N}, seed + 3, "b");
  const TensorView bv = with_bias ? bias.view : TensorView{};
  const Tensor joined = ops::concat_cols(a, b);
  const Tensor y = ops::linear_concat(a, b, w.view, bv);
  const std::string name = std::string("linear_concat ") + dtype_name(dtype) + " M" + std::to_string(M) + " Ka" +
                           std::to_string(Ka) + " Kb" + std::to_string(Kb) + " N" + std::to_string(N);
  ASSERT_EQ(shape_str(y.shape), shape_str(Shape{M, N})) << name;
  expect_close(name, y, ref_linear(joined, w.values, with_bias ? &bias.values : nullptr), kSumTol);
  expect_close(name + " vs concat_cols+linear", y, ops::linear(joined, w.view, bv), kSumTol);
}

TEST(LinearConcat, MatchesLinearOfConcatenation) {
  uint32_t seed = 100;
  for (DType dtype : kWeightDtypes)
    for (int64_t M : {1, 33})
      for (auto [Ka, Kb] : {std::pair<int64_t, int64_t>{1, 1}, {31, 97}, {64, 0}, {0, 64}})
        check_linear_concat(dtype, M, Ka, Kb, 33, true, seed += 4);
  // Several weight panels and row chunks (as Linear.SeveralWeightPanels), single-block-like split.
  for (DType dtype : kWeightDtypes) check_linear_concat(dtype, 70, 256, 1024, 1100, true, 7);
  check_linear_concat(DType::BF16, 5, 300, 700, 40, false, 9);
}

TEST(LinearConcat, QuantizedWeight) {
  const int64_t M = 9, Ka = 96, Kb = 160, N = 40;
  const Tensor w = random_tensor({N, Ka + Kb}, 21, -0.1f, 0.1f);
  const Tensor a = random_tensor({M, Ka}, 22), b = random_tensor({M, Kb}, 23);
  for (DType t : {DType::Q8_0, DType::Q4_K}) {
    std::vector<uint8_t> bytes(size_t(N) * dtype_row_bytes(t, Ka + Kb));
    quant::traits(t)->quantize(w.ptr(), bytes.data(), N * (Ka + Kb));
    TensorView q;
    q.name = "w";
    q.dtype = t;
    q.shape = {N, Ka + Kb};
    q.data = bytes.data();
    q.nbytes = bytes.size();
    expect_close(std::string("linear_concat ") + dtype_name(t), ops::linear_concat(a, b, q),
                 ref_linear(ops::concat_cols(a, b), q.to_f32(), nullptr), kSumTol);
  }
}

// Extra products u·vᵀ accumulated into a linear's output are linear of [x | u_1 | u_2] against
// [w | v_1 | s·v_2]: the double reference of that, for weight and v dtypes, several panels, a scaled
// v (a LoRA B with its strength), and through linear_concat too.
TEST(Linear, ExtraProductsAccumulateIntoTheOutput) {
  for (DType dtype : {DType::F32, DType::BF16})
    for (int64_t M : {5, 33})
      for (int64_t N : {33, 1100}) {
        const int64_t K = 64, r1 = 4, r2 = 16;
        const Tensor x = random_tensor({M, K}, 3), u1 = random_tensor({M, r1}, 4), u2 = random_tensor({M, r2}, 5);
        const StoredWeight w = random_weight(dtype, {N, K}, 6), b = random_weight(dtype, {N}, 7, "b");
        const StoredWeight v1 = random_weight(dtype, {N, r1}, 8, "v1"), v2 = random_weight(dtype, {N, r2}, 9, "v2");
        TensorView v2_scaled = v2.view;
        v2_scaled.scale = 0.5f;
        Tensor v2_values = v2.values;
        for (float& e : v2_values.values()) e *= 0.5f;
        const ops::ExtraProduct extra[] = {{&u1, v1.view}, {&u2, v2_scaled}};
        const Tensor want = ref_linear(ops::concat_cols(ops::concat_cols(x, u1), u2),
                                       ops::concat_cols(ops::concat_cols(w.values, v1.values), v2_values), &b.values);
        const std::string name = std::string("linear + extra ") + dtype_name(dtype) + " M" + std::to_string(M) + " N" +
                                 std::to_string(N);
        expect_close(name, ops::linear(x, w.view, b.view, extra), want, kSumTol);
        // linear_concat: x split as [x[:, :40] | x[:, 40:]].
        Tensor a({M, 40}), c({M, K - 40});
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) (k < 40 ? a.values()[size_t(m * 40 + k)] : c.values()[size_t(m * (K - 40) + k - 40)]) = x.values()[size_t(m * K + k)];
        expect_close(name + " (concat)", ops::linear_concat(a, c, w.view, b.view, extra), want, kSumTol);
      }
  const Tensor x = random_tensor({5, 8}, 1), u = random_tensor({4, 2}, 2);
  const StoredWeight w = random_weight(DType::F32, {6, 8}, 3), v = random_weight(DType::F32, {6, 2}, 4);
  const ops::ExtraProduct wrong_rows[] = {{&u, v.view}};
  EXPECT_THROW(ops::linear(x, w.view, {}, wrong_rows), Error);
}

TEST(LinearConcat, ShapeErrors) {
  const StoredWeight w = random_weight(DType::BF16, {8, 16}, 2, "single_blocks.0.linear2.weight");
  EXPECT_THROW(ops::linear_concat(random_tensor({4, 8}, 1), random_tensor({3, 8}, 1), w.view), Error);
  EXPECT_THROW(ops::linear_concat(random_tensor({4, 2, 4}, 1), random_tensor({4, 8}, 1), w.view), Error);
  try {
    ops::linear_concat(random_tensor({4, 8}, 1), random_tensor({4, 9}, 1), w.view);
    FAIL() << "expected chroma::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("single_blocks.0.linear2.weight"), std::string::npos) << e.what();
  }
}

TEST(Linear, ShapeMismatchNamesWeight) {
  const Tensor x = random_tensor({4, 16}, 1);
  const StoredWeight w = random_weight(DType::BF16, {8, 15}, 2, "blocks.0.fc.weight");
  try {
    ops::linear(x, w.view);
    FAIL() << "expected chroma::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.0.fc.weight"), std::string::npos) << e.what();
  }
  const StoredWeight ok = random_weight(DType::BF16, {8, 16}, 3);
  const StoredWeight bad_bias = random_weight(DType::BF16, {7}, 4, "blocks.0.fc.bias");
  EXPECT_THROW(ops::linear(x, ok.view, bad_bias.view), Error);
  const StoredWeight w3 = random_weight(DType::BF16, {8, 16, 1}, 5);
  EXPECT_THROW(ops::linear(x, w3.view), Error);
  TensorView ints = ok.view;
  ints.dtype = DType::I32;
  ints.nbytes = size_t(ints.numel()) * 4;
  EXPECT_THROW(ops::linear(x, ints), Error);
  TensorView truncated = ok.view;
  truncated.nbytes -= 2;
  EXPECT_THROW(ops::linear(x, truncated), Error);
}

}  // namespace
}  // namespace chroma::test

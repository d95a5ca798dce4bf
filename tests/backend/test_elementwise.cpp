// Elementwise ops, rope, upsampling and data movement against plain formulas.
#include <gtest/gtest.h>

#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

TEST(Elementwise, ModulateAddGatedAdd) {
  const Tensor x = random_tensor({7, 33}, 1), y = random_tensor({7, 33}, 2);
  const Tensor shift = random_tensor({33}, 3), scale = random_tensor({33}, 4), gate = random_tensor({33}, 5);
  Tensor want_mod(x.shape), want_gated(x.shape), want_sum(x.shape);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const size_t c = size_t(i % 33), n = size_t(i);
    want_mod.values()[n] = float((1.0 + scale.values()[c]) * x.values()[n] + shift.values()[c]);
    want_gated.values()[n] = float(x.values()[n] + double(gate.values()[c]) * y.values()[n]);
    want_sum.values()[n] = float(double(x.values()[n]) + y.values()[n]);
  }
  expect_close("modulate", ops::modulate(x, shift, scale), want_mod, kElementwiseTol);
  Tensor g = x;
  ops::add_gated(g, gate, y);
  expect_close("add_gated", g, want_gated, kElementwiseTol);
  Tensor s = x;
  ops::add(s, y);
  expect_close("add", s, want_sum, kElementwiseTol);
  EXPECT_THROW(ops::modulate(x, random_tensor({32}, 1), scale), Error);
  EXPECT_THROW(ops::add(s, random_tensor({7, 32}, 1)), Error);
  EXPECT_THROW(ops::add_gated(s, gate, random_tensor({6, 33}, 1)), Error);
}

TEST(Elementwise, Activations) {
  Tensor x = random_tensor({1001}, 7, -8, 8);
  // The far tails, where exp under- or overflows: silu → −0 and x, gelu → 0 and x.
  const float tails[] = {-1000.0f, -100.0f, -88.5f, -87.5f, 0.0f, 87.5f, 88.5f, 100.0f, 1000.0f};
  std::copy(std::begin(tails), std::end(tails), x.values().begin());
  Tensor want_gelu(x.shape), want_silu(x.shape);
  for (size_t i = 0; i < x.values().size(); ++i) {
    const double v = x.values()[i];
    want_gelu.values()[i] = float(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
    want_silu.values()[i] = float(v / (1 + std::exp(-v)));
  }
  expect_close("gelu_tanh", ops::gelu_tanh(x), want_gelu, kElementwiseTol);
  expect_close("silu", ops::silu(x), want_silu, kElementwiseTol);
}

// gelu_tanh per value over ±1e-30 … ±3e38 (log-spaced), a dense sweep of [−20, 20] and ±∞, against
// the same function in double written as x / (1 + e^{−2u}) (= 0.5·x·(1 + tanh u); the tanh form
// cancels in double too, below 1e-16). Bound per value: kGeluUlps float32 ulps relative, times
// (1 + |u|): the rounding of u in float32 (a few ulps of u) becomes a relative error ≈ |2u|·δ of
// e^{−2u}, i.e. of the result, for negative x — the function's conditioning, not the kernel's.
// Results whose magnitude is below kGeluTiny (x < −7.5 or so, or x ≈ 0 denormals) are checked
// absolutely: the kernel returns ≈ −1e-37 for every x ≤ −10 instead of underflowing.
TEST(Elementwise, GeluTanhWideRange) {
  constexpr double kGeluUlps = 8;      // exp_f32 ≤ 2 ulp, the division and the products ≤ 1 ulp each
  constexpr double kGeluTiny = 1e-30;  // absolute bound where the result is ≈ 0
  std::vector<float> xs;
  for (int i = -200000; i <= 200000; ++i) xs.push_back(float(i) * 1e-4f);
  for (double m = 1e-30; m < 3e38; m *= 1.01) {
    xs.push_back(float(m));
    xs.push_back(float(-m));
  }
  Tensor x({int64_t(xs.size())});
  std::copy(xs.begin(), xs.end(), x.values().begin());
  const Tensor got = ops::gelu_tanh(x);
  double worst = 0;  // in units of ulps·(1 + |u|)
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i], u = std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v);
    const double want = v / (1 + std::exp(-2 * u)), err = std::abs(double(got.values()[i]) - want);
    ASSERT_TRUE(std::isfinite(got.values()[i])) << "gelu_tanh(" << v << ") = " << got.values()[i];
    if (std::abs(want) < kGeluTiny) {
      ASSERT_LE(err, kGeluTiny) << "gelu_tanh(" << v << ") = " << got.values()[i] << ", want " << want;
      continue;
    }
    const double ulps = err / (std::ldexp(std::abs(want), -23) * (1 + std::abs(u)));
    worst = std::max(worst, ulps);
    ASSERT_LE(ulps, kGeluUlps) << "gelu_tanh(" << v << ") = " << got.values()[i] << ", want " << want;
  }
  RecordProperty("worst_ulps_times_1_plus_u", std::to_string(worst));
  const Tensor inf({4}, {INFINITY, -INFINITY, NAN, -0.0f});
  const Tensor g = ops::gelu_tanh(inf);
  EXPECT_EQ(g.values()[0], INFINITY);
  EXPECT_LE(std::abs(g.values()[1]), kGeluTiny);
  EXPECT_TRUE(std::isnan(g.values()[2]));
  EXPECT_EQ(g.values()[3], 0.0f);
}

TEST(Rope, RotatesAdjacentPairs) {
  const int H = 3;
  const int64_t L = 5, D = 8;
  const Tensor x = random_tensor({L, H * D}, 1);
  Tensor table({L, D / 2, 2});
  const Tensor theta = random_tensor({L, D / 2}, 2, -3, 3);
  for (int64_t i = 0; i < L * D / 2; ++i) {
    table.values()[size_t(2 * i)] = std::cos(theta.values()[size_t(i)]);
    table.values()[size_t(2 * i + 1)] = std::sin(theta.values()[size_t(i)]);
  }
  Tensor want(x.shape);
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t p = 0; p < D / 2; ++p) {
        const size_t i0 = size_t(l * H * D + h * D + 2 * p);
        const double c = table.values()[size_t((l * D / 2 + p) * 2)], s = table.values()[size_t((l * D / 2 + p) * 2 + 1)];
        want.values()[i0] = float(c * x.values()[i0] - s * x.values()[i0 + 1]);
        want.values()[i0 + 1] = float(s * x.values()[i0] + c * x.values()[i0 + 1]);
      }
  Tensor got = x;
  ops::rope(got, H, table);
  expect_close("rope", got, want, kElementwiseTol);
  EXPECT_THROW(ops::rope(got, H, Tensor({L, D, 2})), Error);
  EXPECT_THROW(ops::rope(got, 5, table), Error);
}

TEST(Upsample, Nearest2x) {
  const Tensor x = random_tensor({2, 3, 5}, 1);
  const Tensor y = ops::upsample_nearest2x(x);
  ASSERT_EQ(shape_str(y.shape), "[2, 6, 10]");
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 10; ++j)
        ASSERT_EQ(y.values()[size_t((c * 6 + i) * 10 + j)], x.values()[size_t((c * 3 + i / 2) * 5 + j / 2)]);
}

TEST(DataMovement, TransposeConcatSlice) {
  const Tensor a = random_tensor({33, 7}, 1), b = random_tensor({5, 7}, 2), c = random_tensor({33, 2}, 3);
  const Tensor t = ops::transpose(a);
  ASSERT_EQ(shape_str(t.shape), "[7, 33]");
  for (int64_t i = 0; i < 33; ++i)
    for (int64_t j = 0; j < 7; ++j) ASSERT_EQ(t.values()[size_t(j * 33 + i)], a.values()[size_t(i * 7 + j)]);

  const Tensor rows = ops::concat_rows(a, b);
  ASSERT_EQ(shape_str(rows.shape), "[38, 7]");
  for (int64_t i = 0; i < 38 * 7; ++i)
    ASSERT_EQ(rows.values()[size_t(i)], i < 33 * 7 ? a.values()[size_t(i)] : b.values()[size_t(i - 33 * 7)]);

  const Tensor cols = ops::concat_cols(a, c);
  ASSERT_EQ(shape_str(cols.shape), "[33, 9]");
  const Tensor back_a = ops::slice_cols(cols, 0, 7), back_c = ops::slice_cols(cols, 7, 9);
  EXPECT_EQ(back_a.to_vector(), a.to_vector());
  EXPECT_EQ(back_c.to_vector(), c.to_vector());

  EXPECT_THROW(ops::concat_rows(a, c), Error);
  EXPECT_THROW(ops::concat_cols(a, b), Error);
  EXPECT_THROW(ops::slice_cols(a, 3, 8), Error);
  EXPECT_THROW(ops::transpose(random_tensor({2, 3, 4}, 1)), Error);
}

}  // namespace
}  // namespace chroma::test

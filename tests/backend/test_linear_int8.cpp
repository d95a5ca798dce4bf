// linear in int8 compute (Compute::Int8) for block-quantized weights. The inputs are quantized per
// row and 32-value block (d = max|x| / 127, q = round(x · (1/d)), the definition below), and then
// y = x̂ · wᵀ + b must hold to float32 rounding, with x̂ = d·q and w = scale·q + offset the weight's
// integer form; that form must decode to exactly the values the dequantizer gives. Against the
// float32 path the difference is bounded by the input rounding, Σ |w|·d/2. CTest reruns these
// tests with CHROMA_INT8_KERNEL=avx2 (linear_int8_avx2), so both kernels are checked on Zen 4 CPUs.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "reference_ops.h"
#include "tensor/quant.h"
#include "testdata.h"

namespace chroma::test {
namespace {

struct Int8Compute {
  std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Int8);
  BackendScope scope{*backend, 0};
};

bool skip_without_int8() { return !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"); }
#define SKIP_WITHOUT_INT8() \
  if (skip_without_int8()) GTEST_SKIP() << "this CPU has no AVX2: int8 compute is refused here"

constexpr DType kBlockTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                 DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// A weight quantized to `t` from random values, with its integer form.
struct QuantWeight {
  std::vector<uint8_t> bytes;
  TensorView view;
  int sub = 0;
  std::vector<int8_t> q;
  std::vector<float> scale, offset;  // [N, K / sub]
};

QuantWeight quant_weight(DType t, int64_t N, int64_t K, uint32_t seed) {
  const quant::TypeTraits& tt = *quant::traits(t);
  const Tensor values = random_tensor({N, K}, seed, -0.5f, 0.5f);
  QuantWeight w;
  w.bytes.resize(size_t(N) * dtype_row_bytes(t, K));
  tt.quantize(values.ptr(), w.bytes.data(), N * K);
  w.view.name = "w";
  w.view.file = "test.gguf";
  w.view.dtype = t;
  w.view.shape = {N, K};
  w.view.data = w.bytes.data();
  w.view.nbytes = w.bytes.size();
  w.sub = tt.int_sub_block;
  w.q.resize(size_t(N * K));
  w.scale.resize(size_t(N * K / w.sub));
  w.offset.resize(w.scale.size());
  tt.decode_ints(w.bytes.data(), N * K, w.q.data(), w.scale.data(), w.offset.data());
  return w;
}

// The input quantizer's definition, per row and 32-value block.
struct QuantX {
  std::vector<int> q;
  std::vector<float> d;
};
QuantX quantize_x(const Tensor& x) {
  const int64_t K = x.dim(-1), M = x.numel() / K;
  QuantX r{std::vector<int>(size_t(M * K)), std::vector<float>(size_t(M * K / 32))};
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < K / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x.values()[size_t(m * K + 32 * b + i)]));
      const float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
      r.d[size_t(m * (K / 32) + b)] = d;
      for (int i = 0; i < 32; ++i)
        r.q[size_t(m * K + 32 * b + i)] = int(std::nearbyint(x.values()[size_t(m * K + 32 * b + i)] * id));
    }
  return r;
}

// y = x̂ · (scale·q + offset)ᵀ + b in double, and Σ |terms| for the rounding bound.
void reference(const Tensor& x, const QuantWeight& w, const Tensor* bias, Tensor& y, Tensor& magnitude) {
  const int64_t K = x.dim(-1), M = x.numel() / K, N = w.view.dim(0);
  const QuantX qx = quantize_x(x);
  y = Tensor({M, N});
  magnitude = Tensor({M, N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = bias ? bias->ptr()[n] : 0.0, mag = bias ? std::fabs(bias->ptr()[n]) : 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double xk = double(qx.d[size_t(m * (K / 32) + k / 32)]) * qx.q[size_t(m * K + k)];
        const size_t s = size_t(n * (K / w.sub) + k / w.sub);
        const double term = xk * (double(w.scale[s]) * w.q[size_t(n * K + k)] + w.offset[s]);
        acc += term;
        mag += std::fabs(xk * double(w.scale[s]) * w.q[size_t(n * K + k)]) + std::fabs(xk * w.offset[s]);
      }
      y.values()[size_t(m * N + n)] = float(acc);
      magnitude.values()[size_t(m * N + n)] = float(mag);
    }
}

// Float32 rounding of a sum of (K / sub) scaled integer dot products: a few units of 2⁻²⁴ per term.
void expect_within_rounding(const std::string& name, const Tensor& got, const Tensor& want, const Tensor& magnitude,
                            int64_t terms) {
  ASSERT_EQ(got.shape, want.shape) << name;
  const double unit = std::ldexp(1.0, -24) * double(terms + 4) * 3;
  int bad = 0;
  for (size_t i = 0; i < got.values().size() && bad < 5; ++i) {
    const double tol = unit * magnitude.values()[i] + 1e-30;
    if (!(std::fabs(double(got.values()[i]) - want.values()[i]) <= tol)) {
      ADD_FAILURE() << name << " [" << i << "]: " << got.values()[i] << " vs " << want.values()[i] << " (tolerance " << tol
                    << ")";
      ++bad;
    }
  }
}

TEST(Quant, IntegerFormDecodesToTheDequantizedValues) {
  for (DType t : kBlockTypes) {
    const int64_t K = 512;
    const QuantWeight w = quant_weight(t, 3, K, 5);
    std::vector<float> values(size_t(3 * K));
    quant::dequantize_range(t, w.bytes.data(), 0, 3 * K, values.data());
    for (int64_t i = 0; i < 3 * K; ++i) {
      const size_t s = size_t(i / w.sub);
      ASSERT_EQ(w.scale[s] * float(w.q[size_t(i)]) + w.offset[s], values[size_t(i)]) << dtype_name(t) << " [" << i << "]";
    }
  }
}

TEST(LinearInt8, ExactOnTheQuantizedInputs) {
  SKIP_WITHOUT_INT8();
  const Int8Compute int8;
  uint32_t seed = 1;
  for (DType t : kBlockTypes) {
    const int64_t unit = quant::traits(t)->block_size;  // K is a whole number of blocks
    for (auto [M, blocks, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {5, 1, 33}, {7, 2, 16}, {33, 3, 65},
                                                                              {70, 4, 1100}, {3, 12, 300}})
      for (bool with_bias : {false, true}) {
        const int64_t K = std::max<int64_t>(32, blocks * unit);
        const Tensor x = random_tensor({M, K}, seed += 3);
        const QuantWeight w = quant_weight(t, N, K, seed + 1);
        const StoredWeight b = random_weight(DType::BF16, {N}, seed + 2, "b");
        Tensor want, magnitude;
        reference(x, w, with_bias ? &b.values : nullptr, want, magnitude);
        const Tensor y = ops::linear(x, w.view, with_bias ? b.view : TensorView{});
        expect_within_rounding(std::string(dtype_name(t)) + " M" + std::to_string(M) + " K" + std::to_string(K) +
                                   " N" + std::to_string(N) + (with_bias ? " bias" : ""),
                               y, want, magnitude, K / w.sub);
      }
  }
}

// Against the float32 path (x unrounded): |Δy| ≤ Σ_k |w_k| · d_k / 2, d_k the scale of x_k's block.
TEST(LinearInt8, DiffersFromFloat32ByTheInputRoundingOnly) {
  SKIP_WITHOUT_INT8();
  for (DType t : {DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t M = 9, K = 3072, N = 130;
    const Tensor x = random_tensor({M, K}, 41, -3.0f, 3.0f);
    const QuantWeight w = quant_weight(t, N, K, 42);
    const Tensor f32 = ops::linear(x, w.view);
    Tensor y;
    {
      const Int8Compute int8;
      y = ops::linear(x, w.view);
    }
    std::vector<float> wv(size_t(N * K));
    quant::dequantize_range(t, w.bytes.data(), 0, N * K, wv.data());
    const QuantX qx = quantize_x(x);
    double worst = 0, typical = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double bound = 0;
        for (int64_t k = 0; k < K; ++k) bound += std::fabs(wv[size_t(n * K + k)]) * qx.d[size_t(m * (K / 32) + k / 32)] / 2;
        const double diff = std::fabs(double(y.values()[size_t(m * N + n)]) - f32.values()[size_t(m * N + n)]);
        ASSERT_LE(diff, bound * 1.001 + 1e-4) << dtype_name(t) << " m" << m << " n" << n;
        worst = std::max(worst, diff / bound);
        typical += diff;
      }
    EXPECT_GT(typical, 0) << "int8 compute gave the float32 result: the inputs were not quantized";
    RecordProperty(std::string("worst_fraction_of_bound_") + dtype_name(t), std::to_string(worst));
  }
}

// linear_concat quantizes [a | b] (a block straddles the seam); extra products stay float32.
TEST(LinearInt8, ConcatAndExtraProducts) {
  SKIP_WITHOUT_INT8();
  const Int8Compute int8;
  const int64_t M = 33, Ka = 40, Kb = 88, N = 1100, r = 8;
  const Tensor a = random_tensor({M, Ka}, 3), c = random_tensor({M, Kb}, 4), u = random_tensor({M, r}, 5);
  const QuantWeight w = quant_weight(DType::Q8_0, N, Ka + Kb, 6);
  const StoredWeight b = random_weight(DType::BF16, {N}, 7, "b");
  const StoredWeight v = random_weight(DType::F32, {N, r}, 8, "v");
  const Tensor joined = ops::concat_cols(a, c);
  Tensor want, magnitude;
  reference(joined, w, &b.values, want, magnitude);
  expect_within_rounding("int8 linear_concat", ops::linear_concat(a, c, w.view, b.view), want, magnitude, 4);
  const Tensor uv = ref_linear(u, v.values, nullptr);
  for (size_t i = 0; i < want.values().size(); ++i) {
    want.values()[i] += uv.values()[i];
    magnitude.values()[i] += std::fabs(uv.values()[i]) + 1e-3f;
  }
  const ops::ExtraProduct extra[] = {{&u, v.view}};
  expect_within_rounding("int8 linear_concat + extra", ops::linear_concat(a, c, w.view, b.view, extra), want,
                         magnitude, 16);
  expect_within_rounding("int8 linear + extra", ops::linear(joined, w.view, b.view, extra), want, magnitude, 16);
}

// Codes of −128 (which our quantizer never writes, but a file may hold) and inputs at ±127 codes:
// the AVX2 kernel's |w| · x·sign(w) pairs reach 2·128·127 and must not saturate.
TEST(LinearInt8, ExtremeCodesAreExact) {
  SKIP_WITHOUT_INT8();
  const Int8Compute int8;
  const int64_t N = 17, K = 64;
  std::vector<quant::BlockQ8_0> blocks(size_t(N * K / 32));
  for (size_t i = 0; i < blocks.size(); ++i) {
    blocks[i].d = quant::f32_to_f16(1.0f);
    for (int j = 0; j < 32; ++j) blocks[i].qs[j] = int8_t((i + j) % 3 == 0 ? -128 : 127);
  }
  TensorView w;
  w.name = "w";
  w.dtype = DType::Q8_0;
  w.shape = {N, K};
  w.data = blocks.data();
  w.nbytes = blocks.size() * sizeof(quant::BlockQ8_0);
  // ±127/128: d = 2⁻⁷ and codes ±127 exactly, so every product and sum is exact in float32.
  const float h = 127.0f / 128.0f;
  Tensor x({2, K});
  for (int64_t k = 0; k < K; ++k) x.values()[size_t(k)] = -h, x.values()[size_t(K + k)] = k % 2 ? h : -h;
  const Tensor y = ops::linear(x, w);
  for (int64_t n = 0; n < N; ++n) {
    double want0 = 0, want1 = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int code = ((n * K + k) / 32 + k % 32) % 3 == 0 ? -128 : 127;
      want0 += -double(h) * code;
      want1 += (k % 2 ? double(h) : -double(h)) * code;
    }
    EXPECT_EQ(y.values()[size_t(n)], float(want0)) << "n" << n;
    EXPECT_EQ(y.values()[size_t(N + n)], float(want1)) << "n" << n;
  }
}

// An inf or NaN input makes its row NaN, as it would poison the float32 product; zero rows give zero.
TEST(LinearInt8, NonFiniteAndZeroInputs) {
  SKIP_WITHOUT_INT8();
  const Int8Compute int8;
  const QuantWeight w = quant_weight(DType::Q8_0, 20, 64, 9);
  Tensor x({3, 64});
  x.values()[5] = INFINITY;
  x.values()[64 + 40] = NAN;
  const Tensor y = ops::linear(x, w.view);
  for (int64_t n = 0; n < 20; ++n) {
    EXPECT_TRUE(std::isnan(y.values()[size_t(n)])) << n;
    EXPECT_TRUE(std::isnan(y.values()[size_t(20 + n)])) << n;
    EXPECT_EQ(y.values()[size_t(40 + n)], 0.0f) << n;
  }
}

// Weights without an integer form keep the float32 path, bit for bit.
TEST(LinearInt8, OtherWeightTypesAreUnchanged) {
  const Tensor x = random_tensor({9, 96}, 11);
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3}) {
    const StoredWeight w = random_weight(t, {40, 96}, 12);
    const Tensor f32 = ops::linear(x, w.view);
    const std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Auto);
    const BackendScope scope(*backend, 0);
    EXPECT_EQ(ops::linear(x, w.view).to_vector(), f32.to_vector()) << dtype_name(t);
  }
}

// Auto takes the int8 path for block-quantized weights (where the CPU has AVX2).
TEST(LinearInt8, AutoQuantizesForBlockTypes) {
  SKIP_WITHOUT_INT8();
  const Tensor x = random_tensor({4, 256}, 13);
  const QuantWeight w = quant_weight(DType::Q4_K, 24, 256, 14);
  const Tensor f32 = ops::linear(x, w.view);
  Tensor by_int8, by_auto;
  {
    const Int8Compute int8;
    by_int8 = ops::linear(x, w.view);
  }
  {
    const std::unique_ptr<Backend> backend = make_cpu_backend(Compute::Auto);
    const BackendScope scope(*backend, 0);
    by_auto = ops::linear(x, w.view);
  }
  if (std::string(cpu::int8_kernel_name()) == "avx512-vnni") {  // auto takes int8 where it is faster
    EXPECT_EQ(by_auto.to_vector(), by_int8.to_vector());
    EXPECT_NE(by_auto.to_vector(), f32.to_vector());
  } else {  // the AVX2 kernel (or CHROMA_INT8_KERNEL=avx2): auto stays float32
    EXPECT_EQ(by_auto.to_vector(), f32.to_vector());
  }
}

}  // namespace
}  // namespace chroma::test

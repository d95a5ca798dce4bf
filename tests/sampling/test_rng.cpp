// PyTorch CPU randn against PyTorch itself: reference case g (testdata/reference/README.md §5).
// Both kernels must reproduce their PyTorch counterpart bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>

#include "exact.h"
#include "sampling/rng.h"
#include "tensor/error.h"
#include "testdata.h"

namespace chroma::sampling {
namespace {

// The stored sums are float64 sums of the same float32 values in PyTorch's summation order; ours
// is sequential. Over 262,144 terms the order changes the float64 result by ~1e-13 relative.
constexpr double kSumOrderTol = 1e-11;

class RandnReference : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = test::reference_path("case-g-rng.safetensors");
    CHROMA_REQUIRE_FILE(path);
    file_ = io::SafetensorsFile::open(path);
  }

  // Checks every value case g stores for `prefix` ("output" = AVX2 kernel, "scalar" = scalar kernel).
  void check_kernel(const std::string& prefix, RandnKernel kernel) {
    for (uint64_t seed : {0ull, 42ull, 666ull, 4294967303ull}) {
      const std::string base = prefix + ".s" + std::to_string(seed);
      for (int64_t side : {8, 64, 128}) {
        const std::string name = base + ".1x16x" + std::to_string(side) + "x" + std::to_string(side);
        const Tensor got = torch_randn(seed, {1, 16, side, side}, kernel);
        if (file_->has(name)) {  // full tensor stored
          test::expect_bitwise_equal(name, got, file_->get(name).to_f32());
          continue;
        }
        ASSERT_TRUE(file_->has(name + ".first256")) << name;
        const Tensor first = file_->get(name + ".first256").to_f32(), last = file_->get(name + ".last256").to_f32();
        test::expect_bitwise_equal(name + ".first256", got.ptr(), first.ptr(), 256);
        test::expect_bitwise_equal(name + ".last256", got.ptr() + got.numel() - 256, last.ptr(), 256);
        double sum = 0, sumsq = 0;
        for (float v : got.values()) {
          sum += double(v);
          sumsq += double(v) * double(v);
        }
        const double ref_sum = test::stored_f64(*file_, name + ".sum"), ref_sumsq = test::stored_f64(*file_, name + ".sumsq");
        EXPECT_NEAR(sum, ref_sum, kSumOrderTol * std::max(1.0, std::abs(ref_sum))) << name;
        EXPECT_NEAR(sumsq, ref_sumsq, kSumOrderTol * ref_sumsq) << name;
      }
    }
  }

  std::unique_ptr<io::SafetensorsFile> file_;
};

TEST_F(RandnReference, Avx2KernelMatchesPyTorchAvx2) { check_kernel("output", RandnKernel::Avx2); }

TEST_F(RandnReference, ScalarKernelMatchesPyTorchScalar) { check_kernel("scalar", RandnKernel::Scalar); }

TEST_F(RandnReference, KernelsDifferOnlyInTheLastBits) {
  // README case g: PyTorch's two kernels differ by at most 2.2e-6 on these seeds.
  constexpr double kKernelGap = 2.21e-6;
  const Tensor a = torch_randn(42, {1, 16, 64, 64}, RandnKernel::Avx2);
  const Tensor s = torch_randn(42, {1, 16, 64, 64}, RandnKernel::Scalar);
  double max_diff = 0;
  for (size_t i = 0; i < a.values().size(); ++i) max_diff = std::max(max_diff, double(std::abs(a.values()[i] - s.values()[i])));
  EXPECT_LE(max_diff, kKernelGap);
  EXPECT_GT(max_diff, 0.0);  // they are different kernels
}

TEST(Randn, DefaultIsAvx2Kernel) {
  EXPECT_EQ(torch_randn(7, {1, 16, 8, 8}).to_vector(), torch_randn(7, {1, 16, 8, 8}, RandnKernel::Avx2).to_vector());
}

TEST(Randn, OnlyLow32SeedBitsCount) {
  for (RandnKernel k : {RandnKernel::Avx2, RandnKernel::Scalar}) {
    EXPECT_EQ(torch_randn((1ull << 32) + 7, {1, 16, 8, 8}, k).to_vector(), torch_randn(7, {1, 16, 8, 8}, k).to_vector());
  }
  EXPECT_NE(torch_randn(8, {16}).to_vector(), torch_randn(7, {16}).to_vector());
}

TEST(Randn, PartialLastBlockIsRedrawn) {
  // numel = 20: values 0..3 come from the first block of 16 (same draws as a [16] tensor); values
  // 4..19 are overwritten by a block of 16 fresh draws, so they differ from the [16] tensor's.
  for (RandnKernel k : {RandnKernel::Avx2, RandnKernel::Scalar}) {
    const Tensor t20 = torch_randn(3, {4, 5}, k), t16 = torch_randn(3, {16}, k);
    EXPECT_EQ(t20.shape, (Shape{4, 5}));
    for (int i = 0; i < 4; ++i) EXPECT_EQ(t20.values()[size_t(i)], t16.values()[size_t(i)]) << i;
    for (int i = 4; i < 16; ++i) EXPECT_NE(t20.values()[size_t(i)], t16.values()[size_t(i)]) << i;
  }
}

TEST(Randn, RejectsFewerThan16Elements) {
  EXPECT_THROW(torch_randn(0, {15}), Error);
  EXPECT_THROW(torch_randn(0, {1, 3, 5}), Error);
  EXPECT_NO_THROW(torch_randn(0, {16}));
}

}  // namespace
}  // namespace chroma::sampling

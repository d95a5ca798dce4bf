// Tensor storage: allocation, copies, moves and row operations in host memory, and impossible shapes
// refused by name (device memory: tests/pipeline/test_device_neutral.cpp).
#include <gtest/gtest.h>

#include <cstdint>

#include "tensor/tensor.h"
#include "testdata.h"

namespace chroma {
namespace {

TEST(TensorStorage, ZeroedAlignedCopiedAndMoved) {
  Tensor t({3, 5});
  ASSERT_EQ(t.numel(), 15);
  EXPECT_TRUE(t.on_host());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.ptr()) % 64, 0u) << "whole AVX-512 vectors";
  for (float v : t.values()) EXPECT_EQ(v, 0.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.ptr()[i] = float(i);
  const Tensor copy = t;
  t.ptr()[0] = 100.0f;
  EXPECT_EQ(copy.ptr()[0], 0.0f) << "a copy owns its values";
  const Tensor moved = std::move(t);
  EXPECT_EQ(moved.ptr()[0], 100.0f);
  EXPECT_EQ(Tensor().numel(), 0);
}

TEST(TensorStorage, RowsAndRowCopies) {
  const Tensor t({3, 2}, {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(t.rows(1, 3).to_vector(), (std::vector<float>{2, 3, 4, 5}));
  EXPECT_EQ(t.rows(1, 1).numel(), 0);
  EXPECT_THROW(t.rows(2, 4), Error);
  EXPECT_THROW(t.rows(-1, 1), Error);
  Tensor dst({2, 2});
  dst.copy_rows_from(t, 2, 1, 1);
  EXPECT_EQ(dst.to_vector(), (std::vector<float>{0, 0, 4, 5}));
  EXPECT_THROW(dst.copy_rows_from(Tensor({1, 3}), 0, 0, 1), Error);  // another width
}

TEST(TensorStorage, ImpossibleShapesAreRefusedByName) {
  const std::string negative = test::error_of([] { Tensor({-1, 3}); });
  EXPECT_NE(negative.find("impossible shape [-1, 3]"), std::string::npos) << negative;
  const std::string huge = test::error_of([] { Tensor({int64_t(1) << 40, int64_t(1) << 30}); });
  EXPECT_NE(huge.find("too large"), std::string::npos) << huge;
  EXPECT_THROW(Tensor({2}, {1.0f}), Error);  // values that do not fill the shape
}

}  // namespace
}  // namespace chroma

// Bit-exact comparison helpers for the sampling tests: the schedule, the RNG and the sampler
// arithmetic reproduce PyTorch's float32/bf16 roundings exactly, so they are checked bit for bit.
#pragma once
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace chroma::test {

// Expects got == ref element for element, bit for bit (so +0 ≠ −0); reports the mismatch count,
// the first mismatching index and the largest difference.
inline void expect_bitwise_equal(const std::string& name, const float* got, const float* ref, size_t n) {
  size_t mismatches = 0, first = 0;
  double max_diff = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::bit_cast<uint32_t>(got[i]) == std::bit_cast<uint32_t>(ref[i])) continue;
    if (mismatches++ == 0) first = i;
    max_diff = std::max(max_diff, std::abs(double(got[i]) - double(ref[i])));
  }
  EXPECT_EQ(mismatches, 0u) << name << ": " << mismatches << " of " << n << " values differ (max diff "
                            << max_diff << "), first at flat index " << first << ": got " << got[first]
                            << " ref " << ref[first];
}

inline void expect_bitwise_equal(const std::string& name, const Tensor& got, const Tensor& ref) {
  ASSERT_EQ(shape_str(got.shape), shape_str(ref.shape)) << name;
  expect_bitwise_equal(name, got.ptr(), ref.ptr(), got.values().size());
}

inline void expect_bitwise_equal(const std::string& name, const std::vector<float>& got, const Tensor& ref) {
  ASSERT_EQ(int64_t(got.size()), ref.numel()) << name;
  expect_bitwise_equal(name, got.data(), ref.ptr(), got.size());
}

// A stored F64 scalar ([1]) read at full precision (to_f32 would round it).
inline double stored_f64(const io::SafetensorsFile& file, const std::string& name) {
  const TensorView& v = file.get(name);
  EXPECT_EQ(v.dtype, DType::F64) << name;
  double x = 0;
  std::memcpy(&x, v.data, sizeof x);
  return x;
}

}  // namespace chroma::test

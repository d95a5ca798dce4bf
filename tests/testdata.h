// Shared test helpers: where the reference data lives, and tensor comparison with named tolerances.
// Reference data is read in place from $CHROMA_TESTDATA (default ../shared/testdata beside the
// repository); tests skip with a clear message when it is absent.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include "io/safetensors.h"
#include "tensor/trace.h"
#include "tensor/tensor.h"

namespace chroma::test {

inline std::string testdata_dir() {
  if (const char* env = std::getenv("CHROMA_TESTDATA"); env && *env) return env;
  return CHROMA_DEFAULT_TESTDATA;
}
inline std::string reference_path(const std::string& file) { return testdata_dir() + "/reference/" + file; }
inline std::string tokenizer_path(const std::string& file) { return testdata_dir() + "/tokenizer/" + file; }

// A path in the temporary folder private to this test process: ctest runs tests as parallel
// processes (and CI runs may overlap), so fixed names like /tmp/diffusers would collide.
inline std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::path(::testing::TempDir()) / ("chroma-" + std::to_string(::getpid()) + "-" + name);
}

// In CI (CI=true, as GitHub Actions and GitLab set it) the reference data must be there: a missing
// file fails the test instead of skipping it, so a broken checkout cannot pass by skipping.
inline bool testdata_required() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Skips the current test unless the file exists (fails instead under CI=true).
#define CHROMA_REQUIRE_FILE(path)                                                                  \
  do {                                                                                             \
    if (!std::filesystem::exists(path)) {                                                          \
      if (::chroma::test::testdata_required())                                                     \
        FAIL() << "reference data not found: " << (path) << " (CI=true requires it; set "          \
               << "CHROMA_TESTDATA to the folder holding reference/ and tokenizer/)";              \
      GTEST_SKIP() << "reference data not found: " << (path)                                       \
                   << " (set CHROMA_TESTDATA to the folder holding reference/ and tokenizer/)";    \
    }                                                                                              \
  } while (0)

// The chroma::Error message `f` throws, or "" when it throws none: for tests of error messages.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Keeps every traced intermediate (the "dump" side of dump-and-compare, in memory).
struct RecordingTracer : Tracer {
  std::map<std::string, Tensor> values;
  void record(const std::string& name, const Tensor& value) override { values[name] = value; }
};

// A tolerance relative to the reference's magnitude: pass when
//   max |got − ref| ≤ rel · max(1, max |ref|)
// (the comparison rule suggested in testdata/reference/README.md §6.2).
struct Tolerance {
  double rel;
};

struct Diff {
  double max_abs = 0, mean_abs = 0, ref_max = 0;
  int64_t worst = -1;
};

inline Diff diff(const Tensor& got, const Tensor& ref) {
  Diff d;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    double e = std::fabs(double(got.values()[size_t(i)]) - double(ref.values()[size_t(i)]));
    if (!(e <= d.max_abs)) { d.max_abs = e; d.worst = i; }  // NaN counts as worst
    d.mean_abs += e;
    d.ref_max = std::max(d.ref_max, std::fabs(double(ref.values()[size_t(i)])));
  }
  if (ref.numel()) d.mean_abs /= double(ref.numel());
  return d;
}

// Asserts shapes agree and the difference is inside the tolerance; prints name, errors and worst index.
inline void expect_close(const std::string& name, const Tensor& got, const Tensor& ref, Tolerance tol) {
  ASSERT_EQ(shape_str(got.shape), shape_str(ref.shape)) << name;
  Diff d = diff(got, ref);
  double bound = tol.rel * std::max(1.0, d.ref_max);
  EXPECT_LE(d.max_abs, bound) << name << ": max abs err " << d.max_abs << " (mean " << d.mean_abs
                              << ", ref max " << d.ref_max << ") at flat index " << d.worst
                              << (d.worst >= 0 ? " got " + std::to_string(got.values()[size_t(d.worst)]) +
                                                     " ref " + std::to_string(ref.values()[size_t(d.worst)])
                                               : std::string());
}

// The 8-bit acceptance rule for images: every value within one level of the reference `u8`
// ([1, 3, H, W] NCHW), and at most 0.5 % of them off by one (pixels on a quantisation boundary).
// rgb: H·W·3 interleaved. Returns the number of values off by one.
inline int64_t expect_rgb8_close(const std::vector<uint8_t>& rgb, const TensorView& u8) {
  const int64_t plane = u8.dim(2) * u8.dim(3);
  const auto* want = static_cast<const uint8_t*>(u8.data);
  int64_t off_by_one = 0;
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < plane; ++i) {
      const int d = std::abs(int(rgb[size_t(i * 3 + c)]) - int(want[c * plane + i]));
      EXPECT_LE(d, 1) << "channel " << c << " pixel " << i;
      if (d > 1) return off_by_one;
      off_by_one += d;
    }
  EXPECT_LE(double(off_by_one) / double(3 * plane), 0.005);
  return off_by_one;
}

// Tolerances from testdata/reference/README.md §6.2 (float32 port, bf16 weights): the goldens carry
// only float32 rounding noise (≤ 2.3e-6 relative), so these bounds leave room for a different
// but equally valid float32 summation order, and nothing more.
inline constexpr Tolerance kEmbeddingTol{1e-5};  // embeddings, schedules, RoPE: a few ulps
inline constexpr Tolerance kForwardTol{1e-4};    // one T5 / DiT / VAE forward, one sampler step
inline constexpr Tolerance kEndToEndTol{1e-3};   // latents and float images after a whole run

}  // namespace chroma::test

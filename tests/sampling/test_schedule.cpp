// flow get_schedule against the author's code: reference case b (testdata/reference/README.md §5),
// and the worked examples of chroma-spec.md §4.2.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "exact.h"
#include "sampling/schedule.h"
#include "tensor/error.h"
#include "testdata.h"

namespace chroma::sampling {
namespace {

struct ScheduleCase {
  const char* name;
  int steps;
  int64_t image_seq_len;
  bool shift;
};

// The five combinations stored in case b.
constexpr ScheduleCase kCases[] = {
    {"s4_n16_shift", 4, 16, true},          {"s4_n1024_shift", 4, 1024, true},
    {"s28_n4096_shift", 28, 4096, true},    {"s28_n4096_noshift", 28, 4096, false},
    {"s40_n16384_shift", 40, 16384, true},
};

TEST(Schedule, MatchesReferenceBitForBit) {
  const std::string path = test::reference_path("case-b-schedule.safetensors");
  CHROMA_REQUIRE_FILE(path);
  auto file = io::SafetensorsFile::open(path);
  for (const ScheduleCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const std::string suffix = c.name;
    // float32 schedules: linspace and time shift reproduce PyTorch's roundings exactly.
    test::expect_bitwise_equal("schedule." + suffix, flow_schedule(c.steps, c.image_seq_len, c.shift),
                               file->get("output.schedule." + suffix).to_f32());
    // mu is the same float64 expression as flow's get_lin_function.
    if (c.shift) {
      EXPECT_EQ(schedule_mu(c.image_seq_len), test::stored_f64(*file, "inter.mu." + suffix));
    }
  }
}

TEST(Schedule, EndpointsAndUnshiftedLinspace) {
  for (int steps : {1, 4, 28, 40, 50}) {
    const std::vector<float> ts = flow_schedule(steps, 4096, true);
    ASSERT_EQ(ts.size(), size_t(steps + 1));
    EXPECT_EQ(ts.front(), 1.0f) << steps;  // reciprocal(e^mu)·e^mu happens to round back to 1 here
    EXPECT_EQ(ts.back(), 0.0f) << steps;   // 1/0 = inf ⇒ t' = 0 exactly
    for (int i = 0; i < steps; ++i) EXPECT_GT(ts[size_t(i)], ts[size_t(i + 1)]) << steps << " " << i;
  }
  // Without shift: linspace(1, 0, 5) has exact binary values.
  EXPECT_EQ(flow_schedule(4, 16, false), (std::vector<float>{1.0f, 0.75f, 0.5f, 0.25f, 0.0f}));
}

TEST(Schedule, SpecExamples) {
  // chroma-spec.md §4.2 (values printed to 6 decimals there, hence the 1e-6 bound).
  constexpr double kPrintedDigits = 1e-6;
  const std::vector<float> mu115 = flow_schedule(4, 4096, true), mu063 = flow_schedule(4, 1024, true);
  const double want115[] = {1, 0.904531, 0.759511, 0.512844, 0};
  const double want063[] = {1, 0.849235, 0.652489, 0.384945, 0};
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(mu115[size_t(i)], want115[i], kPrintedDigits) << i;
    EXPECT_NEAR(mu063[size_t(i)], want063[i], kPrintedDigits) << i;
  }
  // mu: 512² → 0.63, 1024² → 1.15, 2048² → 3.23 (§4.2); float64 rounding only.
  constexpr double kFloat64 = 1e-12;
  EXPECT_NEAR(schedule_mu(1024), 0.63, kFloat64);
  EXPECT_NEAR(schedule_mu(4096), 1.15, kFloat64);
  EXPECT_NEAR(schedule_mu(16384), 3.23, kFloat64);
  EXPECT_NEAR(schedule_mu(256), 0.5, kFloat64);
}

TEST(Schedule, RejectsBadArguments) {
  EXPECT_THROW(flow_schedule(0, 16, true), Error);
  EXPECT_THROW(flow_schedule(-3, 16, false), Error);
  EXPECT_THROW(flow_schedule(4, 0, true), Error);
}

}  // namespace
}  // namespace chroma::sampling

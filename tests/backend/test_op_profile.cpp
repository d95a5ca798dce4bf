// The benchmark's op-timing hook (backend/op_profile.h): off by default, and when a profiler is
// bound, the useful work it counts per op class is the exact formula of docs/PERFORMANCE.md; a
// profiler sees only the ops of the thread it is bound to.
#include <gtest/gtest.h>

#include <thread>

#include "backend/op_profile.h"
#include "backend/ops.h"

namespace chroma::ops::profile {
namespace {

const OpTotals& totals(const Profile& p, const std::string& section, OpClass c) {
  return p.at(section).classes[size_t(c)];
}

TEST(OpProfile, OffByDefaultRecordsNothing) {
  Profiler profiler;
  {
    const Scope bound(&profiler);
    const Scope unbound(nullptr);  // an inner scope without a profiler: off
    ASSERT_FALSE(enabled());
    Tensor x({2, 3});
    ops::add(x, x);
  }
  EXPECT_TRUE(profiler.totals().empty());
}

TEST(OpProfile, SeesOnlyItsOwnThread) {
  Profiler profiler;
  const Scope bound(&profiler);
  std::thread other([] {
    EXPECT_FALSE(enabled());
    Tensor x({2, 3});
    ops::add(x, x);
  });
  other.join();
  EXPECT_TRUE(profiler.totals().empty());
  Tensor x({2, 3});
  ops::add(x, x);
  EXPECT_EQ(profiler.totals().at("other").ops.at("add").calls, 1);
}

TEST(OpProfile, CountsUsefulWorkPerClassAndSection) {
  Profiler profiler;
  const Scope on(&profiler);
  Tensor w({5, 4});
  {
    const Section s("denoising");
    ops::linear(Tensor({3, 4}), view_of(w));                            // 2·M·N·K = 2·3·5·4
    const Tensor q({5, 8});
    const int64_t lens[] = {2, 3};
    ops::attention(q, q, q, 2, lens, 1.0f);                             // Σ 4·L²·(H·D) = 4·(4 + 9)·8
    ops::gelu_tanh(Tensor({3, 4}));                                     // 12 floats read + written
  }
  Tensor k({6, 2, 3, 3});
  ops::conv2d(Tensor({2, 5, 5}), view_of(k), {}, 1, {1, 1, 1, 1});  // 2·O·C·kh·kw·H·W = 2·6·2·9·25

  const Profile p = profiler.totals();
  EXPECT_EQ(totals(p, "denoising", OpClass::Linear).flops, 120.0);
  EXPECT_EQ(totals(p, "denoising", OpClass::Linear).calls, 1);
  EXPECT_EQ(totals(p, "denoising", OpClass::Attention).flops, 416.0);
  EXPECT_EQ(totals(p, "denoising", OpClass::Norm).bytes, 96.0);
  EXPECT_EQ(p.at("denoising").ops.at("gelu_tanh").calls, 1);
  EXPECT_EQ(totals(p, "other", OpClass::Conv).flops, 5400.0);  // outside a Section: "other"
}

}  // namespace
}  // namespace chroma::ops::profile

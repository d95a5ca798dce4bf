// attention against the double reference: packed sequences, bias, a long single-head sequence.
#include <gtest/gtest.h>

#include "reference_ops.h"
#include "testdata.h"

namespace chroma::test {
namespace {

void check_attention(int H, int64_t D, std::vector<int64_t> lens, bool with_bias, uint32_t seed) {
  int64_t L = 0;
  for (int64_t n : lens) L += n;
  // Spread ±2 so the softmax is neither flat nor one-hot.
  const Tensor q = random_tensor({L, H * D}, seed, -2, 2), k = random_tensor({L, H * D}, seed + 1, -2, 2),
               v = random_tensor({L, H * D}, seed + 2);
  const Tensor bias = random_tensor({H, L, L}, seed + 3, -3, 3);
  const float scale = 1.0f / std::sqrt(float(D));
  const Tensor got = ops::attention(q, k, v, H, lens, scale, with_bias ? &bias : nullptr);
  const Tensor ref = ref_attention(q, k, v, H, lens, scale, with_bias ? &bias : nullptr);
  expect_close("attention H" + std::to_string(H) + " D" + std::to_string(D) + " L" + std::to_string(L), got, ref,
               kSumTol);
}

TEST(Attention, SingleSequences) {
  for (int64_t L : {1, 7, 31, 33, 129, 300}) check_attention(3, 16, {L}, false, uint32_t(L));
  check_attention(1, 1, {5}, false, 3);
  check_attention(2, 128, {70}, false, 4);
}

TEST(Attention, WithBias) {
  for (int64_t L : {1, 33, 300}) check_attention(4, 8, {L}, true, uint32_t(L + 10));
}

TEST(Attention, PackedSequences) {
  check_attention(3, 16, {1, 7, 33, 1, 140}, false, 21);
  check_attention(2, 64, {129, 0, 31}, false, 22);
}

// One bias [H, Lb, Lb] for packed sequences (T5's relative bias for a batch of prompts): sequence s
// adds the top-left [len_s, len_s] block. Each sequence must get what it gets alone with that block
// as its own bias, and what the double reference gives.
TEST(Attention, PackedSequencesUseTopLeftOfBias) {
  const int H = 3;
  const int64_t D = 16, Lb = 150;  // Lb above every length: the unused part must be ignored
  const std::vector<int64_t> lens = {13, 1, 140, 0, 40};
  int64_t L = 0;
  for (int64_t n : lens) L += n;
  const Tensor q = random_tensor({L, H * D}, 41, -2, 2), k = random_tensor({L, H * D}, 42, -2, 2),
               v = random_tensor({L, H * D}, 43);
  const Tensor bias = random_tensor({H, Lb, Lb}, 44, -3, 3);
  const float scale = 0.25f;
  const Tensor got = ops::attention(q, k, v, H, lens, scale, &bias);
  int64_t begin = 0;
  for (int64_t n : lens) {
    Tensor block({H, n, n});  // bias[:, :n, :n]
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) block.values()[size_t((h * n + i) * n + j)] = bias.values()[size_t((h * Lb + i) * Lb + j)];
    const std::vector<int64_t> one = {n};
    const Tensor qs = q.rows(begin, begin + n), ks = k.rows(begin, begin + n), vs = v.rows(begin, begin + n);
    const std::string name = "attention sequence of " + std::to_string(n);
    expect_close(name + " vs alone", got.rows(begin, begin + n), ops::attention(qs, ks, vs, H, one, scale, &block),
                 kSumTol);
    expect_close(name + " vs reference", got.rows(begin, begin + n), ref_attention(qs, ks, vs, H, one, scale, &block),
                 kSumTol);
    begin += n;
  }
}

// Changing one sequence's keys and values must leave the other sequences' outputs bit-identical.
TEST(Attention, SequencesDoNotAttendAcrossEachOther) {
  const std::vector<int64_t> lens = {40, 50, 10};
  const int H = 2;
  const int64_t D = 8, L = 100;
  const Tensor q = random_tensor({L, H * D}, 1), k = random_tensor({L, H * D}, 2), v = random_tensor({L, H * D}, 3);
  Tensor k2 = k, v2 = v;
  for (int64_t i = 40 * H * D; i < 90 * H * D; ++i) k2.values()[size_t(i)] += 1.0f, v2.values()[size_t(i)] -= 3.0f;
  const Tensor a = ops::attention(q, k, v, H, lens, 0.3f);
  const Tensor b = ops::attention(q, k2, v2, H, lens, 0.3f);
  for (int64_t i = 0; i < L * H * D; ++i) {
    const bool middle = i >= 40 * H * D && i < 90 * H * D;
    if (!middle) {
      ASSERT_EQ(a.values()[size_t(i)], b.values()[size_t(i)]) << "flat index " << i;
    }
  }
}

// A long single-head sequence (many key tiles): compare every 37th query row with the reference.
TEST(Attention, LongSingleHead) {
  const int64_t L = 3000, D = 64;
  const Tensor q = random_tensor({L, D}, 31, -2, 2), k = random_tensor({L, D}, 32, -2, 2), v = random_tensor({L, D}, 33);
  const std::vector<int64_t> lens = {L};
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < L; i += 37) rows.push_back(i);
  rows.push_back(L - 1);
  const Tensor got = ops::attention(q, k, v, 1, lens, 0.125f);
  const Tensor ref = ref_attention(q, k, v, 1, lens, 0.125, nullptr, rows);
  Tensor got_rows({int64_t(rows.size()), D}), ref_rows({int64_t(rows.size()), D});
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t d = 0; d < D; ++d) {
      got_rows.values()[r * D + size_t(d)] = got.values()[size_t(rows[r] * D + d)];
      ref_rows.values()[r * D + size_t(d)] = ref.values()[size_t(rows[r] * D + d)];
    }
  expect_close("attention L3000 D64", got_rows, ref_rows, kSumTol);
}

TEST(Attention, BadShapesThrow) {
  const Tensor q = random_tensor({10, 8}, 1);
  const std::vector<int64_t> lens = {4, 5}, ok = {10}, two = {5, 5};
  EXPECT_THROW(ops::attention(q, q, q, 2, lens, 1.0f), Error);      // lengths sum to 9
  EXPECT_THROW(ops::attention(q, q, q, 3, ok, 1.0f), Error);        // 8 not divisible by 3
  EXPECT_THROW(ops::attention(q, q, random_tensor({10, 4}, 2), 2, ok, 1.0f), Error);
  const Tensor bias = random_tensor({2, 10, 10}, 3), wrong = random_tensor({2, 10, 9}, 3);
  EXPECT_NO_THROW(ops::attention(q, q, q, 2, two, 1.0f, &bias));  // sequences of 5 use bias[:, :5, :5]
  EXPECT_THROW(ops::attention(q, q, q, 2, ok, 1.0f, &wrong), Error);                          // not square
  const Tensor small = random_tensor({2, 9, 9}, 3), heads3 = random_tensor({3, 10, 10}, 3),
               flat = random_tensor({20, 10}, 3);
  EXPECT_THROW(ops::attention(q, q, q, 2, ok, 1.0f, &small), Error);   // 10 > 9
  EXPECT_THROW(ops::attention(q, q, q, 2, ok, 1.0f, &heads3), Error);  // 3 heads, not 2
  EXPECT_THROW(ops::attention(q, q, q, 2, ok, 1.0f, &flat), Error);    // not [H, Lb, Lb]
}

// The message names the bias shape and the sequence it must cover.
TEST(Attention, TooSmallBiasIsAClearError) {
  const Tensor q = random_tensor({10, 8}, 1), bias = random_tensor({2, 6, 6}, 3);
  const std::vector<int64_t> lens = {3, 7};
  try {
    ops::attention(q, q, q, 2, lens, 1.0f, &bias);
    FAIL() << "a [2, 6, 6] bias for a sequence of 7 was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("[2, 6, 6]"), std::string::npos) << what;
    EXPECT_NE(what.find("7"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace chroma::test

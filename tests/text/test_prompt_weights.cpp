// Prompt weighting (text/prompt_weights.h): the emphasis syntax as ComfyUI reads it, both rules for
// applying weights to T5 features against exact math, and weighted tokenization against the plain
// tokenizer's ids.
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/error.h"
#include "testdata.h"
#include "text/prompt_weights.h"
#include "text/tokenizer.h"

namespace chroma::text {
namespace {

using W = std::vector<WeightedText>;

W parse(const std::string& s) { return parse_prompt_weights(s, PromptWeighting::ComfyUI); }

TEST(PromptWeights, ParsesComfyUIsEmphasis) {
  EXPECT_EQ(parse("a red fox"), (W{{"a red fox", 1.0f}}));
  EXPECT_EQ(parse("a (red) fox"), (W{{"a ", 1.0f}, {"red", 1.1f}, {" fox", 1.0f}}));
  EXPECT_EQ(parse("((red))"), (W{{"red", 1.1f * 1.1f}}));
  EXPECT_EQ(parse("a (red fox:1.5), snow"), (W{{"a ", 1.0f}, {"red fox", 1.5f}, {", snow", 1.0f}}));
  // An explicit weight replaces the enclosing one; the rest of the group keeps the group's weight.
  EXPECT_EQ(parse("(a (b:2) c:0.5)"), (W{{"a ", 0.5f}, {"b", 2.0f}, {" c", 0.5f}}));
  EXPECT_EQ(parse("(x (y:1.5))"), (W{{"x ", 1.1f}, {"y", 1.5f}}));
  EXPECT_EQ(parse("(fox:-0.5)"), (W{{"fox", -0.5f}}));
  // Escaped parentheses are text; so are unmatched ones.
  EXPECT_EQ(parse("a \\(red\\) fox"), (W{{"a (red) fox", 1.0f}}));
  EXPECT_EQ(parse("a (red fox"), (W{{"a (red fox", 1.0f}}));
  EXPECT_EQ(parse("a red) fox"), (W{{"a red) fox", 1.0f}}));
  EXPECT_EQ(parse("(a) (b"), (W{{"a", 1.1f}, {" (b", 1.0f}}));
  // A ":W" that is not a number is text (ComfyUI), as is a colon right after "(".
  EXPECT_EQ(parse("(a:b)"), (W{{"a:b", 1.1f}}));
  EXPECT_EQ(parse("(:1.2)"), (W{{":1.2", 1.1f}}));
  EXPECT_EQ(parse("<lora:ink:0.8> a fox"), (W{{"<lora:ink:0.8> a fox", 1.0f}}));
  EXPECT_EQ(parse(""), W{});
  // none: literal.
  EXPECT_EQ(parse_prompt_weights("a (red:1.5) fox", PromptWeighting::None), (W{{"a (red:1.5) fox", 1.0f}}));
}

TEST(PromptWeights, ImpossibleWeightsAreErrors) {
  for (const char* bad : {"(fox:1e9)", "(fox:101)", "(fox:-101)", "(fox:nan)", "(fox:inf)"}) {
    try {
      parse(bad);
      ADD_FAILURE() << "no error for " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("prompt weight"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(parse("(fox:100)"));
}

TEST(PromptWeights, NamesRoundTrip) {
  PromptWeighting w;
  for (const char* name : {"comfyui", "sdcpp", "none"}) {
    ASSERT_TRUE(parse_prompt_weighting(name, &w));
    EXPECT_STREQ(prompt_weighting_name(w), name);
  }
  EXPECT_FALSE(parse_prompt_weighting("a1111", &w));
}

TEST(PromptWeights, ComfyUIRuleBlendsTowardsTheEmptyPrompt) {
  Tensor z({3, 2}, {1, 2, 3, 4, 5, 6}), empty({4, 2}, {0.5f, 0.5f, 1, -1, 2, 2, 9, 9});
  const Tensor original = z;
  apply_prompt_weights(z, empty, {1.0f, 2.0f, 0.5f}, PromptWeighting::ComfyUI);
  EXPECT_EQ(z.to_vector(), (std::vector<float>{1, 2, (3 - 1) * 2.0f + 1, (4 + 1) * 2.0f - 1, (5 - 2) * 0.5f + 2, (6 - 2) * 0.5f + 2}));
  Tensor same = original;
  apply_prompt_weights(same, empty, {1.0f, 1.0f}, PromptWeighting::ComfyUI);
  EXPECT_EQ(same.to_vector(), original.to_vector());
  EXPECT_THROW(apply_prompt_weights(same, Tensor({1, 2}), {1.0f, 2.0f}, PromptWeighting::ComfyUI), Error);
}

TEST(PromptWeights, SdCppRuleScalesAndKeepsTheMean) {
  Tensor z({3, 2}, {1, 2, 3, 4, 5, 6});
  apply_prompt_weights(z, Tensor(), {2.0f, 1.0f, 1.0f}, PromptWeighting::SdCpp);
  // Scaled: 2, 4, 3, 4, 5, 6 (sum 24); the original sum is 21, so every value × 21/24.
  const float k = 21.0f / 24.0f;
  EXPECT_EQ(z.to_vector(), (std::vector<float>{2 * k, 4 * k, 3 * k, 4 * k, 5 * k, 6 * k}));
}

// Weighted tokenization: stretches are tokenized one after the other with encode()'s rules, so
// "a (red:1.5) fox" has the ids of "a red fox", with "red"'s ids at 1.5 and EOS at 1.
TEST(PromptWeights, WeightedIdsAreThePlainIdsWithWeights) {
  const std::string model = test::tokenizer_path("spiece.model");
  CHROMA_REQUIRE_FILE(model);
  const T5Tokenizer tok(model);
  const auto one = tok.encode(W{{"a red fox sitting in fresh snow", 1.0f}});
  EXPECT_EQ(one.ids, tok.encode("a red fox sitting in fresh snow"));
  EXPECT_EQ(one.weights, std::vector<float>(one.ids.size(), 1.0f));
  const auto w = tok.encode(parse("a (red:1.5) fox"));
  EXPECT_EQ(w.ids, tok.encode("a red fox"));
  const size_t a = tok.encode("a").size() - 1, red = tok.encode("red").size() - 1;
  ASSERT_EQ(w.weights.size(), w.ids.size());
  for (size_t i = 0; i < w.ids.size(); ++i)
    EXPECT_EQ(w.weights[i], i >= a && i < a + red ? 1.5f : 1.0f) << i;
  // Truncated like encode(): 511 ids and EOS.
  std::string long_text;
  for (int i = 0; i < 600; ++i) long_text += "(fox:2) ";
  const auto t = tok.encode(parse(long_text));
  EXPECT_EQ(t.ids.size(), T5Tokenizer::kMaxTokens);
  EXPECT_EQ(t.ids.back(), T5Tokenizer::kEos);
  EXPECT_EQ(t.weights.back(), 1.0f);
  EXPECT_EQ(t.weights.front(), 2.0f);
}

}  // namespace
}  // namespace chroma::text

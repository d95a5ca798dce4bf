// T5 tokenizer: prompt text → input ids for the T5-XXL text encoder (chroma-spec.md §2.1).
//
// Wraps the SentencePiece unigram model `spiece.model` of t5-v1_1-xxl (32000 pieces; <pad>=0, </s>=1,
// <unk>=2, no BOS) and applies the rules of the Hugging Face fast tokenizer (`T5TokenizerFast`, FLUX's
// `tokenizer_2/tokenizer.json`) that the Chroma pipelines call:
//   - the literal strings </s>, <pad>, <unk> and <extra_id_0>..<extra_id_99> are special tokens
//     (ids 1, 0, 2 and 32099..32000, the sentinels being HF additions on top of the 32000 pieces);
//     the text between them is tokenized separately, whitespace before a special token is dropped,
//     and text right after one gets no "▁" prefix unless it starts with whitespace (non-legacy T5);
//   - the first 511 ids are kept and EOS (1) is always appended, so 1 ≤ encode(text).size() ≤ 512.
// Padding to 512 with kPad and the attention mask are the caller's business (§2.2).
// Reference ids: testdata/tokenizer/cases.jsonl (see its README).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "text/prompt_weights.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace chroma::text {

class T5Tokenizer {
 public:
  static constexpr int32_t kPad = 0, kEos = 1, kUnk = 2;
  static constexpr size_t kMaxTokens = 512;  // text ids + EOS, the T5 max_length Chroma uses

  // Loads spiece.model. Throws chroma::Error (one line naming the path) when the file is missing,
  // is not a SentencePiece model, or is not the 32000-piece T5 vocabulary.
  explicit T5Tokenizer(const std::string& spiece_model_path);
  ~T5Tokenizer();
  T5Tokenizer(T5Tokenizer&&) noexcept;
  T5Tokenizer& operator=(T5Tokenizer&&) noexcept;

  // UTF-8 prompt → ids: [text ids (at most kMaxTokens − 1)] + [kEos]. Unpadded; "" → [kEos].
  std::vector<int32_t> encode(const std::string& text) const;

  // Weighted stretches of a prompt (prompt_weights.h) → the ids of each stretch's text as encode()
  // gives them, one stretch after the other, truncated and ended with kEos the same way, and each id's
  // weight (kEos: 1). One stretch of weight 1 gives encode(text) exactly.
  struct WeightedIds {
    std::vector<int32_t> ids;
    std::vector<float> weights;
  };
  WeightedIds encode(const std::vector<WeightedText>& stretches) const;

 private:
  // Encodes one stretch of plain text (no special tokens inside) with SentencePiece.
  // `after_special`: the stretch follows a special token, so it gets no dummy "▁" prefix of its own.
  void encode_plain(const std::string& text, bool after_special, std::vector<int32_t>& ids) const;
  // The ids of `text` (special tokens split out), appended to ids; no truncation, no EOS.
  void encode_text(const std::string& text, std::vector<int32_t>& ids) const;

  std::string path_;  // for error messages
  // The same model loaded three times with different normalizer flags (see tokenizer.cpp):
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;           // as shipped: dummy prefix on
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_no_prefix_; // add_dummy_prefix off
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_raw_space_; // ...and leading spaces kept
};

}  // namespace chroma::text

// T5 tokenizer — chroma-spec.md §2.1; behaviour and reference ids: testdata/tokenizer/README.md.
#include "text/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "io/untrusted.h"
#include "tensor/error.h"

namespace chroma::text {
namespace {

using sentencepiece::SentencePieceProcessor;

constexpr int kVocabPieces = 32000;  // pieces in spiece.model; HF sentinels start right after
constexpr int kExtraIds = 100;       // <extra_id_0> .. <extra_id_99>

// The special tokens the HF fast tokenizer matches in raw text, with their ids.
// <extra_id_N> = 32099 − N: HF appends the sentinels to the vocabulary in reverse order
// (<extra_id_99> = 32000); spiece.model itself has no such pieces.
struct SpecialToken {
  std::string text;
  int32_t id;
};

std::vector<SpecialToken> special_tokens() {
  std::vector<SpecialToken> out = {{"<pad>", T5Tokenizer::kPad}, {"</s>", T5Tokenizer::kEos},
                                   {"<unk>", T5Tokenizer::kUnk}};
  for (int n = 0; n < kExtraIds; ++n)
    out.push_back({"<extra_id_" + std::to_string(n) + ">", kVocabPieces + kExtraIds - 1 - n});
  return out;
}

// Returns the special token starting at text[pos], or nullptr. No special token is a prefix of
// another (each ends in '>'), so the first match is the only one.
const SpecialToken* match_special(const std::vector<SpecialToken>& specials, const std::string& text,
                                  size_t pos) {
  if (text[pos] != '<') return nullptr;
  for (const SpecialToken& s : specials)
    if (text.compare(pos, s.text.size(), s.text) == 0) return &s;
  return nullptr;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// spiece.model of T5 is 792 kB; a model file 100× larger is not a T5 tokenizer.
constexpr uint64_t kMaxModelBytes = 64u << 20;

std::string read_file(const std::string& path) {
  try {
    return io::read_input_file(path, kMaxModelBytes);  // a folder or FIFO is refused, not read or waited on
  } catch (const Error& e) {
    throw Error(std::string("T5 tokenizer: ") + e.what());
  }
}

// Protobuf wire format, only as far as check_pieces needs it: a varint at s[pos], advancing pos;
// false when it runs past the end or over 64 bits.
bool read_varint(std::string_view s, size_t& pos, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && pos < s.size(); shift += 7) {
    const auto byte = uint8_t(s[pos++]);
    value |= uint64_t(byte & 0x7f) << shift;
    if (byte < 0x80) return true;
  }
  return false;
}

// Calls f(field, bytes) for each length-delimited field of the message in s; stops quietly at the
// first malformed field (SentencePiece's own parser then reports the file).
template <typename F>
void for_each_bytes_field(std::string_view s, F&& f) {
  size_t pos = 0;
  uint64_t tag = 0, n = 0;
  while (pos < s.size() && read_varint(s, pos, tag)) {
    switch (tag & 7) {
      case 0: if (!read_varint(s, pos, n)) return; break;
      case 1: pos += 8; break;
      case 5: pos += 4; break;
      case 2:
        if (!read_varint(s, pos, n) || n > s.size() - pos) return;
        f(tag >> 3, s.substr(pos, n));
        pos += n;
        break;
      default: return;
    }
  }
}

// libsentencepiece builds a trie of the pieces whose builder throws on a piece with a NUL byte from
// a frame where the exception cannot propagate, so the process aborts (found by fuzz_tokenizer):
// such pieces are refused before the library sees them. ModelProto.pieces = 1, SentencePiece.piece = 1.
void check_pieces(std::string_view serialized, const std::string& path) {
  int index = 0;
  for_each_bytes_field(serialized, [&](uint64_t field, std::string_view piece_message) {
    if (field != 1) return;
    for_each_bytes_field(piece_message, [&](uint64_t piece_field, std::string_view piece) {
      if (piece_field == 1 && piece.find('\0') != std::string_view::npos)
        throw Error("T5 tokenizer: " + path + " is not a valid SentencePiece model (piece " + std::to_string(index) +
                    " contains a NUL byte)");
    });
    ++index;
  });
}

// Loads a serialized ModelProto; a failure (corrupt or truncated file) becomes a one-line Error.
std::unique_ptr<SentencePieceProcessor> load(const std::string& serialized, const std::string& path) {
  check_pieces(serialized, path);
  auto sp = std::make_unique<SentencePieceProcessor>();
  auto status = sp->LoadFromSerializedProto(serialized);
  if (!status.ok())
    throw Error("T5 tokenizer: " + path + " is not a valid SentencePiece model (" +
                one_line(status.ToString()) + ")");
  return sp;
}

// The ids the T5 encoder's special rows assume (§2.1); anything else is a different tokenizer.
void check_t5_vocabulary(const SentencePieceProcessor& sp, const std::string& path) {
  if (sp.GetPieceSize() != kVocabPieces)
    throw Error("T5 tokenizer: " + path + " has " + std::to_string(sp.GetPieceSize()) +
                " pieces, expected the 32000-piece T5 vocabulary");
  if (sp.PieceToId("<pad>") != T5Tokenizer::kPad || sp.PieceToId("</s>") != T5Tokenizer::kEos ||
      sp.unk_id() != T5Tokenizer::kUnk || !sp.IsControl(T5Tokenizer::kPad) ||
      !sp.IsControl(T5Tokenizer::kEos))
    throw Error("T5 tokenizer: " + path + " does not have <pad>=0, </s>=1, <unk>=2 (not a T5 spiece.model)");
}

// A NormalizerSpec override appended to the serialized ModelProto. Protobuf merges repeated
// occurrences of a singular message field, so appending `normalizer_spec { add_dummy_prefix: false }`
// flips that flag and keeps everything else (charsmap, other flags). Field numbers from
// sentencepiece_model.proto: ModelProto.normalizer_spec = 3, NormalizerSpec.add_dummy_prefix = 3,
// NormalizerSpec.remove_extra_whitespaces = 4 (both bools, wire type varint).
std::string with_normalizer_override(const std::string& serialized, bool keep_leading_spaces) {
  std::string spec = {0x18, 0x00};                    // add_dummy_prefix = false
  if (keep_leading_spaces) spec += {0x20, 0x00};      // remove_extra_whitespaces = false
  std::string field = {0x1A, char(spec.size())};      // tag of field 3, length-delimited
  return serialized + field + spec;
}

bool starts_with_space_marker(const std::vector<std::string>& pieces) {
  static const std::string kSpace = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's whitespace
  return !pieces.empty() && pieces[0].compare(0, kSpace.size(), kSpace) == 0;
}

}  // namespace

T5Tokenizer::T5Tokenizer(const std::string& spiece_model_path) : path_(spiece_model_path) {
  const std::string serialized = read_file(path_);
  sp_ = load(serialized, path_);
  check_t5_vocabulary(*sp_, path_);
  // Text after a special token gets no dummy "▁" (HF non-legacy, Metaspace prepend_scheme "first"):
  // sp_no_prefix_ encodes it. Whether it starts with whitespace is decided after normalization
  // (tabs, NBSP, zero-width spaces become spaces; BEL/ESC are deleted), which sp_raw_space_ shows
  // by keeping leading spaces as "▁".
  sp_no_prefix_ = load(with_normalizer_override(serialized, false), path_);
  sp_raw_space_ = load(with_normalizer_override(serialized, true), path_);
}

T5Tokenizer::~T5Tokenizer() = default;
T5Tokenizer::T5Tokenizer(T5Tokenizer&&) noexcept = default;
T5Tokenizer& T5Tokenizer::operator=(T5Tokenizer&&) noexcept = default;

void T5Tokenizer::encode_plain(const std::string& text, bool after_special, std::vector<int32_t>& ids) const {
  const SentencePieceProcessor* sp = sp_.get();
  if (after_special) {
    // HF keeps leading whitespace after a special token as "▁"; the shipped model turns a leading
    // run of whitespace into exactly that, so only text starting with a non-space needs sp_no_prefix_.
    std::vector<std::string> pieces;
    auto status = sp_raw_space_->Encode(text, &pieces);
    if (!status.ok()) throw Error("T5 tokenizer: " + path_ + ": encode failed (" + one_line(status.ToString()) + ")");
    if (!starts_with_space_marker(pieces)) sp = sp_no_prefix_.get();
  }
  // Trailing whitespace (before the next special token or the end) is dropped by the model's
  // remove_extra_whitespaces, as HF's right-strip normalizer does.
  std::vector<int> piece_ids;
  auto status = sp->Encode(text, &piece_ids);
  if (!status.ok()) throw Error("T5 tokenizer: " + path_ + ": encode failed (" + one_line(status.ToString()) + ")");
  ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
}

void T5Tokenizer::encode_text(const std::string& text, std::vector<int32_t>& ids) const {
  static const std::vector<SpecialToken> specials = special_tokens();
  // Split the text at special-token strings; each stretch between them is tokenized on its own.
  size_t start = 0;  // first byte of the current plain stretch
  bool after_special = false;
  for (size_t pos = 0; pos < text.size();) {
    const SpecialToken* special = match_special(specials, text, pos);
    if (!special) {
      ++pos;
      continue;
    }
    encode_plain(text.substr(start, pos - start), after_special, ids);
    ids.push_back(special->id);
    pos += special->text.size();
    start = pos;
    after_special = true;
  }
  encode_plain(text.substr(start), after_special, ids);
}

// chroma-spec.md §2.1: HF T5TokenizerFast, truncation=True, max_length=512, no BOS, EOS appended.
std::vector<int32_t> T5Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  encode_text(text, ids);
  // Keep the first 511 ids so that EOS still fits in 512; EOS is appended even after a literal "</s>".
  if (ids.size() > kMaxTokens - 1) ids.resize(kMaxTokens - 1);
  ids.push_back(kEos);
  return ids;
}

T5Tokenizer::WeightedIds T5Tokenizer::encode(const std::vector<WeightedText>& stretches) const {
  WeightedIds out;
  for (const WeightedText& s : stretches) {
    encode_text(s.text, out.ids);
    out.weights.resize(out.ids.size(), s.weight);
  }
  if (out.ids.size() > kMaxTokens - 1) out.ids.resize(kMaxTokens - 1);
  out.weights.resize(out.ids.size());
  out.ids.push_back(kEos);
  out.weights.push_back(1.0f);
  return out;
}

}  // namespace chroma::text

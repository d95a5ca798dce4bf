#include "text/prompt_weights.h"

#include <cmath>
#include <cstdlib>

#include "tensor/error.h"

namespace chroma::text {
namespace {

// A number the whole of `s` spells (strtof's syntax), or false.
bool parse_weight(const std::string& s, float& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  out = std::strtof(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

struct Parser {
  const std::string& s;
  std::vector<WeightedText> out;

  void emit(const std::string& text, float weight) {
    if (text.empty()) return;
    if (!out.empty() && out.back().weight == weight) out.back().text += text;
    else out.push_back({text, weight});
  }

  // Index of the ")" closing the "(" at `open`, skipping escapes and nested pairs; npos if unmatched.
  size_t closing(size_t open) const {
    int depth = 0;
    for (size_t i = open; i < s.size(); ++i) {
      if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '(' || s[i + 1] == ')')) {
        ++i;
      } else if (s[i] == '(') {
        ++depth;
      } else if (s[i] == ')' && --depth == 0) {
        return i;
      }
    }
    return std::string::npos;
  }

  // s[begin, end) at `weight`.
  void parse(size_t begin, size_t end, float weight) {
    std::string text;
    for (size_t i = begin; i < end; ++i) {
      const char c = s[i];
      if (c == '\\' && i + 1 < end && (s[i + 1] == '(' || s[i + 1] == ')')) {
        text += s[++i];
        continue;
      }
      const size_t close = c == '(' ? closing(i) : std::string::npos;
      if (close == std::string::npos || close >= end) {
        text += c;  // a literal character, or an unmatched parenthesis read literally
        continue;
      }
      emit(text, weight);
      text.clear();
      // "(inner)" or "(inner:W)": the weight after the last colon at this level, if it is a number.
      float inner_weight = weight * 1.1f;
      size_t inner_end = close;
      const size_t colon = s.rfind(':', close);
      if (colon != std::string::npos && colon > i + 1 && s.find('(', colon) > close) {  // ComfyUI: not at the start
        float w = 0;
        if (parse_weight(s.substr(colon + 1, close - colon - 1), w)) {
          if (!std::isfinite(w) || std::abs(w) > kMaxPromptWeight)
            throw Error("prompt weight '" + s.substr(colon + 1, close - colon - 1) + "' in '" + s.substr(i, close - i + 1) +
                        "': must be a finite number from -" + std::to_string(int(kMaxPromptWeight)) + " to " +
                        std::to_string(int(kMaxPromptWeight)));
          inner_weight = w;
          inner_end = colon;
        }
      }
      parse(i + 1, inner_end, inner_weight);
      i = close;
    }
    emit(text, weight);
  }
};

}  // namespace

const char* prompt_weighting_name(PromptWeighting w) {
  switch (w) {
    case PromptWeighting::ComfyUI: return "comfyui";
    case PromptWeighting::SdCpp: return "sdcpp";
    case PromptWeighting::None: return "none";
  }
  return "?";
}

bool parse_prompt_weighting(const std::string& name, PromptWeighting* out) {
  for (PromptWeighting w : {PromptWeighting::ComfyUI, PromptWeighting::SdCpp, PromptWeighting::None})
    if (name == prompt_weighting_name(w)) {
      *out = w;
      return true;
    }
  return false;
}

std::vector<WeightedText> parse_prompt_weights(const std::string& prompt, PromptWeighting weighting) {
  if (weighting == PromptWeighting::None) return {{prompt, 1.0f}};
  Parser p{prompt, {}};
  p.parse(0, prompt.size(), 1.0f);
  return p.out;
}

void apply_prompt_weights(Tensor& z, const Tensor& z_empty, const std::vector<float>& weights, PromptWeighting weighting) {
  const int64_t rows = z.dim(0), C = z.dim(1);
  const int64_t n = std::min<int64_t>(rows, int64_t(weights.size()));
  bool any = false;
  for (int64_t j = 0; j < n; ++j) any = any || weights[size_t(j)] != 1.0f;
  if (!any || weighting == PromptWeighting::None) return;
  if (weighting == PromptWeighting::ComfyUI) {
    if (z_empty.rank() != 2 || z_empty.dim(0) < n || z_empty.dim(1) != C)
      throw Error("prompt weights: the empty prompt's features " + shape_str(z_empty.shape) + " do not cover " +
                  shape_str(z.shape));
    for (int64_t j = 0; j < n; ++j) {
      const float w = weights[size_t(j)];
      if (w == 1.0f) continue;
      float* row = z.ptr() + j * C;
      const float* empty = z_empty.ptr() + j * C;
      for (int64_t c = 0; c < C; ++c) row[c] = (row[c] - empty[c]) * w + empty[c];
    }
    return;
  }
  // sdcpp: scale, then restore the mean of all features.
  double before = 0, after = 0;
  for (float v : z.values()) before += v;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < C; ++c) z.values()[size_t(j * C + c)] *= weights[size_t(j)];
  for (float v : z.values()) after += v;
  if (after != 0) {
    const float k = float(before / after);
    for (float& v : z.values()) v *= k;
  }
}

}  // namespace chroma::text

// Prompt weighting, A1111/ComfyUI's emphasis syntax: "(text)" weighs text ×1.1 (nested: ×1.1 each),
// "(text:W)" gives it weight W (replacing the enclosing weight, as ComfyUI does), "\(" and "\)" are
// literal parentheses. An unmatched "(" or ")" is read as a literal character. A ":W" that is not a
// number is part of the text ("(a:b)" is "a:b" at ×1.1, ComfyUI's reading).
//
// The weights act on the T5 features of the weighted tokens (t5 features z, one row per token):
//   comfyui  z ← (z − z_empty)·w + z_empty, z_empty the features of [</s>, <pad>, …] of the same
//            length (ComfyUI sd1_clip.py encode_token_weights) — the default;
//   sdcpp    z ← z·w, then all rows rescaled to keep the mean of z (stable-diffusion.cpp's rule);
//   none     the text is taken literally, parentheses included.
// Tokens of weight 1 keep their features exactly, so a prompt without emphasis is unchanged.
#pragma once
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::text {

struct WeightedText {
  std::string text;
  float weight = 1.0f;
  bool operator==(const WeightedText&) const = default;
};

enum class PromptWeighting { ComfyUI, SdCpp, None };
const char* prompt_weighting_name(PromptWeighting w);
bool parse_prompt_weighting(const std::string& name, PromptWeighting* out);

// The largest |W| accepted in "(text:W)"; beyond it is an error, not a weight.
inline constexpr float kMaxPromptWeight = 100.0f;

// The prompt cut into stretches of one weight each, in order (adjacent stretches of equal weight
// merged); with PromptWeighting::None one stretch of weight 1. Throws chroma::Error for a weight that
// is not finite or beyond ±kMaxPromptWeight.
std::vector<WeightedText> parse_prompt_weights(const std::string& prompt, PromptWeighting weighting);

// Applies `weights` (one per row of z; rows past the end keep weight 1) to the features z [n, C],
// given z_empty [≥ n, C] for the comfyui rule (unused otherwise).
void apply_prompt_weights(Tensor& z, const Tensor& z_empty, const std::vector<float>& weights, PromptWeighting weighting);

}  // namespace chroma::text

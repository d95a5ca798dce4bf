// Tensor-name tables of the checkpoint layouts the engine reads besides the original one: each rule
// maps a stored name to the original (BFL / HF) name the models ask for (chroma-spec.md §1.2, §1.4).
// io/formats.h applies them at load time; model code only ever sees original names.
//
// Pattern syntax: literal text, plus "{i}" / "{j}" (a decimal index, copied to the same placeholder of
// the original) and "{r}" (an index counted from the other end: original = count − 1 − stored, for
// diffusers' reversed VAE up blocks). A pattern ending in "." matches a prefix and the rest of the
// name ("weight", "bias") is carried over; any other pattern matches the whole name.
#pragma once
#include <optional>
#include <span>
#include <string>

namespace chroma::io {

struct NameRule {
  const char* stored;    // e.g. "transformer_blocks.{i}.attn.to_k."
  const char* original;  // e.g. "double_blocks.{i}.img_attn.qkv."
  int part = 0;          // row block of the original this tensor is (diffusers splits qkv and linear1)
  int parts = 1;         // number of row blocks making the original
  bool conv1x1 = false;  // stored as Linear [O, I]; the original is a 1×1 conv [O, I, 1, 1]
};

// diffusers ChromaTransformer2DModel → original DiT names (chroma-spec.md §1.2).
std::span<const NameRule> diffusers_dit_names();
// diffusers AutoencoderKL → BFL ae.safetensors names (chroma-spec.md §1.4).
std::span<const NameRule> diffusers_vae_names();

struct MappedName {
  std::string original;
  int part = 0, parts = 1;
  bool conv1x1 = false;
};

// The first rule of `table` matching `stored`, applied; nullopt when none matches.
// `reverse_count` is the count "{r}" indices are reversed against.
std::optional<MappedName> map_name(std::span<const NameRule> table, const std::string& stored, int reverse_count = 0);

}  // namespace chroma::io

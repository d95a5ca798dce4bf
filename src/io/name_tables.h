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
// The DiT's linear layers under their original names (chroma-spec.md §1.1), each mapped to itself:
// the modules a LoRA may adapt (io/lora.h), for recognising names written with another separator.
std::span<const NameRule> dit_linear_names();
// diffusers AutoencoderKL → BFL ae.safetensors names (chroma-spec.md §1.4).
std::span<const NameRule> diffusers_vae_names();

struct MappedName {
  std::string original;  // the rule's original name, then `rest`
  std::string rest;      // what followed a prefix pattern in the stored name ("weight", "bias")
  int part = 0, parts = 1;
  bool conv1x1 = false;
};

// The first rule of `table` matching `stored`, applied; nullopt when none matches.
// `reverse_count` is the count "{r}" indices are reversed against. `separator` is the character a
// pattern's "." matches in `stored` besides "." itself (kohya LoRA keys write module paths with "_").
std::optional<MappedName> map_name(std::span<const NameRule> table, const std::string& stored, int reverse_count = 0,
                                   char separator = '.');

}  // namespace chroma::io

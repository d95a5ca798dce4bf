// Variant names and the naming rule of variant.h.
#include "models/chroma/variant.h"

#include "models/chroma/config.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "tensor/error.h"

namespace chroma::dit {

namespace {

struct Named {
  Variant variant;
  const char* name;  // as published
  const char* key;   // --variant's spelling
};
constexpr Named kVariants[] = {
    {Variant::Chroma, "Chroma", "chroma"},         {Variant::HD, "Chroma1-HD", "hd"},
    {Variant::Base, "Chroma1-Base", "base"},       {Variant::DC2k, "Chroma1-DC-2k", "dc-2k"},
    {Variant::Flash, "Chroma1-Flash", "flash"},    {Variant::Radiance, "Chroma1-Radiance", "radiance"},
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return s;
}

bool has(const std::string& text, const char* word) { return text.find(word) != std::string::npos; }

}  // namespace

const char* variant_name(Variant v) {
  for (const Named& n : kVariants)
    if (n.variant == v) return n.name;
  return "Chroma";
}

std::string variant_choices() {
  std::string s;
  for (const Named& n : kVariants) s += (s.empty() ? "" : ", ") + std::string(n.key);
  return s;
}

Variant parse_variant(const std::string& text) {
  const std::string t = lower(text);
  for (const Named& n : kVariants)
    if (t == n.key || t == lower(n.name)) return n.variant;
  throw Error("--variant '" + text + "': unknown variant (choose one of " + variant_choices() + ")");
}

Variant variant_from_path(const std::string& path) {
  // The file name, then the two folders above it (a diffusers folder's Chroma1-HD/transformer, a pull
  // cache's repository folder). Only names that mention Chroma count, and the innermost such name
  // decides: a user's "flash-drive/Chroma1-HD.safetensors" is an HD.
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "…/Chroma1-HD/" names its folder
  for (int i = 0; i < 3 && p.has_filename(); ++i, p = p.parent_path()) {
    const std::string name = lower(p.filename().string());
    if (!has(name, "chroma")) continue;
    if (has(name, "flash")) return Variant::Flash;  // before HD: "Chroma1-HD-Flash" is a Flash
    if (has(name, "dc-2k") || has(name, "dc2k") || has(name, "dc_2k")) return Variant::DC2k;
    if (has(name, "chroma1-hd") || has(name, "chroma1_hd") || has(name, "chroma-hd")) return Variant::HD;
    if (has(name, "chroma1-base") || has(name, "chroma1_base") ||
        (has(name, "unlocked-v48") && !has(name, "detail-calibrated")))
      return Variant::Base;
    return Variant::Chroma;  // a Chroma, not one of the named ones (chroma-unlocked-v50, a finetune)
  }
  return Variant::Chroma;
}

Variant detect_variant(const io::WeightStore& weights) {
  return is_radiance(weights) ? Variant::Radiance : variant_from_path(weights.path());
}

}  // namespace chroma::dit

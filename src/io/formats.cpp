#include "io/formats.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "io/name_tables.h"

namespace chroma::io {
namespace {

// `name` has the dotted segment(s) `seg` at its start or after a '.' (so any UI prefix is allowed).
bool has_segment(const std::string& name, const std::string& seg) {
  return name.starts_with(seg) || name.find("." + seg) != std::string::npos;
}

bool any_name(const std::map<std::string, TensorView>& t, const std::string& seg) {
  for (const auto& [name, v] : t)
    if (has_segment(name, seg)) return true;
  return false;
}

// ComfyUI scaled-fp8 entries. "<layer>.scale_weight" (scaled_fp8_ops) or "<layer>.weight_scale" (the
// newer comfy_quant files) scale "<layer>.weight"; input scales only matter to fp8 matmuls, which
// this engine does not do (it widens the weights), and the marker only announces the format.
constexpr const char* kWeightScaleSuffixes[] = {".scale_weight", ".weight_scale"};
constexpr const char* kIgnoredSuffixes[] = {".scale_input", ".input_scale", ".comfy_quant"};
bool is_marker(const std::string& name) { return name == "scaled_fp8" || name.ends_with(".scaled_fp8"); }

bool ends_with_any(const std::string& name, std::span<const char* const> suffixes, std::string* base = nullptr) {
  for (const char* s : suffixes)
    if (name.ends_with(s)) {
      if (base) *base = name.substr(0, name.size() - std::string(s).size());
      return true;
    }
  return false;
}

std::string quoted(const std::string& name) { return "'" + name + "'"; }

// Attaches every per-tensor scale to its weight and drops the scale, input-scale and marker entries.
std::map<std::string, TensorView> apply_scales(const std::map<std::string, TensorView>& stored, const std::string& where) {
  std::map<std::string, TensorView> out;
  for (const auto& [name, v] : stored)
    if (!is_marker(name) && !ends_with_any(name, kWeightScaleSuffixes) && !ends_with_any(name, kIgnoredSuffixes))
      out[name] = v;
  for (const auto& [name, v] : stored) {
    std::string layer;
    if (!ends_with_any(name, kWeightScaleSuffixes, &layer)) continue;
    auto w = out.find(layer + ".weight");
    if (w == out.end())
      throw Error(where + ": scale " + quoted(name) + " has no weight " + quoted(layer + ".weight") + " to scale");
    if (v.numel() != 1 || !dtype_is_float(v.dtype))
      throw Error(where + ": scale " + quoted(name) + " is " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                  "; only one float per tensor is supported (per-channel or block scales are not)");
    const float s = v.to_f32().ptr()[0];
    if (!std::isfinite(s)) throw Error(where + ": scale " + quoted(name) + " is not finite");
    w->second.scale *= s;
  }
  return out;
}

// One original tensor being assembled from its stored row blocks.
struct Assembly {
  std::vector<std::pair<std::string, TensorView>> parts;  // indexed by part; empty name = not seen
};

// The row concatenation of `parts` (stored names for messages) as one view named `original`.
TensorView join_rows(const std::string& original, const std::vector<std::pair<std::string, TensorView>>& parts,
                     const std::string& where) {
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i].first.empty()) {
      std::string found;
      for (const auto& p : parts)
        if (!p.first.empty()) found += (found.empty() ? "" : ", ") + p.first;
      throw Error(where + ": " + quoted(original) + " is joined from " + std::to_string(parts.size()) +
                  " row blocks but block " + std::to_string(i) + " is missing (found " + found + ")");
    }
  const TensorView& first = parts[0].second;
  auto views = std::make_shared<std::vector<TensorView>>();
  TensorView joined = first;
  joined.name = original;
  joined.data = nullptr;
  joined.nbytes = 0;
  joined.scale = 1.0f;  // each part keeps its own
  joined.shape[0] = 0;
  for (const auto& [name, v] : parts) {
    const bool same_rest = v.shape.size() == first.shape.size() && !v.shape.empty() &&
                           std::equal(v.shape.begin() + 1, v.shape.end(), first.shape.begin() + 1);
    if (!same_rest || v.dtype != first.dtype)
      throw Error(where + ": " + quoted(name) + " is " + dtype_name(v.dtype) + " " + shape_str(v.shape) + " but " +
                  quoted(parts[0].first) + " is " + dtype_name(first.dtype) + " " + shape_str(first.shape) +
                  "; they cannot be joined into " + quoted(original));
    joined.shape[0] += v.shape[0];
    joined.nbytes += v.nbytes;
    views->push_back(v);
  }
  joined.parts = std::move(views);
  return joined;
}

// Number of decoder up blocks in diffusers VAE names (the count "{r}" reverses against).
int count_up_blocks(const std::map<std::string, TensorView>& stored) {
  const std::string key = "decoder.up_blocks.";
  int n = 0;
  for (const auto& [name, v] : stored) {
    const size_t at = name.find(key);
    if (at == std::string::npos) continue;
    n = std::max(n, std::atoi(name.c_str() + at + key.size()) + 1);
  }
  return n;
}

}  // namespace

std::string Format::describe() const {
  static const char* kKinds[] = {"unrecognised model", "Chroma DiT", "T5 encoder", "Flux VAE"};
  std::string s = kKinds[int(kind)];
  s += naming == Naming::Diffusers ? ", diffusers names" : ", original names";
  if (scaled_fp8) s += ", fp8 scaled";
  return s;
}

Format detect_format(const std::map<std::string, TensorView>& stored) {
  Format f;
  for (const auto& [name, v] : stored)
    if (is_marker(name) || ends_with_any(name, kWeightScaleSuffixes)) f.scaled_fp8 = true;
  // diffusers first: its DiT also has "distilled_guidance_layer." names.
  if (any_name(stored, "transformer_blocks.") || any_name(stored, "x_embedder.")) {
    f.kind = ModelKind::DiT;
    f.naming = Naming::Diffusers;
  } else if (any_name(stored, "double_blocks.") || any_name(stored, "single_blocks.") ||
             any_name(stored, "distilled_guidance_layer.")) {
    f.kind = ModelKind::DiT;
  } else if (any_name(stored, "decoder.up_blocks.") || any_name(stored, "encoder.down_blocks.") ||
             any_name(stored, "decoder.mid_block.")) {
    f.kind = ModelKind::VAE;
    f.naming = Naming::Diffusers;
  } else if (any_name(stored, "decoder.up.") || any_name(stored, "encoder.down.") || any_name(stored, "decoder.mid.")) {
    f.kind = ModelKind::VAE;
  } else if (any_name(stored, "encoder.block.") || any_name(stored, "shared.weight")) {
    f.kind = ModelKind::T5;
  }
  return f;
}

std::map<std::string, TensorView> to_original(const std::map<std::string, TensorView>& stored, const Format& format,
                                              const std::string& where) {
  std::map<std::string, TensorView> scaled = format.scaled_fp8 ? apply_scales(stored, where) : stored;
  if (format.naming == Naming::Original) return scaled;

  const std::span<const NameRule> table =
      format.kind == ModelKind::DiT ? diffusers_dit_names() : diffusers_vae_names();
  const int up_blocks = count_up_blocks(scaled);
  std::map<std::string, TensorView> out;
  std::map<std::string, std::string> source;  // original name → stored name, for collision messages
  std::map<std::string, Assembly> joins;
  auto put = [&](const std::string& original, const std::string& name, const TensorView& v) {
    if (auto it = source.find(original); it != source.end())
      throw Error(where + ": both " + quoted(it->second) + " and " + quoted(name) + " map to " + quoted(original));
    source[original] = name;
    out[original] = v;
  };
  for (const auto& [name, v] : scaled) {
    const std::optional<MappedName> m = map_name(table, name, up_blocks);
    if (!m) {  // not a tensor the engine reads (kept under its own name)
      put(name, name, v);
      continue;
    }
    if (m->parts == 1) {
      TensorView t = v;
      // A Linear [O, I] standing for a 1×1 conv [O, I, 1, 1]: same bytes, another shape.
      if (m->conv1x1 && name.ends_with(".weight") && t.shape.size() == 2) t.shape = {t.shape[0], t.shape[1], 1, 1};
      put(m->original, name, t);
      continue;
    }
    Assembly& a = joins[m->original];
    a.parts.resize(size_t(m->parts));
    a.parts[size_t(m->part)] = {name, v};
  }
  for (const auto& [original, a] : joins) put(original, a.parts[0].first, join_rows(original, a.parts, where));
  return out;
}

}  // namespace chroma::io

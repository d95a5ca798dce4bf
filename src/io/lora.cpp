#include "io/lora.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <span>

#include "io/name_tables.h"
#include "io/safetensors.h"

namespace chroma::io {
namespace {

// ---- key tables (lora.h lists the layouts) ------------------------------------------------------

enum class Role { Down, Up, Alpha };
struct Suffix {
  const char* text;
  Role role;
};
constexpr Suffix kSuffixes[] = {
    {".lora_A.weight", Role::Down},    {".lora_B.weight", Role::Up},      {".lora_A", Role::Down},
    {".lora_B", Role::Up},             {".lora_down.weight", Role::Down}, {".lora_up.weight", Role::Up},
    {".lora.down.weight", Role::Down}, {".lora.up.weight", Role::Up},     {".alpha", Role::Alpha},
};

// Adapter kinds refused with a clear message: applying the rest of such a file would be wrong.
struct Unsupported {
  const char* suffix;
  const char* kind;
};
constexpr Unsupported kUnsupported[] = {
    {".hada_w1_a", "LoHa"}, {".hada_w1_b", "LoHa"},  {".hada_w2_a", "LoHa"},  {".hada_w2_b", "LoHa"},
    {".hada_t1", "LoHa"},   {".hada_t2", "LoHa"},    {".lokr_w1", "LoKr"},    {".lokr_w2", "LoKr"},
    {".lokr_w1_a", "LoKr"}, {".lokr_w1_b", "LoKr"},  {".lokr_w2_a", "LoKr"},  {".lokr_w2_b", "LoKr"},
    {".lokr_t2", "LoKr"},   {".dora_scale", "DoRA"}, {".lora_magnitude_vector", "DoRA"}, {".lora_mid.weight", "Tucker (lora_mid)"},
    {".diff", "full weight difference"},             {".diff_b", "full bias difference"},
};

// Prefixes in front of the module path; kohya's also mean "_" stands for "." in the path.
struct Prefix {
  const char* text;
  char separator;
};
constexpr Prefix kPrefixes[] = {
    {"lora_unet_", '_'},         {"lora_transformer_", '_'}, {"base_model.model.", '.'},
    {"model.diffusion_model.", '.'}, {"diffusion_model.", '.'}, {"transformer.", '.'},
};

// ---- one module's tensors -----------------------------------------------------------------------

struct Group {
  const TensorView* down = nullptr;
  const TensorView* up = nullptr;
  const TensorView* alpha = nullptr;
  std::vector<std::string> keys;
};

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// The module path after its prefixes, and the separator its segments use.
std::pair<std::string, char> strip_prefixes(std::string module) {
  char separator = '.';
  for (bool again = true; again;) {
    again = false;
    for (const Prefix& p : kPrefixes)
      if (module.starts_with(p.text)) {
        module.erase(0, std::char_traits<char>::length(p.text));
        if (p.separator != '.') separator = p.separator;
        again = true;
      }
  }
  return {module, separator};
}

// The original module (and row block) a module path names, if it names a DiT Linear.
std::optional<MappedName> map_module(const std::string& path) {
  const auto [module, separator] = strip_prefixes(path);
  // The tables' patterns are prefixes ending in "."; a whole module path leaves nothing after it.
  const std::string probe = module + separator;
  for (std::span<const NameRule> table : {dit_linear_names(), diffusers_dit_names()}) {
    std::optional<MappedName> m = map_name(table, probe, 0, separator);
    if (m && m->rest.empty() && m->original.ends_with('.')) {
      m->original.pop_back();
      return m;
    }
  }
  return std::nullopt;
}

void check_unsupported(const std::string& path, const std::string& key) {
  for (const Unsupported& u : kUnsupported)
    if (key.ends_with(u.suffix))
      throw Error(path + ": LoRA tensor " + quoted(key) + " belongs to a " + u.kind +
                  " adapter, which is not supported yet (only LoRA: lora_A/lora_B or lora_down/lora_up)");
}

void check_matrix(const std::string& path, const TensorView& v) {
  if (v.shape.size() != 2 || !dtype_is_float(v.dtype) || dtype_is_quantized(v.dtype) || v.dim(0) < 1 || v.dim(1) < 1)
    throw Error(path + ": LoRA tensor " + quoted(v.name) + " is " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                ", expected a non-empty float matrix");
}

// The checked delta of one mapped module: A and B present, matrices, the same rank; alpha/r.
LoraDelta make_delta(const std::string& path, const std::string& module, const Group& g, const MappedName& target) {
  if (!g.down || !g.up)
    throw Error(path + ": LoRA module " + quoted(module) + " has " + (g.down ? "a down (A)" : "an up (B)") +
                " tensor but no " + (g.down ? "up (B)" : "down (A)") + " tensor");
  check_matrix(path, *g.down);
  check_matrix(path, *g.up);
  const int64_t rank = g.down->dim(0);
  if (g.up->dim(1) != rank)
    throw Error(path + ": LoRA tensors " + quoted(g.down->name) + " " + shape_str(g.down->shape) + " and " +
                quoted(g.up->name) + " " + shape_str(g.up->shape) + " disagree on the rank (" + std::to_string(rank) +
                " vs " + std::to_string(g.up->dim(1)) + ")");
  LoraDelta d{.target = target.original, .part = target.part, .parts = target.parts, .down = *g.down, .up = *g.up,
              .scale = 1.0f, .keys = g.keys};
  if (g.alpha) {
    const std::vector<float> alpha = g.alpha->to_f32().data;
    if (alpha.size() != 1 || !std::isfinite(alpha[0]))
      throw Error(path + ": LoRA alpha " + quoted(g.alpha->name) + " is " + shape_str(g.alpha->shape) +
                  ", expected one finite number");
    d.scale = alpha[0] / float(rank);
  }
  return d;
}

}  // namespace

LoraFile LoraFile::open(const std::string& path) {
  LoraFile f;
  f.path_ = path;
  f.file_ = SafetensorsFile::open(path);
  f.key_count_ = f.file_->tensors().size();

  std::map<std::string, Group> groups;  // by module path as stored
  for (const auto& [key, view] : f.file_->tensors()) {
    check_unsupported(path, key);
    bool known = false;
    for (const Suffix& s : kSuffixes) {
      if (!key.ends_with(s.text)) continue;
      Group& g = groups[key.substr(0, key.size() - std::char_traits<char>::length(s.text))];
      const TensorView** slot = s.role == Role::Down ? &g.down : s.role == Role::Up ? &g.up : &g.alpha;
      if (*slot) throw Error(path + ": LoRA tensors " + quoted((*slot)->name) + " and " + quoted(key) + " play the same role");
      *slot = &view;
      g.keys.push_back(key);
      known = true;
      break;
    }
    if (!known) f.unmatched_.push_back(key);
  }
  for (const auto& [module, g] : groups) {
    if (const std::optional<MappedName> target = map_module(module))
      f.deltas_.push_back(make_delta(path, module, g, *target));
    else
      f.unmatched_.insert(f.unmatched_.end(), g.keys.begin(), g.keys.end());
  }
  std::sort(f.unmatched_.begin(), f.unmatched_.end());
  return f;
}

}  // namespace chroma::io

#include "io/lora.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <span>

#include "io/name_tables.h"
#include "io/safetensors.h"

namespace chroma::io {
namespace {

// ---- key tables (lora.h lists the layouts) ------------------------------------------------------

enum class Role { Down, Up, Alpha, W1, W1A, W1B, W2, W2A, W2B, HadaW1A, HadaW1B, HadaW2A, HadaW2B, Count };
struct Suffix {
  const char* text;
  Role role;
};
constexpr Suffix kSuffixes[] = {
    {".lora_A.weight", Role::Down},    {".lora_B.weight", Role::Up},      {".lora_A", Role::Down},
    {".lora_B", Role::Up},             {".lora_down.weight", Role::Down}, {".lora_up.weight", Role::Up},
    {".lora.down.weight", Role::Down}, {".lora.up.weight", Role::Up},     {".alpha", Role::Alpha},
    {".hada_w1_a", Role::HadaW1A},     {".hada_w1_b", Role::HadaW1B},     {".hada_w2_a", Role::HadaW2A},
    {".hada_w2_b", Role::HadaW2B},     {".lokr_w1", Role::W1},            {".lokr_w1_a", Role::W1A},
    {".lokr_w1_b", Role::W1B},         {".lokr_w2", Role::W2},            {".lokr_w2_a", Role::W2A},
    {".lokr_w2_b", Role::W2B},
};

// Adapter kinds refused with a clear message: applying the rest of such a file would be wrong.
struct Unsupported {
  const char* suffix;
  const char* kind;
};
constexpr Unsupported kUnsupported[] = {
    {".hada_t1", "Tucker-decomposed LoHa"}, {".hada_t2", "Tucker-decomposed LoHa"}, {".lokr_t2", "Tucker-decomposed LoKr"},
    {".dora_scale", "DoRA"}, {".lora_magnitude_vector", "DoRA"}, {".lora_mid.weight", "Tucker (lora_mid)"},
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
  const TensorView* views[size_t(Role::Count)] = {};
  std::vector<std::string> keys;
  const TensorView* operator[](Role r) const { return views[size_t(r)]; }
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
                  " adapter, which is not supported yet (LoRA, LoHa and LoKr on linear layers are)");
}

void check_matrix(const std::string& path, const TensorView& v) {
  if (v.shape.size() != 2 || !dtype_is_float(v.dtype) || dtype_is_quantized(v.dtype) || v.dim(0) < 1 || v.dim(1) < 1)
    throw Error(path + ": LoRA tensor " + quoted(v.name) + " is " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                ", expected a non-empty float matrix");
}

[[noreturn]] void disagree(const std::string& path, const TensorView& a, const TensorView& b, const std::string& what) {
  throw Error(path + ": LoRA tensors " + quoted(a.name) + " " + shape_str(a.shape) + " and " + quoted(b.name) + " " +
              shape_str(b.shape) + " disagree on " + what);
}

// The checked delta of one mapped module: one adapter kind, every factor present, matrices whose
// inner sizes agree; the scale alpha/r.
LoraDelta make_delta(const std::string& path, const std::string& module, const Group& g, const MappedName& target) {
  auto has = [&](std::initializer_list<Role> roles) {
    for (Role r : roles)
      if (g[r]) return true;
    return false;
  };
  const bool lowrank = has({Role::Down, Role::Up}), loha = has({Role::HadaW1A, Role::HadaW1B, Role::HadaW2A, Role::HadaW2B}),
             lokr = has({Role::W1, Role::W1A, Role::W1B, Role::W2, Role::W2A, Role::W2B});
  if (int(lowrank) + int(loha) + int(lokr) != 1)
    throw Error(path + ": LoRA module " + quoted(module) + (lowrank + loha + lokr ? " mixes adapter kinds (LoRA, LoHa, LoKr)"
                                                                                     : " has only an alpha"));
  auto need = [&](Role r, const char* what) -> const TensorView& {
    if (!g[r]) throw Error(path + ": LoRA module " + quoted(module) + " has no " + what + " tensor");
    check_matrix(path, *g[r]);
    return *g[r];
  };
  LoraDelta d{.target = target.original, .part = target.part, .parts = target.parts, .keys = g.keys};
  int64_t rank = 1;
  bool decomposed = true;  // whether alpha/r applies (LoKr with both factors whole: scale 1)
  if (lowrank) {
    d.down = need(Role::Down, "down (A)");
    d.up = need(Role::Up, "up (B)");
    rank = d.down.dim(0);
    if (d.up.dim(1) != rank) disagree(path, d.down, d.up, "the rank (" + std::to_string(rank) + " vs " + std::to_string(d.up.dim(1)) + ")");
  } else if (loha) {
    d.kind = LoraDelta::Kind::LoHa;
    d.w1a = need(Role::HadaW1A, "hada_w1_a");
    d.w1b = need(Role::HadaW1B, "hada_w1_b");
    d.w2a = need(Role::HadaW2A, "hada_w2_a");
    d.w2b = need(Role::HadaW2B, "hada_w2_b");
    if (d.w1a.dim(1) != d.w1b.dim(0)) disagree(path, d.w1a, d.w1b, "the rank");
    if (d.w2a.dim(1) != d.w2b.dim(0)) disagree(path, d.w2a, d.w2b, "the rank");
    if (d.w1a.dim(0) != d.w2a.dim(0) || d.w1b.dim(1) != d.w2b.dim(1)) disagree(path, d.w1a, d.w2b, "the update's shape");
    rank = d.w1b.dim(0);
  } else {
    d.kind = LoraDelta::Kind::LoKr;
    auto factor = [&](Role whole, Role a, Role b, TensorView& w, TensorView& wa, TensorView& wb, const char* name) {
      if (g[whole]) {
        if (g[a] || g[b]) throw Error(path + ": LoRA module " + quoted(module) + " stores " + name + " both whole and decomposed");
        w = need(whole, name);
        return int64_t(0);
      }
      wa = need(a, (std::string(name) + "_a").c_str());
      wb = need(b, (std::string(name) + "_b").c_str());
      if (wa.dim(1) != wb.dim(0)) disagree(path, wa, wb, "the rank");
      return wb.dim(0);
    };
    const int64_t r1 = factor(Role::W1, Role::W1A, Role::W1B, d.w1, d.w1a, d.w1b, "lokr_w1");
    const int64_t r2 = factor(Role::W2, Role::W2A, Role::W2B, d.w2, d.w2a, d.w2b, "lokr_w2");
    rank = r2 ? r2 : r1;
    decomposed = r1 || r2;
  }
  if (g[Role::Alpha] && decomposed) {
    const std::vector<float> alpha = g[Role::Alpha]->to_f32().to_vector();
    if (alpha.size() != 1 || !std::isfinite(alpha[0]))
      throw Error(path + ": LoRA alpha " + quoted(g[Role::Alpha]->name) + " is " + shape_str(g[Role::Alpha]->shape) +
                  ", expected one finite number");
    d.scale = alpha[0] / float(rank);
  }
  return d;
}

}  // namespace

Shape LoraDelta::shape() const {
  switch (kind) {
    case Kind::LowRank: return {up.dim(0), down.dim(1)};
    case Kind::LoHa: return {w1a.dim(0), w1b.dim(1)};
    case Kind::LoKr: {
      const Shape a = w1 ? w1.shape : Shape{w1a.dim(0), w1b.dim(1)}, c = w2 ? w2.shape : Shape{w2a.dim(0), w2b.dim(1)};
      Shape out(2);
      for (size_t i = 0; i < 2; ++i)  // sizes from the file: a product past int64 shows as the largest size
        if (__builtin_mul_overflow(a[i], c[i], &out[i])) out[i] = std::numeric_limits<int64_t>::max();
      return out;
    }
  }
  return {};
}

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
      const TensorView** slot = &g.views[size_t(s.role)];
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

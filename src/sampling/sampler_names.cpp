// The sampler table: each name once, with what it is.
#include <string>

#include "sampling/denoise.h"

namespace chroma::sampling {
namespace {
constexpr SamplerInfo kSamplers[] = {
    {"euler", SamplerKind::Euler, false},
    {"heun", SamplerKind::Heun, false},
    {"dpm++2m", SamplerKind::DpmPP2M, false},
    {"res_multistep", SamplerKind::ResMultistep, false},
    {"gradient_estimation", SamplerKind::GradientEstimation, false},
    {"euler_a", SamplerKind::EulerAncestral, true},
    {"dpm++2s_a", SamplerKind::DpmPP2SAncestral, true},
    {"dpm++sde", SamplerKind::DpmPPSde, true},
};
}  // namespace

const SamplerInfo* find_sampler(const std::string& name) {
  for (const SamplerInfo& s : kSamplers)
    if (name == s.name) return &s;
  return nullptr;
}

bool is_sampler_name(const std::string& name) { return find_sampler(name) != nullptr; }

bool is_ancestral(const std::string& name) {
  const SamplerInfo* s = find_sampler(name);
  return s && s->ancestral;
}

std::string sampler_names() {
  std::string names;
  for (const SamplerInfo& s : kSamplers) names += (names.empty() ? "" : ", ") + std::string(s.name);
  return names;
}

}  // namespace chroma::sampling

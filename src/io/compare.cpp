#include "io/compare.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "io/safetensors.h"

namespace chroma::io {
namespace {

Shape squeeze_leading_ones(Shape s) {
  while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
  return s;
}

std::map<std::string, const TensorView*> by_name(const SafetensorsFile& f, const std::string& prefix) {
  std::map<std::string, const TensorView*> m;
  for (const auto& [name, v] : f.tensors())
    if (name.starts_with(prefix)) m[name.substr(prefix.size())] = &v;
  return m;
}

}  // namespace

ComparisonReport compare_files(const std::string& a_path, const std::string& b_path, const std::string& a_prefix,
                               const std::string& b_prefix) {
  auto fa = SafetensorsFile::open(a_path);
  auto fb = SafetensorsFile::open(b_path);
  const auto a = by_name(*fa, a_prefix), b = by_name(*fb, b_prefix);
  ComparisonReport r;
  for (const auto& [name, va] : a) {
    auto it = b.find(name);
    if (it == b.end()) {
      r.only_in_a.push_back(name);
      continue;
    }
    const TensorView* vb = it->second;
    TensorComparison c;
    c.name = name;
    c.shape = shape_str(va->shape);
    c.shape_matches = squeeze_leading_ones(va->shape) == squeeze_leading_ones(vb->shape);
    if (c.shape_matches) {
      const Tensor ta = va->to_f32(), tb = vb->to_f32();
      double ref_max = 0;
      for (int64_t i = 0; i < ta.numel(); ++i) {
        const double e = std::fabs(double(ta.ptr()[i]) - double(tb.ptr()[i]));
        c.mean_abs += e;
        c.max_abs = std::isnan(e) ? INFINITY : std::max(c.max_abs, e);
        ref_max = std::max(ref_max, std::fabs(double(tb.ptr()[i])));
      }
      if (ta.numel()) c.mean_abs /= double(ta.numel());
      c.rel = ref_max > 0 ? c.max_abs / ref_max : c.max_abs;
    }
    r.common.push_back(c);
  }
  for (const auto& [name, vb] : b)
    if (!a.count(name)) r.only_in_b.push_back(name);
  return r;
}

}  // namespace chroma::io

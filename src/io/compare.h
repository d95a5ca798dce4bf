// Dump-and-compare: per common tensor of two safetensors files, the shape and the errors of A
// against B (B is the reference). Leading 1-dimensions are ignored when matching shapes, so a
// token tensor [L, C] matches a reference [1, L, C].
#pragma once
#include <string>
#include <vector>

namespace chroma::io {

struct TensorComparison {
  std::string name;
  std::string shape;          // shape of A
  bool shape_matches = true;  // false: errors below are not computed
  double mean_abs = 0, max_abs = 0;
  double rel = 0;             // max_abs / max(|B|), or max_abs when B is all zeros
};

struct ComparisonReport {
  std::vector<TensorComparison> common;
  std::vector<std::string> only_in_a, only_in_b;
};

// Names in A are matched after removing `a_prefix` (tensors without it are ignored); likewise B.
ComparisonReport compare_files(const std::string& a, const std::string& b, const std::string& a_prefix = "",
                               const std::string& b_prefix = "");

}  // namespace chroma::io

// What `chromacpp info` says about a weight file beyond its tensors: the configuration its shapes imply.
#pragma once
#include <string>

#include "io/safetensors.h"

namespace chroma::pipeline {

// "hidden 3072, heads 24 × 128, …" for a DiT or T5, "not inferable (why)" when the shapes don't fit, "-" otherwise.
std::string inferred_config(const io::WeightStore& store);

}  // namespace chroma::pipeline

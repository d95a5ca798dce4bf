// chroma::Error — the one error type of the engine.
// Library code throws it with a one-line message that names the file, tensor or flag at fault;
// front ends catch it once, print it and exit non-zero. Asserts are for our own invariants only.
#pragma once
#include <stdexcept>
#include <string>

namespace chroma {

struct Error : std::runtime_error {
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace chroma

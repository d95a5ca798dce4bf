#include "pipeline/dump.h"

#include <filesystem>
#include <vector>

#include "io/safetensors.h"

namespace chroma::pipeline {

Dump::Dump(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (!std::filesystem::is_directory(dir_)) throw Error("--dump " + dir_ + ": cannot create the folder");
}

std::string Dump::write() const {
  std::vector<io::NamedTensor> list;
  for (const auto& [name, t] : values_) list.push_back({name, &t});
  const std::string path = (std::filesystem::path(dir_) / "dump.safetensors").string();
  io::write_safetensors(path, list, {{"producer", "chroma.cpp generate --dump"}});
  return path;
}

}  // namespace chroma::pipeline

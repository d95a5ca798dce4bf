// safetensors: a u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the raw little-endian data. Read over mmap with zero-copy views; validated strictly at open.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/formats.h"
#include "tensor/tensor.h"

namespace chroma::io {

class GgufFile;    // io/gguf.h
class MappedFile;  // io/untrusted.h

// One memory-mapped safetensors file. Every violation of the format found at open time (not a
// regular file, header length, JSON nested deeper than 128 or with a key twice, dtype, shape, a byte
// size that overflows or does not match shape × dtype, offsets reversed, out of the file, or not
// tiling the data section exactly) throws chroma::Error naming the file and the tensor.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;  // throws if absent

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// The weights of one model: a single file, or shards listed by a `*.safetensors.index.json`
// (the path may name the index, or a folder holding one). Names are looked up after an optional
// prefix is stripped (e.g. "model.diffusion_model.").
// A GGUF file (recognised by its magic, io/gguf.h) is read too, its quantized weights kept as they are.
// open() recognises the checkpoint format from the tensor names (io/formats.h) and presents every
// format under the original names, so models never see diffusers names or fp8 scale tensors.
class WeightStore {
 public:
  static WeightStore open(const std::string& path);
  // The format the stored names were recognised as.
  const Format& format() const { return format_; }
  // Strip `prefix` from every name that carries it (if all tensors carry it).
  void strip_prefix(const std::string& prefix);

  const std::string& path() const { return path_; }
  // Every file the weights were read from: the shard index and its shards, or the one file.
  const std::vector<std::string>& files() const { return files_read_; }
  const TensorView* find(const std::string& name) const;
  // The named tensor, checked to be a float tensor of the given shape.
  const TensorView& require(const std::string& name, const Shape& shape) const;
  // The named tensor whatever its shape (still must be a float tensor).
  const TensorView& require(const std::string& name) const;
  bool has(const std::string& name) const { return find(name) != nullptr; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // Number of tensors whose name starts with `prefix` followed by an integer, i.e. the depth of
  // a stack such as "double_blocks." (counts distinct indices 0..n-1, and checks they are dense).
  int count_indexed(const std::string& prefix) const;

 private:
  std::string path_;
  std::vector<std::string> files_read_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::shared_ptr<const GgufFile> gguf_;  // set when open() read a GGUF file (io/gguf.h)
  std::map<std::string, TensorView> tensors_;
  Format format_;
};

// An entry to write: float32 data, or integer/uint8 data for test fixtures.
struct NamedTensor {
  std::string name;
  const Tensor* tensor;
};

// Writes float32 tensors atomically: to `path.tmp-XXXX` first, then renamed over `path`,
// so an existing file is never left half-written.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes views in their own dtype (raw bytes, e.g. BF16 or F8_E4M3 test fixtures), same atomic rule.
// Each view is written under its `name`; it must be a plain view (no parts, scale 1).
void write_safetensors_views(const std::string& path, const std::vector<TensorView>& views,
                             const std::map<std::string, std::string>& metadata = {});

}  // namespace chroma::io

#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/untrusted.h"

namespace chroma::io {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Headers of real checkpoints are < 1 MB (643 tensors ≈ 60 kB); 100 MB is the limit other readers use.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw Error(path + ": " + what); }

// Parses one header entry into a view; checks dtype, shape and byte size.
TensorView parse_entry(const std::string& path, const std::string& name, const json& e, const char* base,
                       uint64_t data_size, std::pair<uint64_t, uint64_t>* range) {
  const std::string where = "tensor " + quote(name);
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
    fail(path, where + ": header entry needs dtype, shape and data_offsets");
  TensorView v;
  v.name = name;
  v.file = path;
  if (!e["dtype"].is_string() || !dtype_from_name(e["dtype"].get<std::string>(), &v.dtype))
    fail(path, where + ": unsupported dtype " + describe_json(e["dtype"]));
  if (!e["shape"].is_array()) fail(path, where + ": shape is not an array");
  for (const json& d : e["shape"]) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(INT64_MAX))
      fail(path, where + ": shape has a non-integer, negative or huge dimension " + describe_json(d));
    v.shape.push_back(d.get<int64_t>());
  }
  const std::optional<uint64_t> expected = tensor_bytes(v.dtype, v.shape);
  if (!expected) fail(path, where + ": shape " + shape_str(v.shape) + " × " + dtype_name(v.dtype) + " overflows 64 bits");
  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    fail(path, where + ": data_offsets must be two non-negative integers");
  const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  const std::string offsets = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
  if (begin > end) fail(path, where + ": " + offsets + " are reversed (begin after end)");
  if (end > data_size)
    fail(path, where + ": " + offsets + " lie outside the " + std::to_string(data_size) + " data bytes (file truncated?)");
  if (end - begin != *expected)
    fail(path, where + ": " + std::to_string(end - begin) + " bytes stored but shape " + shape_str(v.shape) + " × " +
                   dtype_name(v.dtype) + " needs " + std::to_string(*expected));
  // An empty tensor (e.g. Chroma1-Radiance's "__x0__" flag, F32 [0]) reads no bytes: any offset will do.
  if (end > begin && begin % dtype_size(v.dtype) != 0)
    fail(path, where + ": data offset " + std::to_string(begin) + " is misaligned");
  v.data = base + begin;
  v.nbytes = size_t(*expected);
  *range = {begin, end};
  return v;
}

// The tensors must tile the data section exactly, as the reference validator requires: no
// overlap, no gap (a hole hides a tensor relabelled to a smaller dtype), nothing after the last.
void check_tiling(const std::string& path, std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> ranges,
                  uint64_t data_size) {
  std::sort(ranges.begin(), ranges.end());
  uint64_t end = 0;
  std::string previous;
  for (const auto& [range, name] : ranges) {
    if (range.first < end)
      fail(path, "tensors " + quote(previous) + " and " + quote(name) + " overlap in the data section");
    if (range.first > end)
      fail(path, "tensor " + quote(name) + " starts at data byte " + std::to_string(range.first) + ", leaving a gap of " +
                     std::to_string(range.first - end) + " bytes after " +
                     (previous.empty() ? std::string("the header") : quote(previous)));
    end = range.second;
    previous = name;
  }
  if (end != data_size)
    fail(path, std::to_string(data_size - end) + " bytes of the data section lie after the last tensor");
}

}  // namespace

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = std::make_unique<MappedFile>(path);
  const uint64_t size = f->map_->size();
  if (size < 8)
    fail(path, "not a safetensors file: " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  const char* bytes = reinterpret_cast<const char*>(f->map_->data());
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian host assumed (x86-64, aarch64)
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    fail(path, "not a safetensors file or truncated: header length " + std::to_string(header_len) + " exceeds " +
                   (header_len > kMaxHeaderBytes ? "the 100 MB limit" : "the file size " + std::to_string(size)));
  const json header = parse_json(std::string_view(bytes + 8, size_t(header_len)), path + ": header");
  if (!header.is_object()) fail(path, "header is not a JSON object");

  const char* base = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m)
        f->metadata_[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();  // depth ≤ kMaxJsonDepth
      continue;
    }
    std::pair<uint64_t, uint64_t> range;
    f->tensors_[it.key()] = parse_entry(path, it.key(), *it, base, data_size, &range);
    ranges.push_back({range, it.key()});
  }
  check_tiling(path, std::move(ranges), data_size);
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorView& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, "tensor " + quote(name) + " not found");
  return it->second;
}

WeightStore WeightStore::open(const std::string& path) {
  WeightStore s;
  s.path_ = path;
  std::error_code ec;
  std::string index = path;
  if (fs::is_directory(path, ec)) {
    index.clear();
    for (const auto& e : fs::directory_iterator(path, ec))
      if (e.path().string().ends_with(".safetensors.index.json")) index = e.path().string();
    if (index.empty()) {
      // A folder with exactly one .safetensors file is fine too.
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(path, ec))
        if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
      if (files.size() != 1)
        throw Error(path + ": folder holds no *.safetensors.index.json and " + std::to_string(files.size()) +
                    " .safetensors files (expected one)");
      index = files[0];
    }
  }
  s.files_read_.push_back(index);
  if (index.ends_with(".json")) {
    const json j = parse_json(read_input_file(index, kMaxHeaderBytes), index + ": shard index");
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, "shard index has no weight_map object");
    const fs::path dir = fs::path(index).parent_path();
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(index, "weight_map entry " + quote(it.key()) + " is not a file name");
      const std::string file = it->get<std::string>();
      if (file.find('/') != std::string::npos || file.find("..") != std::string::npos)
        fail(index, "weight_map entry " + quote(it.key()) + " names a file outside the folder: " + quote(file));
      auto& shard = shards[file];
      if (!shard) {
        shard = std::shared_ptr<SafetensorsFile>(SafetensorsFile::open((dir / file).string()));
        s.files_.push_back(shard);
        s.files_read_.push_back(shard->path());
      }
      if (!shard->has(it.key())) fail(shard->path(), "tensor " + quote(it.key()) + " listed in " + index + " is missing");
      s.tensors_[it.key()] = shard->get(it.key());
    }
    // Shards may hold tensors the index forgot; take them too (the index is a hint, the files are the truth).
    for (auto& f : s.files_)
      for (auto& [name, view] : f->tensors()) s.tensors_.emplace(name, view);
  } else if (is_gguf_file(index)) {  // by magic, not by name
    s.gguf_ = GgufFile::open(index);
    s.tensors_ = gguf_original_names(*s.gguf_);
  } else {
    s.files_.push_back(std::shared_ptr<SafetensorsFile>(SafetensorsFile::open(index)));
    s.tensors_ = s.files_[0]->tensors();
  }
  s.format_ = detect_format(s.tensors_);
  s.tensors_ = to_original(s.tensors_, s.format_, path);
  return s;
}

void WeightStore::strip_prefix(const std::string& prefix) {
  for (auto& [name, v] : tensors_)
    if (!name.starts_with(prefix)) return;
  std::map<std::string, TensorView> stripped;
  for (auto& [name, v] : tensors_) stripped[name.substr(prefix.size())] = v;
  tensors_ = std::move(stripped);
}

const TensorView* WeightStore::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& WeightStore::require(const std::string& name) const {
  const TensorView* v = find(name);
  if (!v) {
    // Name the recognised format when it is not the original one: the stored names differ then.
    const std::string read_as =
        format_.naming == Naming::Original && !format_.scaled_fp8 ? "" : "; read as " + format_.describe();
    throw Error(path_ + ": tensor '" + name + "' is missing (is this the right model file?" + read_as + ")");
  }
  if (!dtype_is_float(v->dtype) || v->dtype == DType::F64)
    throw Error(v->file + ": tensor '" + name + "' has dtype " + dtype_name(v->dtype) +
                ", expected F32, F16, BF16 or F8_E4M3");
  return *v;
}

const TensorView& WeightStore::require(const std::string& name, const Shape& shape) const {
  const TensorView& v = require(name);
  if (v.shape != shape)
    throw Error(v.file + ": tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " + shape_str(shape));
  return v;
}

int WeightStore::count_indexed(const std::string& prefix) const {
  std::set<int> seen;
  for (auto it = tensors_.lower_bound(prefix); it != tensors_.end() && it->first.starts_with(prefix); ++it) {
    const std::string rest = it->first.substr(prefix.size());
    size_t digits = 0;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
    if (digits == 0 || digits > 6 || digits == rest.size() || rest[digits] != '.') continue;
    seen.insert(std::stoi(rest.substr(0, digits)));
  }
  const int n = int(seen.size());
  if (n && *seen.rbegin() != n - 1)
    throw Error(path_ + ": '" + prefix + "N' blocks are not numbered 0.." + std::to_string(n - 1) +
                " (found index " + std::to_string(*seen.rbegin()) + ")");
  return n;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorView> views;
  for (const auto& t : tensors) views.push_back(view_of(*t.tensor, t.name));
  write_safetensors_views(path, views, metadata);
}

void write_safetensors_views(const std::string& path, const std::vector<TensorView>& views,
                             const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& v : views) {
    if (v.parts || v.scale != 1.0f || v.nbytes != size_t(v.numel()) * dtype_size(v.dtype))
      fail(path, "cannot write tensor '" + v.name + "': not a plain " + dtype_name(v.dtype) + " " + shape_str(v.shape) +
                     " view (joined parts, a scale, or a byte size that does not match)");
    const uint64_t n = v.nbytes;
    header[v.name] = {{"dtype", dtype_name(v.dtype)}, {"shape", v.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    const uint64_t len = h.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out.write(h.data(), std::streamsize(h.size()));
    for (const auto& v : views) out.write(static_cast<const char*>(v.data), std::streamsize(v.nbytes));
    out.flush();
    if (!out) throw Error(path + ": write failed (disk full?)");
  });
}

}  // namespace chroma::io

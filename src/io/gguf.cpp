// GGUF reader (over mmap, validated strictly) and writer; format summary in gguf.h.
#include "io/gguf.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include "io/atomic_file.h"
#include "io/untrusted.h"
#include "tensor/quant.h"

namespace chroma::io {
namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;     // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;    // arrays of arrays are legal; deeper nesting is not plausible

[[noreturn]] void fail(const std::string& path, const std::string& what) { throw Error(path + ": " + what); }

// Bytes a value of a scalar type occupies (0 for STRING and ARRAY, whose size is in the data).
size_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

const char* type_name(GgufType t) {
  static const char* const kNames[] = {"U8", "I8",     "U16",   "I16", "U32", "I32", "F32",
                                       "BOOL", "STRING", "ARRAY", "U64", "I64", "F64"};
  return uint32_t(t) <= 12 ? kNames[uint32_t(t)] : "?";
}

bool is_integer(GgufType t) { return scalar_bytes(t) && t != GgufType::F32 && t != GgufType::F64; }

// Reads the header region front to back; every read is checked against the bytes left.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size) : path_(path), p_(data), size_(size) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    if (n > left())
      fail(path_, what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) + " but only " +
                      std::to_string(left()) + " remain (truncated file?)");
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what + " length");
    need(n, what + " of length " + std::to_string(n));
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }
  // Reads one value of type t into v (depth: array nesting level). `what` labels errors; built once
  // per key by the caller, since rebuilding it per array element made reading quadratic.
  void value(GgufType t, GgufValue& v, const std::string& what, int depth) {
    switch (t) {
      case GgufType::U8: v.integer = read<uint8_t>(what); break;
      case GgufType::I8: v.integer = read<int8_t>(what); break;
      case GgufType::U16: v.integer = read<uint16_t>(what); break;
      case GgufType::I16: v.integer = read<int16_t>(what); break;
      case GgufType::U32: v.integer = read<uint32_t>(what); break;
      case GgufType::I32: v.integer = read<int32_t>(what); break;
      case GgufType::U64: {
        const uint64_t u = read<uint64_t>(what);
        v.integer = u > uint64_t(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max() : int64_t(u);
        break;
      }
      case GgufType::I64: v.integer = read<int64_t>(what); break;
      case GgufType::F32: v.real = read<float>(what); break;
      case GgufType::F64: v.real = read<double>(what); break;
      case GgufType::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1) fail(path_, what + " is a bool holding " + std::to_string(b));
        v.integer = b;
        break;
      }
      case GgufType::STRING: v.text = string(what); break;
      case GgufType::ARRAY: {
        if (depth >= kMaxArrayDepth) fail(path_, what + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
        const uint32_t et = read<uint32_t>(what + " element type");
        if (et > 12) fail(path_, what + ": unknown array element type " + std::to_string(et));
        v.element_type = GgufType(et);
        v.count = read<uint64_t>(what + " element count");
        // Each element takes at least its scalar size (strings and arrays at least 8 bytes): reject
        // counts the remaining bytes cannot hold before looping over them.
        const size_t min_bytes = scalar_bytes(v.element_type) ? scalar_bytes(v.element_type) : 8;
        if (v.count > left() / min_bytes)
          fail(path_, what + ": array of " + std::to_string(v.count) + " " + type_name(v.element_type) +
                          " does not fit in the " + std::to_string(left()) + " bytes left");
        for (uint64_t i = 0; i < v.count; ++i) {
          GgufValue e;
          value(v.element_type, e, what, depth + 1);
          if (is_integer(v.element_type)) v.integers.push_back(e.integer);
        }
        break;
      }
      default: fail(path_, what + ": unknown value type " + std::to_string(uint32_t(t)));
    }
  }

 private:
  const std::string& path_;
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
};

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

struct Info {  // a tensor's place in the data section
  std::string name;
  uint64_t offset, bytes;
};

// Checks that the tensors follow each other in file order, each at the previous one's end rounded
// up to the alignment (as llama.cpp's reader does), and that the data section ends with the last
// one (its padding allowed): a tensor relabelled to a smaller type leaves a hole. Returns where the
// data section starts.
uint64_t check_layout(const std::string& path, const std::vector<Info>& infos, uint64_t header_end, uint64_t alignment,
                      uint64_t file_size) {
  const uint64_t data_start = align_up(header_end, alignment);
  if (infos.empty()) {
    if (file_size > data_start)
      fail(path, std::to_string(file_size - header_end) + " bytes follow the header of a file without tensors");
    return data_start;
  }
  if (data_start > file_size)
    fail(path, "tensor data would start at " + std::to_string(data_start) + ", past the end of the file");
  const uint64_t data_size = file_size - data_start;
  uint64_t expected = 0, end = 0;
  std::string previous;
  for (const Info& in : infos) {
    const std::string where = "tensor " + quote(in.name) + " at data offset " + std::to_string(in.offset);
    if (in.offset > data_size || in.bytes > data_size - in.offset)
      fail(path, where + ": its " + std::to_string(in.bytes) + " bytes lie outside the file (data section holds " +
                     std::to_string(data_size) + " bytes; truncated?)");
    if (in.offset < expected)
      fail(path, where + " overlaps tensor " + quote(previous) + " (expected offset " + std::to_string(expected) + ")");
    if (in.offset > expected)
      fail(path, where + " leaves a gap: expected " + std::to_string(expected) + ", where the previous tensor ends" +
                     " (aligned to " + std::to_string(alignment) + ")");
    end = in.offset + in.bytes;
    expected = align_up(end, alignment);
    previous = in.name;
  }
  if (data_size > expected)
    fail(path, std::to_string(data_size - end) + " bytes of the data section lie after the last tensor");
  return data_start;
}

}  // namespace

GgufValue GgufValue::u32(uint32_t v) {
  GgufValue r;
  r.type = GgufType::U32;
  r.integer = v;
  return r;
}

GgufValue GgufValue::str(std::string v) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.text = std::move(v);
  return r;
}

std::string GgufValue::to_string() const {
  switch (type) {
    case GgufType::STRING: return "\"" + printable(text) + "\"";
    case GgufType::F32: case GgufType::F64: {
      char b[32];
      std::snprintf(b, sizeof b, "%g", real);
      return b;
    }
    case GgufType::BOOL: return integer ? "true" : "false";
    case GgufType::ARRAY: {
      if (!integers.empty() && integers.size() <= 8) {
        std::string s = "[";
        for (size_t i = 0; i < integers.size(); ++i) s += (i ? ", " : "") + std::to_string(integers[i]);
        return s + "]";
      }
      return "[array of " + std::to_string(count) + " " + type_name(element_type) + "]";
    }
    default: return std::to_string(integer);
  }
}

bool is_gguf_file(const std::string& path) {
  try {
    const InputFile in(path);  // refuses a FIFO instead of blocking on it
    char magic[4];
    return ::read(in.fd(), magic, 4) == 4 && std::memcmp(magic, kMagic, 4) == 0;
  } catch (const Error&) {
    return false;
  }
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile);
  f->path_ = path;
  f->map_ = std::make_unique<MappedFile>(path);
  if (f->map_->size() < 24)
    fail(path, "only " + std::to_string(f->map_->size()) + " bytes, too short for a GGUF header (24 bytes)");
  const uint8_t* base = f->map_->data();
  Cursor c(path, base, size_t(f->map_->size()));

  // Header.
  char magic[4];
  std::memcpy(magic, base, 4);
  if (std::memcmp(magic, kMagic, 4) != 0) fail(path, "not a GGUF file (the first 4 bytes are not \"GGUF\")");
  c.read<uint32_t>("magic");
  f->version_ = c.read<uint32_t>("version");
  if (f->version_ != 2 && f->version_ != 3)
    fail(path, "GGUF version " + std::to_string(f->version_) + " is not supported (expected 2 or 3)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // A key-value pair takes ≥ 13 bytes (8 key length + 4 type + 1), a tensor info ≥ 28 (8 + 4 + 8 + 4 + 8).
  if (n_kv > c.left() / 13) fail(path, "claims " + std::to_string(n_kv) + " metadata entries, more than the file can hold");
  if (n_tensors > c.left() / 28) fail(path, "claims " + std::to_string(n_tensors) + " tensors, more than the file can hold");

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.string("metadata key " + std::to_string(i));
    const std::string what = "metadata " + quote(key);
    const uint32_t t = c.read<uint32_t>("type of " + what);
    if (t > 12) fail(path, what + " has unknown value type " + std::to_string(t));
    GgufValue v;
    v.type = GgufType(t);
    c.value(v.type, v, "value of " + what, 0);
    if (!f->metadata_.emplace(key, std::move(v)).second) fail(path, "metadata key " + quote(key) + " appears twice");
  }
  uint64_t alignment = kDefaultAlignment;
  if (const GgufValue* a = f->find_metadata("general.alignment")) {
    if (!is_integer(a->type) || a->integer <= 0 || (a->integer & (a->integer - 1)) != 0)
      fail(path, "general.alignment is " + a->to_string() + ", expected a power of two");
    alignment = uint64_t(a->integer);
  }

  // Tensor infos.
  std::vector<Info> infos;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorView v;
    v.file = path;
    v.name = c.string("tensor name " + std::to_string(i));
    const std::string where = "tensor " + quote(v.name);
    if (f->tensors_.count(v.name)) fail(path, where + " appears twice");
    const uint32_t n_dims = c.read<uint32_t>(where + " dimension count");
    if (n_dims < 1 || n_dims > kMaxDims)
      fail(path, where + " has " + std::to_string(n_dims) + " dimensions (expected 1 to " + std::to_string(kMaxDims) + ")");
    Shape ne(n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t n = c.read<uint64_t>(where + " dimension");
      if (n < 1 || n > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(numel))
        fail(path, where + " has dimension " + std::to_string(n) + " (zero, or the element count overflows)");
      ne[d] = int64_t(n);
      numel *= int64_t(n);
    }
    const uint32_t type = c.read<uint32_t>(where + " type");
    const uint64_t offset = c.read<uint64_t>(where + " offset");
    const quant::TypeTraits* tt = quant::traits_for_ggml_type(type);
    if (type == 26) v.dtype = DType::I32;        // ggml I32, I64, F64: read as plain data
    else if (type == 27) v.dtype = DType::I64;
    else if (type == 28) v.dtype = DType::F64;
    else if (tt) v.dtype = tt->dtype;
    else fail(path, where + " has unsupported ggml type " + std::to_string(type) +
                    " (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, I32, I64, F64)");
    if (ne[0] % dtype_block_size(v.dtype) != 0)
      fail(path, where + " has rows of " + std::to_string(ne[0]) + " values, not a whole number of " +
                      std::to_string(dtype_block_size(v.dtype)) + "-value " + dtype_name(v.dtype) + " blocks");
    if (offset % alignment != 0)
      fail(path, where + " data offset " + std::to_string(offset) + " is not a multiple of the alignment " +
                      std::to_string(alignment));
    v.shape.assign(ne.rbegin(), ne.rend());  // ne[0] innermost → last PyTorch dim
    const std::optional<uint64_t> bytes = tensor_bytes(v.dtype, v.shape);
    if (!bytes) fail(path, where + " byte size overflows 64 bits");
    v.nbytes = size_t(*bytes);
    infos.push_back({v.name, offset, uint64_t(v.nbytes)});
    f->order_.push_back(v.name);
    f->tensors_.emplace(v.name, std::move(v));
  }

  const uint64_t data_start = check_layout(path, infos, c.pos(), alignment, f->map_->size());
  for (const Info& in : infos) f->tensors_[in.name].data = base + data_start + in.offset;
  return f;
}

GgufFile::~GgufFile() = default;

const GgufValue* GgufFile::find_metadata(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

std::string GgufFile::architecture() const {
  const GgufValue* a = find_metadata("general.architecture");
  return a && a->type == GgufType::STRING ? a->text : "";
}

// ---------------------------------------------------------------------------------------------
// T5 names

namespace {

// llama.cpp T5 block tensor stem ↔ the HF sub-path inside encoder.block.N.
const std::pair<const char*, const char*> kT5BlockNames[] = {
    {"attn_q", "layer.0.SelfAttention.q"},
    {"attn_k", "layer.0.SelfAttention.k"},
    {"attn_v", "layer.0.SelfAttention.v"},
    {"attn_o", "layer.0.SelfAttention.o"},
    {"attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"},
    {"attn_norm", "layer.0.layer_norm"},
    {"ffn_gate", "layer.1.DenseReluDense.wi_0"},
    {"ffn_up", "layer.1.DenseReluDense.wi_1"},
    {"ffn_down", "layer.1.DenseReluDense.wo"},
    {"ffn_norm", "layer.1.layer_norm"},
};

// Splits "<prefix><digits>.<rest>" into index and rest; false if the shape does not match.
bool split_indexed(const std::string& name, const std::string& prefix, std::string* index, std::string* rest) {
  if (!name.starts_with(prefix)) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return false;
  *index = name.substr(prefix.size(), dot - prefix.size());
  for (char ch : *index)
    if (ch < '0' || ch > '9') return false;
  *rest = name.substr(dot + 1);
  return true;
}

}  // namespace

std::string t5_gguf_to_hf(const std::string& name) {
  if (name == "token_embd.weight") return "shared.weight";
  if (name == "enc.output_norm.weight") return "encoder.final_layer_norm.weight";
  std::string index, rest;
  if (split_indexed(name, "enc.blk.", &index, &rest))
    for (const auto& [gguf, hf] : kT5BlockNames)
      if (rest == std::string(gguf) + ".weight") return "encoder.block." + index + "." + hf + ".weight";
  return name;
}

std::string t5_hf_to_gguf(const std::string& name) {
  if (name == "shared.weight") return "token_embd.weight";
  if (name == "encoder.final_layer_norm.weight") return "enc.output_norm.weight";
  std::string index, rest;
  if (split_indexed(name, "encoder.block.", &index, &rest))
    for (const auto& [gguf, hf] : kT5BlockNames)
      if (rest == std::string(hf) + ".weight") return "enc.blk." + index + "." + gguf + ".weight";
  return name;
}

std::map<std::string, TensorView> gguf_original_names(const GgufFile& file) {
  bool t5 = false;
  for (const auto& [name, v] : file.tensors()) t5 = t5 || name.starts_with("enc.blk.");
  if (!t5) return file.tensors();
  std::map<std::string, TensorView> out;
  for (const auto& [name, v] : file.tensors()) {
    const std::string hf = t5_gguf_to_hf(name);
    if (!out.emplace(hf, v).second)
      fail(file.path(), "tensor '" + name + "' maps to '" + hf + "', which another tensor already has");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writer

namespace {

class Out {
 public:
  explicit Out(std::ofstream& s) : s_(s) {}
  template <typename T>
  void put(T v) { s_.write(reinterpret_cast<const char*>(&v), sizeof v); pos_ += sizeof v; }
  void str(const std::string& v) { put<uint64_t>(v.size()); s_.write(v.data(), std::streamsize(v.size())); pos_ += v.size(); }
  void bytes(const void* p, size_t n) { s_.write(static_cast<const char*>(p), std::streamsize(n)); pos_ += n; }
  void pad_to(uint64_t alignment) { while (pos_ % alignment) put<uint8_t>(0); }
  void value(const GgufValue& v) {
    switch (v.type) {
      case GgufType::U8: put<uint8_t>(uint8_t(v.integer)); break;
      case GgufType::I8: put<int8_t>(int8_t(v.integer)); break;
      case GgufType::U16: put<uint16_t>(uint16_t(v.integer)); break;
      case GgufType::I16: put<int16_t>(int16_t(v.integer)); break;
      case GgufType::U32: put<uint32_t>(uint32_t(v.integer)); break;
      case GgufType::I32: put<int32_t>(int32_t(v.integer)); break;
      case GgufType::U64: put<uint64_t>(uint64_t(v.integer)); break;
      case GgufType::I64: put<int64_t>(v.integer); break;
      case GgufType::F32: put<float>(float(v.real)); break;
      case GgufType::F64: put<double>(v.real); break;
      case GgufType::BOOL: put<uint8_t>(v.integer ? 1 : 0); break;
      case GgufType::STRING: str(v.text); break;
      case GgufType::ARRAY: {
        // Integer arrays only (what we keep when reading).
        if (!is_integer(v.element_type)) throw Error("gguf writer: only integer arrays can be written");
        put<uint32_t>(uint32_t(v.element_type));
        put<uint64_t>(v.integers.size());
        for (int64_t x : v.integers) {
          GgufValue e;
          e.type = v.element_type;
          e.integer = x;
          value(e);
        }
        break;
      }
    }
  }

 private:
  std::ofstream& s_;
  uint64_t pos_ = 0;
};

}  // namespace

void write_gguf(const std::string& path, const std::map<std::string, GgufValue>& metadata,
                const std::vector<GgufTensorOut>& tensors) {
  // Sizes and offsets first: the tensor infos precede the data.
  std::vector<uint64_t> offsets, sizes;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    const quant::TypeTraits* tt = quant::traits(t.dtype);
    if (!tt) throw Error(path + ": tensor '" + t.name + "' has dtype " + dtype_name(t.dtype) + ", which GGUF cannot hold here");
    if (t.shape.empty() || t.shape.size() > kMaxDims)
      throw Error(path + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) + " (1 to 4 dimensions allowed)");
    if (!names.insert(t.name).second) throw Error(path + ": tensor '" + t.name + "' listed twice");
    std::optional<uint64_t> bytes;
    try {
      bytes = tensor_bytes(t.dtype, t.shape);
    } catch (const Error& e) {
      throw Error(path + ": tensor '" + t.name + "': " + e.what());
    }
    if (!bytes) throw Error(path + ": tensor '" + t.name + "' of shape " + shape_str(t.shape) + " overflows 64 bits");
    offsets.push_back(offset);
    sizes.push_back(*bytes);
    offset = align_up(offset + *bytes, kDefaultAlignment);
  }
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream s(tmp, std::ios::binary);
    Out o(s);
    o.bytes(kMagic, 4);
    o.put<uint32_t>(3);
    o.put<uint64_t>(tensors.size());
    o.put<uint64_t>(metadata.size());
    for (const auto& [key, v] : metadata) {
      o.str(key);
      o.put<uint32_t>(uint32_t(v.type));
      o.value(v);
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      o.str(t.name);
      o.put<uint32_t>(uint32_t(t.shape.size()));
      for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) o.put<uint64_t>(uint64_t(*it));  // ne: innermost first
      o.put<uint32_t>(quant::traits(t.dtype)->ggml_type);
      o.put<uint64_t>(offsets[i]);
    }
    o.pad_to(kDefaultAlignment);
    std::vector<uint8_t> buffer;
    for (size_t i = 0; i < tensors.size(); ++i) {
      buffer.assign(size_t(sizes[i]), 0);
      tensors[i].fill(buffer.data());
      o.bytes(buffer.data(), buffer.size());
      o.pad_to(kDefaultAlignment);
    }
    s.flush();
    if (!s) throw Error(path + ": write failed (disk full?)");
  });
}

}  // namespace chroma::io

// GGUF conversion and weight-file summaries (quantize.h).
#include "io/quantize.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "io/gguf.h"
#include "tensor/quant.h"

namespace chroma::io {
namespace {

constexpr const char* kUiPrefix = "model.diffusion_model.";  // ComfyUI / sd.cpp DiT prefix

// The choices of `chromacpp quantize --type`, with llama.cpp's LLAMA_FTYPE for general.file_type
// (a file of one K type throughout is its "_S" variant).
struct TypeChoice {
  const char* name;
  DType dtype;
  uint32_t file_type;
};
const TypeChoice kChoices[] = {{"q8_0", DType::Q8_0, 7}, {"q4_0", DType::Q4_0, 2}, {"q4_k", DType::Q4_K, 14},
                               {"q5_k", DType::Q5_K, 16}, {"q6_k", DType::Q6_K, 18}, {"bf16", DType::BF16, 32},
                               {"f16", DType::F16, 1},    {"f32", DType::F32, 0}};

// Tensors that keep their precision although they are matrices: small, or where errors do not
// average out (chroma-spec.md §3.4 approximator output feeds every modulation; embeddings and the
// final projection touch every token).
bool kept_by_name(ModelKind kind, const std::string& name) {
  static const char* const kDit[] = {"distilled_guidance_layer.", "img_in.", "txt_in.", "final_layer."};
  static const char* const kT5[] = {"shared.", "relative_attention_bias"};
  if (kind == ModelKind::DiT) {
    const std::string n = name.starts_with(kUiPrefix) ? name.substr(std::string(kUiPrefix).size()) : name;
    return std::any_of(std::begin(kDit), std::end(kDit), [&](const char* p) { return n.starts_with(p); });
  }
  return std::any_of(std::begin(kT5), std::end(kT5), [&](const char* p) { return name.find(p) != std::string::npos; });
}

bool plain(const TensorView& v) { return !v.parts && v.scale == 1.0f && v.data; }

// The dtype a kept tensor is written in: its own where GGUF has it, else the exact or safe widening.
DType kept_dtype(const TensorView& v) {
  if (plain(v) && (v.dtype == DType::F32 || v.dtype == DType::F16 || v.dtype == DType::BF16)) return v.dtype;
  if (plain(v) && v.dtype == DType::F8_E4M3) return DType::BF16;  // e4m3 values are all exact in bf16
  if (plain(v) && dtype_is_quantized(v.dtype)) return v.dtype;     // GGUF → GGUF: already a block type
  return DType::F32;
}

// The name a tensor is written under, or "" to leave it out.
std::string gguf_name(ModelKind kind, const std::string& name) {
  if (kind == ModelKind::DiT) return name.starts_with(kUiPrefix) ? name.substr(std::string(kUiPrefix).size()) : name;
  if (name == "encoder.embed_tokens.weight") return "";  // a second copy of shared.weight in HF files
  return t5_hf_to_gguf(name);
}

// Converts rows of `v` to `type` into dst, a few rows at a time (no whole-tensor float copy).
void convert_rows(const TensorView& v, DType type, void* dst) {
  const quant::TypeTraits* tt = quant::traits(type);
  const int64_t R = v.shape.size() > 1 ? v.dim(0) : 1, K = v.numel() / std::max<int64_t>(R, 1);
  const size_t row_bytes = dtype_row_bytes(type, K);
  const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(K, 1));
  for (int64_t r = 0; r < R; r += chunk) {
    const int64_t e = std::min(R, r + chunk);
    const Tensor f = v.shape.size() > 1 ? v.rows(r, e).to_f32() : v.to_f32();
    tt->quantize(f.ptr(), static_cast<char*>(dst) + size_t(r) * row_bytes, f.numel());
  }
}

}  // namespace

DType parse_quantize_type(const std::string& name) {
  std::string lower = name, all;
  for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& c : kChoices) {
    if (lower == c.name) return c.dtype;
    all += std::string(all.empty() ? "" : ", ") + c.name;
  }
  throw Error("--type " + name + " is not one of " + all);
}

bool is_quantizable(ModelKind kind, const std::string& name, const TensorView& v, DType type) {
  return v.shape.size() == 2 && name.ends_with(".weight") && dtype_is_float(v.dtype) && !kept_by_name(kind, name) &&
         v.dim(1) % dtype_block_size(type) == 0;
}

namespace {

// The output replaces its path only when complete, so writing over an input would succeed — and
// destroy the checkpoint: refuse any file the input resolves to (index, shard, the file in a folder)
// under any spelling (relative path, symlink, hard link), compared by device and inode.
void check_not_an_input(const WeightStore& store, const std::string& in, const std::string& out) {
  struct stat o {};
  if (stat(out.c_str(), &o) != 0) return;  // a new file cannot be an input
  for (const std::string& file : store.files()) {
    struct stat f {};
    if (stat(file.c_str(), &f) == 0 && f.st_dev == o.st_dev && f.st_ino == o.st_ino)
      throw Error(out + ": is the input file " + file + (file == in ? "" : " (read for " + in + ")") +
                  "; write the GGUF to another path");
  }
}

}  // namespace

QuantizeReport quantize_model(const std::string& in, const std::string& out, DType type) {
  const WeightStore store = WeightStore::open(in);
  check_not_an_input(store, in, out);
  QuantizeReport r;
  r.kind = store.format().kind;
  if (r.kind != ModelKind::DiT && r.kind != ModelKind::T5)
    throw Error(in + ": quantize handles a Chroma DiT or a T5 encoder; this file was read as " + store.format().describe());
  const TypeChoice* choice = nullptr;
  for (const auto& c : kChoices)
    if (c.dtype == type) choice = &c;
  if (!choice) throw Error(std::string("quantize: cannot write type ") + dtype_name(type));

  std::map<std::string, GgufValue> metadata = {
      {"general.architecture", GgufValue::str(r.kind == ModelKind::DiT ? "flux" : "t5encoder")},
      {"general.quantization_version", GgufValue::u32(2)},
      {"general.file_type", GgufValue::u32(choice->file_type)},
  };
  std::vector<GgufTensorOut> tensors;
  for (const auto& [name, v] : store.tensors()) {
    const std::string out_name = gguf_name(r.kind, name);
    if (out_name.empty() || !dtype_is_float(v.dtype)) continue;
    const bool quantize = is_quantizable(r.kind, name, v, type);
    const DType dtype = quantize ? type : kept_dtype(v);
    (quantize ? r.quantized : r.kept) += 1;
    r.bytes_in += v.nbytes;
    const TensorView view = v;
    tensors.push_back({out_name, dtype, v.shape, [view, dtype](void* dst) {
                         if (dtype == view.dtype && plain(view)) std::memcpy(dst, view.data, view.nbytes);
                         else convert_rows(view, dtype, dst);
                       }});
    r.bytes_out += size_t(v.numel() / v.shape.back()) * dtype_row_bytes(dtype, v.shape.back());
  }
  write_gguf(out, metadata, tensors);
  return r;
}

WeightSummary summarize(const WeightStore& store) {
  WeightSummary s;
  s.format = store.format();
  for (const auto& [name, v] : store.tensors()) {
    const std::string type = v.parts ? "joined" : dtype_name(v.dtype);
    s.type_counts[type] += 1;
    s.type_bytes[type] += v.nbytes;
    s.parameters += v.numel();
    s.bytes += v.nbytes;
  }
  return s;
}

}  // namespace chroma::io

// GGUF (version 2 and 3), the single-file format of ggml, llama.cpp, stable-diffusion.cpp and
// ComfyUI-GGUF. Layout, all little-endian:
//   "GGUF" u32 version, u64 tensor_count, u64 kv_count
//   kv_count × { string key, u32 value type, value }          string = u64 length + UTF-8 bytes
//   tensor_count × { string name, u32 n_dims, n_dims × u64 ne, u32 ggml_type, u64 offset }
//   padding to `general.alignment` (default 32), then the tensor data; offsets are relative to it.
// ggml lists dimensions innermost first (ne[0] = row length): our shape is ne reversed
// (chroma-spec.md §1.5), so a Linear weight [out, in] is stored with ne = [in, out].
// Tensor types: F32, F16, BF16 and the block types of tensor/quant.h (plus I32/I64/F64).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::io {

// GGUF metadata value types (gguf.h `gguf_type`).
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  U64 = 10, I64 = 11, F64 = 12
};

// One metadata value. Scalars fill `integer` (all integer types and bool) or `real`; strings fill
// `text`; arrays record their element type and length, plus the values of integer arrays (kept:
// e.g. ComfyUI-GGUF's "comfy.gguf.orig_shape.<tensor>") — arrays of strings are counted only.
struct GgufValue {
  GgufType type = GgufType::U32;
  int64_t integer = 0;
  double real = 0;
  std::string text;
  GgufType element_type = GgufType::U8;  // arrays
  uint64_t count = 0;                    // arrays
  std::vector<int64_t> integers;         // arrays of integers

  static GgufValue u32(uint32_t v);
  static GgufValue str(std::string v);
  std::string to_string() const;  // for `chromacpp info`: 7, 0.5, "flux", [array of 32128 STRING]; strings printable()
};

// A mapped GGUF file, validated strictly at open: a regular file; magic, version, counts and string
// lengths against the bytes left, value and tensor types, duplicate keys and names, dimensions (1–4,
// each ≥ 1, byte count without overflow, row length a whole number of blocks), alignment, and each
// tensor inside the file at the offset the previous one's end implies (no overlap, no hole, nothing
// after the last but its padding). Reading time is linear in the file size. Violations throw
// chroma::Error naming the file (and tensor).
class MappedFile;  // io/untrusted.h

class GgufFile {
 public:
  static std::unique_ptr<GgufFile> open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  // Tensors by stored name, shapes in PyTorch order (ne reversed); views into the mapping.
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::vector<std::string>& order() const { return order_; }  // names in file order
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find_metadata(const std::string& key) const;
  std::string architecture() const;  // general.architecture, or "" when absent

 private:
  GgufFile() = default;
  std::string path_;
  uint32_t version_ = 0;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, TensorView> tensors_;
  std::vector<std::string> order_;
  std::map<std::string, GgufValue> metadata_;
};

// True when the file starts with the GGUF magic (false for a missing or short file).
bool is_gguf_file(const std::string& path);

// llama.cpp's T5 encoder names (ComfyUI-GGUF / city96 T5 GGUFs) ↔ Hugging Face T5 names:
//   token_embd.weight                 ↔ shared.weight
//   enc.output_norm.weight            ↔ encoder.final_layer_norm.weight
//   enc.blk.N.attn_{q,k,v,o}.weight   ↔ encoder.block.N.layer.0.SelfAttention.{q,k,v,o}.weight
//   enc.blk.N.attn_rel_b.weight       ↔ encoder.block.N.layer.0.SelfAttention.relative_attention_bias.weight
//   enc.blk.N.attn_norm.weight        ↔ encoder.block.N.layer.0.layer_norm.weight
//   enc.blk.N.ffn_gate / ffn_up / ffn_down ↔ encoder.block.N.layer.1.DenseReluDense.wi_0 / wi_1 / wo
//   enc.blk.N.ffn_norm.weight         ↔ encoder.block.N.layer.1.layer_norm.weight
// Names matching no rule are returned unchanged (DiT GGUFs keep the BFL names).
std::string t5_gguf_to_hf(const std::string& name);
std::string t5_hf_to_gguf(const std::string& name);

// The tensors of a GGUF file under the names the models ask for: llama.cpp T5 names mapped to HF
// names (when the file has "enc.blk." tensors); everything else unchanged. Throws if two stored
// names map to one.
std::map<std::string, TensorView> gguf_original_names(const GgufFile& file);

// One tensor to write. `fill` writes exactly dtype_row_bytes(dtype, shape.back()) × rows bytes (the
// tensor in its stored dtype) to `dst`; it is called once, in file order, so a converter can produce
// one tensor at a time.
struct GgufTensorOut {
  std::string name;
  DType dtype = DType::F32;  // F32, F16, BF16 or a block type
  Shape shape;               // PyTorch order; written as ne reversed
  std::function<void(void* dst)> fill;
};

// Writes a GGUF v3 file atomically (temporary file renamed over `path`), alignment 32.
// Throws chroma::Error naming the path or tensor for an unwritable dtype or a bad row length.
void write_gguf(const std::string& path, const std::map<std::string, GgufValue>& metadata,
                const std::vector<GgufTensorOut>& tensors);

}  // namespace chroma::io

// Tensors: the engine's two data types.
//   Tensor      owned float32 activations, row-major, shapes in PyTorch order.
//   TensorView  a borrowed, typed view of stored data (e.g. an mmapped weight in its stored dtype).
// Weights stay in their stored dtype; kernels widen them tile by tile (see backend/ops.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace chroma {

// Plain element types, then the ggml block-quantized types read from GGUF (tensor/quant.h):
// a block type stores its innermost dimension in blocks of 32 or 256 values, each block holding
// scales and small integers; such a weight stays quantized and is expanded a tile at a time.
enum class DType { F32, F16, BF16, F8_E4M3, F64, I32, I64, U8, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K };

size_t dtype_size(DType t);            // bytes per element of a plain type; 0 for block types
const char* dtype_name(DType t);       // safetensors spelling: "F32", "BF16", ...; ggml's for blocks: "Q8_0"
bool dtype_from_name(const std::string& name, DType* out);  // safetensors spellings only
bool dtype_is_float(DType t);          // floats and block-quantized floats (weights a linear may use)
bool dtype_is_quantized(DType t);      // the block types
int64_t dtype_block_size(DType t);     // values per block: 1 for plain types, 32 or 256 for block types
// Bytes of `n` consecutive values along the innermost dimension. Throws unless n is a whole number
// of blocks, or when the count does not fit in 64 bits.
size_t dtype_row_bytes(DType t, int64_t n);

// a × b into *product; false when it does not fit in 64 bits. Every byte count computed from file
// data goes through this (or tensor_bytes): a wrapped product once made 2^64 bytes look like 0.
bool checked_mul(uint64_t a, uint64_t b, uint64_t* product);

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
// Bytes of a tensor of `shape` (dimensions ≥ 0) stored as `t`: rows × dtype_row_bytes(last dim);
// nullopt when that does not fit in 64 bits. Throws like dtype_row_bytes for partial blocks.
std::optional<uint64_t> tensor_bytes(DType t, const Shape& shape);
std::string shape_str(const Shape& s);  // "[1, 16, 8, 8]"

// Scalar conversions (exact widening; bf16 narrowing rounds to nearest even like PyTorch).
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Inline and branch-free, so that loops over it vectorise (the bf16 compute path rounds whole inputs).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;         // round to nearest even
  return uint16_t((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);  // NaN stays a quiet NaN
}
inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }
float f16_to_f32(uint16_t h);
float f8e4m3_to_f32(uint8_t v);

struct Tensor {
  Shape shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(Shape s) : shape(std::move(s)), data(size_t(shape_numel(shape)), 0.0f) {}
  Tensor(Shape s, std::vector<float> values);

  int64_t numel() const { return int64_t(data.size()); }
  int rank() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? i + rank() : i)]; }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  // Same data, new shape (element count must match).
  Tensor reshaped(Shape s) const;
  void reshape(Shape s);
  // Rows [begin, end) of the first dimension (copy).
  Tensor rows(int64_t begin, int64_t end) const;
};

struct TensorView {
  std::string name;   // name in its file, for error messages
  std::string file;   // the file it came from
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  // Stored value × scale = the weight: the per-tensor scale of fp8 "scaled" checkpoints
  // (io/formats.h). Applied wherever the view is widened (to_f32, the backends' widening).
  float scale = 1.0f;
  // A weight stored as separate tensors (diffusers' to_q / to_k / to_v) seen as their concatenation
  // along dim 0 without a copy: `data` is null, nbytes is the parts' total, and rows() inside one
  // part is a plain view of it (io/formats.h builds these).
  std::shared_ptr<const std::vector<TensorView>> parts;

  explicit operator bool() const { return data != nullptr || parts != nullptr; }
  int64_t numel() const { return shape_numel(shape); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? int(shape.size()) + i : i)]; }
  // Widen to float32 (floats) or convert integers to float32; a copy.
  Tensor to_f32() const;
  // Integer contents (I32/I64) as int64.
  std::vector<int64_t> to_i64() const;
  // Rows [begin, end) of the first dimension, as a view (of the one part holding them, if any).
  TensorView rows(int64_t begin, int64_t end) const;
};

// A view of a float32 tensor (for passing activations where a weight is expected).
TensorView view_of(const Tensor& t, const std::string& name = "");

}  // namespace chroma

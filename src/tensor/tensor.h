// Tensors: the engine's two data types.
//   Tensor      owned float32 activations, row-major, shapes in PyTorch order, in host or device memory.
//   TensorView  a borrowed, typed view of stored data (e.g. an mmapped weight in its stored dtype).
// Weights stay in their stored dtype; kernels widen them tile by tile (see backend/ops.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
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

// Where a tensor's bytes live: the host's memory, or a compute device's. A backend hands out its own
// (Backend::memory()); the host's is host_memory(). Tensors copy and move through it, so this layer
// needs no backend to allocate, copy or transfer.
class Memory {
 public:
  virtual ~Memory() = default;
  virtual const char* name() const = 0;        // "host", "cuda:0": for error messages
  virtual bool host_accessible() const = 0;    // the CPU may read and write its pointers directly
  virtual void* allocate(size_t bytes) = 0;    // uninitialised; throws chroma::Error when it cannot
  virtual void release(void* p) noexcept = 0;
  virtual void fill_zero(void* p, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;             // both in this memory
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
};
// The process's host memory: 64-byte aligned blocks from malloc (so pipeline/heap.h's policy applies).
Memory& host_memory();

// Owned bytes in one Memory. Copying copies the bytes within that memory.
class Storage {
 public:
  enum class Init { Zeros, Uninitialized };
  Storage() = default;
  Storage(Memory& memory, size_t bytes, Init init = Init::Zeros);
  Storage(const Storage& other);
  Storage& operator=(const Storage& other);
  Storage(Storage&& other) noexcept;
  Storage& operator=(Storage&& other) noexcept;
  ~Storage();

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Memory& memory() const { return *memory_; }
  bool on_host() const { return on_host_; }

 private:
  Memory* memory_ = &host_memory();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool on_host_ = true;  // memory_->host_accessible(), kept so that host access costs one test
};

// Float32 activations, row-major, in the memory of the backend that made them (host by default).
// Model and sampler code works on them through ops (backend/ops.h) and never reads their values;
// host code (inputs, outputs, tests) reads them with values()/ptr() after to_host().
struct Tensor {
  Shape shape;

  Tensor() = default;
  explicit Tensor(Shape s);                  // zeros on the host
  Tensor(Shape s, Memory& memory);           // zeros in `memory`
  Tensor(Shape s, std::vector<float> values);  // on the host
  // Unspecified values in `memory`, for a result that is written whole (no zero-filling pass).
  static Tensor uninitialized(Shape s, Memory& memory);

  int64_t numel() const { return int64_t(storage_.bytes() / sizeof(float)); }
  int rank() const { return int(shape.size()); }
  int64_t dim(int i) const { return shape[size_t(i < 0 ? i + rank() : i)]; }
  Memory& memory() const { return storage_.memory(); }
  bool on_host() const { return storage_.on_host(); }

  // The values, on the host only: throws chroma::Error naming the memory otherwise (use to_host).
  float* ptr() { return host_data(); }
  const float* ptr() const { return host_data(); }
  std::span<float> values() { return {host_data(), size_t(numel())}; }
  std::span<const float> values() const { return {host_data(), size_t(numel())}; }
  // A host copy of the values, from any memory.
  std::vector<float> to_vector() const;
  // Device-neutral access for backends: the raw bytes in memory().
  void* raw() { return storage_.get(); }
  const void* raw() const { return storage_.get(); }

  // Same data, new shape (element count must match).
  Tensor reshaped(Shape s) const;
  void reshape(Shape s);
  // Rows [begin, end) of the first dimension (a copy, in the same memory).
  Tensor rows(int64_t begin, int64_t end) const;
  // Rows [src_row, src_row + n) of `src` written over rows [dst_row, dst_row + n) of this tensor;
  // both 2-D of one width, in one memory.
  void copy_rows_from(const Tensor& src, int64_t src_row, int64_t dst_row, int64_t n);

 private:
  float* host_data() const {
    if (!storage_.on_host()) not_on_host();
    return static_cast<float*>(storage_.get());
  }
  [[noreturn]] void not_on_host() const;
  Storage storage_;
};

// The tensor in `memory` (moved when it is there already, else copied across).
Tensor to_memory(Tensor t, Memory& memory);
// The tensor on the host: to_memory(t, host_memory()).
Tensor to_host(Tensor t);
// `t` itself when it is on the host, else a host copy kept in `holder`: reading without a copy on the CPU.
const Tensor& host_readable(const Tensor& t, Tensor& holder);

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

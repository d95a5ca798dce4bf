#include "tensor/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tensor/quant.h"

namespace chroma {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::F8_E4M3: case DType::U8: return 1;
    default: return 0;  // block types: see dtype_row_bytes
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    default: {
      const quant::TypeTraits* q = quant::traits(t);  // block types: ggml's spelling
      return q ? q->name : "?";
    }
  }
}

bool dtype_from_name(const std::string& n, DType* out) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F8_E4M3", DType::F8_E4M3},
      {"F64", DType::F64}, {"I32", DType::I32}, {"I64", DType::I64},   {"U8", DType::U8}};
  for (auto& [name, t] : kNames)
    if (n == name) { *out = t; return true; }
  return false;
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3 || t == DType::F64 ||
         dtype_is_quantized(t);
}

bool dtype_is_quantized(DType t) { return dtype_size(t) == 0; }

int64_t dtype_block_size(DType t) {
  if (!dtype_is_quantized(t)) return 1;
  return quant::traits(t)->block_size;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* product) { return !__builtin_mul_overflow(a, b, product); }

namespace {
// Row bytes, or nullopt on overflow; throws for partial blocks.
std::optional<uint64_t> row_bytes(DType t, int64_t n) {
  uint64_t bytes = 0;
  if (!dtype_is_quantized(t)) {
    if (!checked_mul(uint64_t(n), dtype_size(t), &bytes)) return std::nullopt;
    return bytes;
  }
  const quant::TypeTraits* q = quant::traits(t);
  if (n % q->block_size != 0)
    throw Error(std::string("a ") + q->name + " row of " + std::to_string(n) + " values is not a whole number of " +
                std::to_string(q->block_size) + "-value blocks");
  if (!checked_mul(uint64_t(n / q->block_size), q->block_bytes, &bytes)) return std::nullopt;
  return bytes;
}
}  // namespace

size_t dtype_row_bytes(DType t, int64_t n) {
  const std::optional<uint64_t> bytes = row_bytes(t, n);
  if (!bytes) throw Error(std::string("a ") + dtype_name(t) + " row of " + std::to_string(n) + " values overflows 64 bits");
  return size_t(*bytes);
}

std::optional<uint64_t> tensor_bytes(DType t, const Shape& shape) {
  uint64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i)
    if (!checked_mul(rows, uint64_t(shape[i]), &rows)) return std::nullopt;
  const std::optional<uint64_t> row = row_bytes(t, shape.empty() ? 1 : shape.back());
  uint64_t bytes = 0;
  if (!row || !checked_mul(rows, *row, &bytes)) return std::nullopt;
  return bytes;
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

float f16_to_f32(uint16_t h) {
  // Shift exponent and mantissa into float position and rescale by 2^112 (the bias difference):
  // exact for normal and subnormal halves alike. Infinity and NaN (exponent 31) are set directly.
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t bits = uint32_t(h & 0x7fff) << 13;
  float v;
  if ((h & 0x7c00) == 0x7c00) {
    bits |= 0x7f800000;
    std::memcpy(&v, &bits, 4);
  } else {
    std::memcpy(&v, &bits, 4);
    v *= 0x1p112f;
  }
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u |= sign;
  std::memcpy(&v, &u, 4);
  return v;
}

// float8 e4m3fn: bias 7, no infinities, 0x7f/0xff are NaN.
float f8e4m3_to_f32(uint8_t x) {
  int exp = (x >> 3) & 0xf, man = x & 7;
  float v;
  if (exp == 15 && man == 7) v = NAN;
  else if (exp == 0) v = std::ldexp(float(man), -9);
  else v = std::ldexp(float(8 + man), exp - 10);
  return (x & 0x80) ? -v : v;
}

namespace {

class HostMemory final : public Memory {
 public:
  const char* name() const override { return "host"; }
  bool host_accessible() const override { return true; }
  void* allocate(size_t bytes) override {
    constexpr size_t kAlign = 64;  // a cache line: whole AVX-512 vectors
    void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
    if (!p) throw Error("out of memory: " + std::to_string(bytes >> 20) + " MiB of host memory for a tensor");
    return p;
  }
  void release(void* p) noexcept override { std::free(p); }
  void fill_zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_from_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
};

size_t float_bytes(const Shape& shape) {
  uint64_t n = 1;
  for (int64_t d : shape)
    if (d < 0) throw Error("tensor: impossible shape " + shape_str(shape));
  for (int64_t d : shape)
    if (!checked_mul(n, uint64_t(d), &n)) throw Error("tensor: shape " + shape_str(shape) + " is too large");
  uint64_t bytes;
  if (!checked_mul(n, sizeof(float), &bytes) || bytes > SIZE_MAX) throw Error("tensor: shape " + shape_str(shape) + " is too large");
  return size_t(bytes);
}

}  // namespace

Memory& host_memory() {
  static HostMemory host;
  return host;
}

Storage::Storage(Memory& memory, size_t bytes, Init init)
    : memory_(&memory), bytes_(bytes), on_host_(memory.host_accessible()) {
  if (!bytes) return;
  ptr_ = memory.allocate(bytes);
  if (init == Init::Zeros) memory.fill_zero(ptr_, bytes);
}
Storage::Storage(const Storage& other) : Storage(*other.memory_, other.bytes_, Init::Uninitialized) {
  if (bytes_) memory_->copy(ptr_, other.ptr_, bytes_);
}
Storage& Storage::operator=(const Storage& other) {
  if (this != &other) *this = Storage(other);
  return *this;
}
Storage::Storage(Storage&& other) noexcept
    : memory_(other.memory_), ptr_(other.ptr_), bytes_(other.bytes_), on_host_(other.on_host_) {
  other.ptr_ = nullptr;
  other.bytes_ = 0;
}
Storage& Storage::operator=(Storage&& other) noexcept {
  if (this != &other) {
    if (ptr_) memory_->release(ptr_);
    memory_ = other.memory_;
    ptr_ = other.ptr_;
    bytes_ = other.bytes_;
    on_host_ = other.on_host_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}
Storage::~Storage() {
  if (ptr_) memory_->release(ptr_);
}

Tensor::Tensor(Shape s) : Tensor(std::move(s), host_memory()) {}

Tensor::Tensor(Shape s, Memory& memory) : shape(std::move(s)), storage_(memory, float_bytes(shape)) {}

Tensor Tensor::uninitialized(Shape s, Memory& memory) {
  Tensor t;
  t.storage_ = Storage(memory, float_bytes(s), Storage::Init::Uninitialized);
  t.shape = std::move(s);
  return t;
}

Tensor::Tensor(Shape s, std::vector<float> values) : shape(std::move(s)) {
  if (int64_t(values.size()) != shape_numel(shape))
    throw Error("tensor: " + std::to_string(values.size()) + " values do not fill shape " + shape_str(shape));
  storage_ = Storage(host_memory(), values.size() * sizeof(float), Storage::Init::Uninitialized);
  if (!values.empty()) std::memcpy(storage_.get(), values.data(), values.size() * sizeof(float));
}

void Tensor::not_on_host() const {
  throw Error("tensor " + shape_str(shape) + " is in " + storage_.memory().name() +
              " memory: the host reads it only after to_host()");
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  if (!v.empty()) memory().copy_to_host(v.data(), raw(), v.size() * sizeof(float));
  return v;
}

Tensor Tensor::reshaped(Shape s) const {
  Tensor t = *this;
  t.reshape(std::move(s));
  return t;
}

void Tensor::reshape(Shape s) {
  if (shape_numel(s) != numel())
    throw Error("reshape: " + shape_str(shape) + " cannot become " + shape_str(s));
  shape = std::move(s);
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  const int64_t row = shape.empty() || shape[0] == 0 ? 1 : numel() / shape[0];
  if (shape.empty() || begin < 0 || end < begin || end > shape[0])
    throw Error("tensor rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of range for " +
                shape_str(shape));
  Shape s = shape;
  s[0] = end - begin;
  Tensor t = uninitialized(s, memory());
  if (t.numel()) memory().copy(t.raw(), static_cast<const float*>(raw()) + begin * row, size_t(t.numel()) * sizeof(float));
  return t;
}

void Tensor::copy_rows_from(const Tensor& src, int64_t src_row, int64_t dst_row, int64_t n) {
  if (rank() != 2 || src.rank() != 2 || src.dim(1) != dim(1) || &src.memory() != &memory() || n < 0 || src_row < 0 ||
      dst_row < 0 || src_row + n > src.dim(0) || dst_row + n > dim(0))
    throw Error("copy_rows_from: rows [" + std::to_string(src_row) + ", +" + std::to_string(n) + ") of " +
                shape_str(src.shape) + " in " + src.memory().name() + " memory do not fit at row " +
                std::to_string(dst_row) + " of " + shape_str(shape) + " in " + memory().name() + " memory");
  const int64_t W = dim(1);
  if (n) memory().copy(static_cast<float*>(raw()) + dst_row * W, static_cast<const float*>(src.raw()) + src_row * W,
                       size_t(n * W) * sizeof(float));
}

Tensor to_memory(Tensor t, Memory& memory) {
  if (&t.memory() == &memory) return t;
  Tensor out = Tensor::uninitialized(t.shape, memory);
  const size_t bytes = size_t(t.numel()) * sizeof(float);
  if (!bytes) return out;
  if (memory.host_accessible()) t.memory().copy_to_host(out.raw(), t.raw(), bytes);
  else if (t.on_host()) memory.copy_from_host(out.raw(), t.raw(), bytes);
  else memory.copy_from_host(out.raw(), t.to_vector().data(), bytes);  // device to device through the host
  return out;
}

Tensor to_host(Tensor t) { return to_memory(std::move(t), host_memory()); }

const Tensor& host_readable(const Tensor& t, Tensor& holder) {
  if (t.on_host()) return t;
  holder = to_host(t);
  return holder;
}

Tensor TensorView::to_f32() const {
  if (parts) {  // the concatenation of the parts along dim 0, each widened with its own scale
    Tensor t(shape);
    size_t at = 0;
    for (const TensorView& p : *parts) {
      const Tensor pt = p.to_f32();
      std::copy_n(pt.ptr(), pt.numel(), t.ptr() + at);
      at += size_t(pt.numel());
    }
    return t;
  }
  Tensor t(shape);
  const int64_t n = numel();
  float* o = t.ptr();
  switch (dtype) {
    case DType::F32: std::memcpy(o, data, size_t(n) * 4); break;
    case DType::BF16: { auto* p = static_cast<const uint16_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = bf16_to_f32(p[i]); break; }
    case DType::F16: { auto* p = static_cast<const uint16_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = f16_to_f32(p[i]); break; }
    case DType::F8_E4M3: { auto* p = static_cast<const uint8_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = f8e4m3_to_f32(p[i]); break; }
    case DType::F64: { auto* p = static_cast<const double*>(data); for (int64_t i = 0; i < n; ++i) o[i] = float(p[i]); break; }
    case DType::I32: { auto* p = static_cast<const int32_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = float(p[i]); break; }
    case DType::I64: { auto* p = static_cast<const int64_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = float(p[i]); break; }
    case DType::U8: { auto* p = static_cast<const uint8_t*>(data); for (int64_t i = 0; i < n; ++i) o[i] = float(p[i]); break; }
    default: quant::dequantize_range(dtype, data, 0, n, o); break;  // block types (tensor/quant.h)
  }
  if (scale != 1.0f)
    for (int64_t i = 0; i < n; ++i) o[i] *= scale;
  return t;
}

std::vector<int64_t> TensorView::to_i64() const {
  const int64_t n = numel();
  std::vector<int64_t> r(size_t(n), 0);
  if (dtype == DType::I32) {
    auto* p = static_cast<const int32_t*>(data);
    for (int64_t i = 0; i < n; ++i) r[size_t(i)] = p[i];
  } else if (dtype == DType::I64) {
    std::memcpy(r.data(), data, size_t(n) * 8);
  } else {
    throw Error("tensor '" + name + "' in " + file + ": expected an integer dtype, found " + dtype_name(dtype));
  }
  return r;
}

TensorView TensorView::rows(int64_t begin, int64_t end) const {
  if (begin < 0 || end < begin || shape.empty() || end > shape[0])
    throw Error("tensor '" + name + "'" + (file.empty() ? "" : " in " + file) + ": rows [" + std::to_string(begin) +
                ", " + std::to_string(end) + ") outside shape " + shape_str(shape));
  if (parts) {
    // The parts overlapping [begin, end): one part gives a plain view, several a smaller composite.
    auto sub = std::make_shared<std::vector<TensorView>>();
    int64_t at = 0;
    for (const TensorView& p : *parts) {
      const int64_t b = std::max(begin, at), e = std::min(end, at + p.shape[0]);
      if (b < e) sub->push_back(p.rows(b - at, e - at));
      at += p.shape[0];
    }
    if (sub->size() == 1) return sub->front();
    TensorView v = *this;
    v.shape[0] = end - begin;
    v.nbytes = 0;
    for (const TensorView& p : *sub) v.nbytes += p.nbytes;
    v.parts = std::move(sub);
    return v;
  }
  TensorView v = *this;
  // Block types: a row must be whole blocks (true for any 2-D GGUF weight, whose rows are ne[0]).
  const size_t row_bytes = shape.empty() ? nbytes : dtype_row_bytes(dtype, numel() / shape[0]);
  v.shape[0] = end - begin;
  v.data = static_cast<const char*>(data) + size_t(begin) * row_bytes;
  v.nbytes = size_t(end - begin) * row_bytes;
  return v;
}

TensorView view_of(const Tensor& t, const std::string& name) {
  TensorView v;
  v.name = name;
  v.dtype = DType::F32;
  v.shape = t.shape;
  v.data = t.ptr();
  v.nbytes = size_t(t.numel()) * 4;
  return v;
}

}  // namespace chroma

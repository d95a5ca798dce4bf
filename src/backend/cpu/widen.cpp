// Widening stored weights (bf16, f16, f8 e4m3, f32, f64, GGUF block types) to float32, a block of rows at a time.
#include <algorithm>
#include <cstring>

#include "backend/cpu/kernels.h"
#include "tensor/quant.h"

namespace chroma::cpu {
namespace {

// f16 and f8 are decoded through tables built once: exact, and much cheaper than ldexp per value.
const float* f16_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = f16_to_f32(uint16_t(i));
    return t;
  }();
  return table.data();
}

const float* f8_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (uint32_t i = 0; i < 256; ++i) t[i] = f8e4m3_to_f32(uint8_t(i));
    return t;
  }();
  return table.data();
}

}  // namespace

std::string describe(const TensorView& v) {
  return "'" + v.name + "'" + (v.file.empty() ? std::string() : " in " + v.file);
}

void check_float_view(const char* op, const TensorView& v) {
  if (!dtype_is_float(v.dtype))
    throw Error(std::string(op) + ": tensor " + describe(v) + " has dtype " + dtype_name(v.dtype) +
                ", expected a float dtype");
  // Rows along the innermost dimension (block types store each as whole blocks, tensor/quant.h).
  const int64_t inner = v.shape.empty() ? 1 : v.dim(-1);
  const size_t need = inner ? size_t(v.numel() / inner) * dtype_row_bytes(v.dtype, inner) : 0;
  if (v.nbytes != need)
    throw Error(std::string(op) + ": tensor " + describe(v) + " holds " + std::to_string(v.nbytes) +
                " bytes, shape " + shape_str(v.shape) + " needs " + std::to_string(need));
}

void widen_rows(const TensorView& v, int64_t row0, int64_t rows, float* dst) {
  const int64_t K = v.shape.empty() ? 1 : v.numel() / v.dim(0);
  if (v.parts) {  // row-concatenated parts (TensorView::parts): widen the overlap with each in turn
    int64_t at = 0;
    for (const TensorView& p : *v.parts) {
      const int64_t b = std::max(row0, at), e = std::min(row0 + rows, at + p.dim(0));
      if (b < e) widen_rows(p, b - at, e - b, dst + (b - row0) * K);
      at += p.dim(0);
    }
    return;
  }
  const int64_t begin = row0 * K, n = rows * K;
  switch (v.dtype) {
    case DType::F32:
      std::memcpy(dst, static_cast<const float*>(v.data) + begin, size_t(n) * 4);
      break;
    case DType::BF16: {
      // bf16 is the top half of a float32: widening is a 16-bit shift (vectorises).
      const uint16_t* p = static_cast<const uint16_t*>(v.data) + begin;
      uint32_t* o = reinterpret_cast<uint32_t*>(dst);
      for (int64_t i = 0; i < n; ++i) o[i] = uint32_t(p[i]) << 16;
      break;
    }
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(v.data) + begin;
      const float* t = f16_table();
      for (int64_t i = 0; i < n; ++i) dst[i] = t[p[i]];
      break;
    }
    case DType::F8_E4M3: {
      const uint8_t* p = static_cast<const uint8_t*>(v.data) + begin;
      const float* t = f8_table();
      for (int64_t i = 0; i < n; ++i) dst[i] = t[p[i]];
      break;
    }
    case DType::F64: {
      const double* p = static_cast<const double*>(v.data) + begin;
      for (int64_t i = 0; i < n; ++i) dst[i] = float(p[i]);
      break;
    }
    default:
      if (dtype_is_quantized(v.dtype)) {  // GGUF block types: decoded block by block (tensor/quant.h)
        quant::dequantize_range(v.dtype, v.data, begin, n, dst);
        break;
      }
      throw Error("widen: tensor " + describe(v) + " has non-float dtype " + dtype_name(v.dtype));
  }
  if (v.scale != 1.0f)  // fp8 "scaled" checkpoints: stored value × per-tensor scale
    for (int64_t i = 0; i < n; ++i) dst[i] *= v.scale;
}

Tensor widen(const TensorView& v) {
  check_float_view("widen", v);
  Tensor t(v.shape);
  widen_rows(v, 0, v.shape.empty() ? 1 : v.dim(0), t.ptr());
  return t;
}

}  // namespace chroma::cpu

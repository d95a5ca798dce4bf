// ggml block quantization: the block layouts GGUF files store (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, and the
// 256-value "K" super-blocks Q4_K, Q5_K, Q6_K), with dequantize-row and quantize-row functions.
//
// A row of n values (n a multiple of the block size) is n / block_size consecutive blocks. Scales are
// IEEE half floats (f16). The layouts are ggml's (ggml-common.h); the value each block decodes to is:
//   Q8_0  x[i] = d · qs[i]                                  qs int8
//   Q4_0  x[i] = d · (q[i] − 8)                             q 4-bit: x[i] low nibble of qs[i], x[i+16] high nibble
//   Q4_1  x[i] = d · q[i] + m                               q 4-bit, nibbles as Q4_0
//   Q5_0  x[i] = d · (q[i] − 16)                            q 5-bit: nibbles as Q4_0, bit 4 = bit i of qh (LE u32)
//   Q5_1  x[i] = d · q[i] + m                               q 5-bit as Q5_0
//   Q4_K  x = d·sc[j] · q − dmin·mn[j]   8 sub-blocks j of 32; sc, mn 6-bit packed in scales[12]; q 4-bit
//   Q5_K  as Q4_K with a 5th bit per value in qh[32]
//   Q6_K  x = d · sc[j] · (q − 32)       16 sub-blocks j of 16; sc int8; q 6-bit = 4 low bits in ql, 2 in qh
// K-quant nibble order: the super-block is 4 chunks of 64 values; chunk c uses qs[32c .. 32c+32), its
// first 32 values in the low nibbles and the next 32 in the high nibbles (Q6_K: 2 chunks of 128,
// see dequantize_q6_k).
#pragma once
#include <cstddef>
#include <cstdint>

#include "tensor/tensor.h"

namespace chroma::quant {

constexpr int kQK = 32;    // values per Q8_0/Q4_x/Q5_x block
constexpr int kQK_K = 256; // values per K super-block

struct BlockQ8_0 { uint16_t d; int8_t qs[kQK]; };
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQK / 2]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[kQK / 2]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[kQK_K / 2]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[kQK_K / 8]; uint8_t qs[kQK_K / 2]; };
struct BlockQ6_K { uint8_t ql[kQK_K / 2]; uint8_t qh[kQK_K / 4]; int8_t scales[kQK_K / 16]; uint16_t d; };

// The sizes GGUF files are written with; any padding would break reading them.
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// Decodes n values (a multiple of the block size) from `src` to float32.
using DequantizeRow = void (*)(const void* src, float* dst, int64_t n);
// Encodes n float32 values (a multiple of the block size) into `dst`.
using QuantizeRow = void (*)(const float* src, void* dst, int64_t n);

// The integer form of n values (a multiple of the block size) of a block type: codes q[n] and, per
// sub-block of `int_sub_block` values, value = scale[s]·q + offset[s] — computed as the decoder
// computes it, so equal to the dequantized value. For int8 dot products (backend/cpu/linear_int8.cpp).
using DecodeInts = void (*)(const void* src, int64_t n, int8_t* q, float* scale, float* offset);

// One row of the type table: every block type and the plain floats GGUF can hold.
struct TypeTraits {
  DType dtype;
  const char* name;        // ggml spelling: "Q8_0", "BF16", ...
  uint32_t ggml_type;      // the ggml_type id stored in GGUF tensor infos
  int64_t block_size;      // values per block (1 for plain types)
  size_t block_bytes;      // bytes per block
  DequantizeRow dequantize;
  QuantizeRow quantize;    // nullptr where we do not write the type
  int int_sub_block;       // values per (scale, offset) of the integer form; 0: no integer form
  DecodeInts decode_ints;  // nullptr for the plain float types
};

// The entry for a dtype / ggml type id / ggml name, or nullptr.
const TypeTraits* traits(DType t);
const TypeTraits* traits_for_ggml_type(uint32_t ggml_type);
const TypeTraits* traits_for_name(const char* name);  // case-insensitive: "q8_0", "Q4_K", "bf16"

// Decodes values [begin, begin + n) of a tensor stored contiguously in `data` with dtype t.
// For block types begin and n must be multiples of the block size (throws chroma::Error otherwise).
void dequantize_range(DType t, const void* data, int64_t begin, int64_t n, float* dst);

// f32 → IEEE half for the block scales: rounds to nearest even, saturating to ±inf
// (the widening direction is chroma::f16_to_f32 in tensor.h).
uint16_t f32_to_f16(float f);

}  // namespace chroma::quant

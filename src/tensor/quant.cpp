// ggml block quantization (layouts in quant.h). Dequantization follows the layouts exactly; the
// quantizers are ours: simple min/max fits whose scales are rounded *outwards* to f16/6-bit/8-bit so
// that no value ever has to be clamped — every value is then within half a quantization step of its
// original (the error bounds tests/backend/test_quant.cpp checks).
#include "tensor/quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

namespace chroma::quant {

// ---------------------------------------------------------------------------------------------
// f16 scalars

uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);  // NaN, inf
  if (x >= 0x477ff000u) return sign | 0x7c00;                                  // ≥ 65520 rounds to inf
  if (x < 0x38800000u) {                                                        // below 2^-14: subnormal
    float a;
    std::memcpy(&a, &x, 4);
    return sign | uint16_t(std::nearbyint(a * 0x1p24f));  // units of 2^-24, ties to even (exact product)
  }
  // Normal: round the 23-bit mantissa to 10 bits (nearest even; a carry bumps the exponent), rebias 127 → 15.
  x += 0xfffu + ((x >> 13) & 1u);
  return sign | uint16_t((x - 0x38000000u) >> 13);
}

namespace {

float h2f(uint16_t h) { return chroma::f16_to_f32(h); }

// The smallest f16 ≥ v and the largest f16 ≤ v (v finite, |v| < 65504): scales rounded outwards.
uint16_t f16_at_least(float v) {
  uint16_t h = f32_to_f16(v);
  while (h2f(h) < v) h = (h & 0x8000) ? (h == 0x8000 ? 0x0001 : uint16_t(h - 1)) : uint16_t(h + 1);
  return h;
}
uint16_t f16_at_most(float v) {
  uint16_t h = f32_to_f16(v);
  while (h2f(h) > v) h = (h & 0x8000) ? uint16_t(h + 1) : (h == 0 ? 0x8001 : uint16_t(h - 1));
  return h;
}

// The f16 of v rounded away from zero: a scale at least as large as asked for, even for the tiny
// scales that fall in the f16 subnormal range (where rounding to nearest can lose 1/3 of the value).
uint16_t f16_outward(float v) { return uint16_t((v < 0 ? 0x8000 : 0) | f16_at_least(std::fabs(v))); }

int round_clamp(float v, int lo, int hi) { return std::clamp(int(std::lrint(v)), lo, hi); }

// The value of largest magnitude (keeping its sign), as the symmetric 4/5-bit types scale by it.
float signed_absmax(const float* x, int n) {
  float m = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(m)) m = x[i];
  return m;
}

// ---------------------------------------------------------------------------------------------
// Q8_0: 32 int8 values and one scale d = max|x| / 127.

void dequantize_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = d * float(b[i].qs[j]);
  }
}

void quantize_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    b[i].d = f16_outward(amax / 127.0f);  // |x|/d ≤ 127: no value is clamped
    const float d = h2f(b[i].d), id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = int8_t(round_clamp(x[j] * id, -127, 127));
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_0 / Q5_0: symmetric, d = (value of largest magnitude) / −2^(bits−1) (rounded outwards), so that
// value takes the lowest code; codes run −2^(bits−1) .. 2^(bits−1) − 1 (stored offset by 2^(bits−1)).
// Values of the other sign beyond the top code are clamped to it (at most one step off).

// The 4 low bits of value j (j < 32) of a 32-value block with nibbles qs[16].
int low_nibble_of(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xf : qs[j - 16] >> 4; }
void set_nibble(uint8_t* qs, int j, int q) {
  if (j < 16) qs[j] = uint8_t((qs[j] & 0xf0) | (q & 0xf));
  else qs[j - 16] = uint8_t((qs[j - 16] & 0x0f) | ((q & 0xf) << 4));
}
int high_bit_of(const uint8_t* qh, int j) {
  uint32_t h;
  std::memcpy(&h, qh, 4);  // little-endian u32: bit j is value j's 5th bit
  return int((h >> j) & 1u);
}

void dequantize_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = d * float(low_nibble_of(b[i].qs, j) - 8);
  }
}

void quantize_q4_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    b[i].d = f16_outward(signed_absmax(x, kQK) / -8.0f);
    const float d = h2f(b[i].d), id = d ? 1.0f / d : 0.0f;
    std::memset(b[i].qs, 0, sizeof b[i].qs);
    for (int j = 0; j < kQK; ++j) set_nibble(b[i].qs, j, round_clamp(x[j] * id, -8, 7) + 8);
  }
}

void dequantize_q5_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < kQK; ++j)
      y[i * kQK + j] = d * float((low_nibble_of(b[i].qs, j) | high_bit_of(b[i].qh, j) << 4) - 16);
  }
}

void quantize_q5_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    b[i].d = f16_outward(signed_absmax(x, kQK) / -16.0f);
    const float d = h2f(b[i].d), id = d ? 1.0f / d : 0.0f;
    std::memset(b[i].qs, 0, sizeof b[i].qs);
    uint32_t qh = 0;
    for (int j = 0; j < kQK; ++j) {
      const int q = round_clamp(x[j] * id, -16, 15) + 16;
      set_nibble(b[i].qs, j, q);
      qh |= uint32_t(q >> 4) << j;
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_1 / Q5_1: affine, x = d·q + m with m ≤ min(x) and d ≥ (max − m)/(2^bits − 1) rounded outwards,
// so (x − m)/d ∈ [0, 2^bits − 1] and nothing is clamped.

// Fills d, m and the codes q[32] of an affine block with `levels` − 1 as the top code.
void fit_affine(const float* x, int top, uint16_t* d16, uint16_t* m16, int* q) {
  float mn = x[0], mx = x[0];
  for (int j = 1; j < kQK; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
  *m16 = f16_at_most(mn);
  const float m = h2f(*m16);
  *d16 = f16_at_least((mx - m) / float(top));
  const float d = h2f(*d16), id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK; ++j) q[j] = round_clamp((x[j] - m) * id, 0, top);
}

void dequantize_q4_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = d * float(low_nibble_of(b[i].qs, j)) + m;
  }
}

void quantize_q4_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    int q[kQK];
    fit_affine(x, 15, &b[i].d, &b[i].m, q);
    std::memset(b[i].qs, 0, sizeof b[i].qs);
    for (int j = 0; j < kQK; ++j) set_nibble(b[i].qs, j, q[j]);
  }
}

void dequantize_q5_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float d = h2f(b[i].d), m = h2f(b[i].m);
    for (int j = 0; j < kQK; ++j)
      y[i * kQK + j] = d * float(low_nibble_of(b[i].qs, j) | high_bit_of(b[i].qh, j) << 4) + m;
  }
}

void quantize_q5_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    int q[kQK];
    fit_affine(x, 31, &b[i].d, &b[i].m, q);
    std::memset(b[i].qs, 0, sizeof b[i].qs);
    uint32_t qh = 0;
    for (int j = 0; j < kQK; ++j) {
      set_nibble(b[i].qs, j, q[j]);
      qh |= uint32_t(q[j] >> 4) << j;
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

// ---------------------------------------------------------------------------------------------
// Q4_K / Q5_K: 8 sub-blocks of 32, x = (d·sc[j])·q − (dmin·mn[j]) with 6-bit sc, mn packed in 12 bytes:
//   j < 4:  sc = scales[j] & 63,                           mn = scales[j+4] & 63
//   j ≥ 4:  sc = scales[j+4] & 15 | (scales[j−4] >> 6) << 4, mn = scales[j+4] >> 4 | (scales[j] >> 6) << 4

void unpack_scale_min(const uint8_t* s, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

void pack_scale_min(const int* sc, const int* mn, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = uint8_t((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
}

// Fits one 256-value super-block with codes 0..top: fills d, dmin, the 6-bit sc/mn and q[256].
// Offsets first: mn[j]·dmin ≥ −min(sub-block, 0); then each scale d·sc[j] ≥ (max + offset)/top.
// Both roundings go outwards, so every (x + offset)/scale lies in [0, top].
void fit_k_super_block(const float* x, int top, uint16_t* d16, uint16_t* dmin16, int* sc, int* mn, int* q) {
  float offset_needed[8], max_of[8], max_offset = 0;
  for (int j = 0; j < 8; ++j) {
    float lo = 0, hi = x[32 * j];
    for (int l = 0; l < 32; ++l) lo = std::min(lo, x[32 * j + l]), hi = std::max(hi, x[32 * j + l]);
    offset_needed[j] = -lo;
    max_of[j] = hi;
    max_offset = std::max(max_offset, -lo);
  }
  *dmin16 = f16_at_least(max_offset / 63.0f);
  const float dmin = h2f(*dmin16);
  float scale_needed[8], max_scale = 0;
  for (int j = 0; j < 8; ++j) {
    mn[j] = dmin ? std::min(63, int(std::ceil(offset_needed[j] / dmin))) : 0;
    scale_needed[j] = std::max(0.0f, (max_of[j] + dmin * float(mn[j])) / float(top));
    max_scale = std::max(max_scale, scale_needed[j]);
  }
  *d16 = f16_at_least(max_scale / 63.0f);
  const float d = h2f(*d16);
  for (int j = 0; j < 8; ++j) {
    sc[j] = d ? std::min(63, int(std::ceil(scale_needed[j] / d))) : 0;
    const float s = d * float(sc[j]), off = dmin * float(mn[j]), is = s ? 1.0f / s : 0.0f;
    for (int l = 0; l < 32; ++l) q[32 * j + l] = round_clamp((x[32 * j + l] + off) * is, 0, top);
  }
}

void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int j = 0; j < 8; ++j) {  // sub-block j: chunk j/2, low nibbles if j even
      int sc, mn;
      unpack_scale_min(b[i].scales, j, &sc, &mn);
      const float s = d * float(sc), off = dmin * float(mn);
      const uint8_t* qs = b[i].qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int q = (j % 2 == 0) ? (qs[l] & 0xf) : (qs[l] >> 4);
        y[i * kQK_K + 32 * j + l] = s * float(q) - off;
      }
    }
  }
}

void quantize_q4_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    int sc[8], mn[8], q[kQK_K];
    fit_k_super_block(x, 15, &b[i].d, &b[i].dmin, sc, mn, q);
    pack_scale_min(sc, mn, b[i].scales);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
  }
}

void dequantize_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int j = 0; j < 8; ++j) {  // as Q4_K, plus bit j of qh[l] as the 5th bit
      int sc, mn;
      unpack_scale_min(b[i].scales, j, &sc, &mn);
      const float s = d * float(sc), off = dmin * float(mn);
      const uint8_t* qs = b[i].qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        const int q = ((j % 2 == 0) ? (qs[l] & 0xf) : (qs[l] >> 4)) | (((b[i].qh[l] >> j) & 1) << 4);
        y[i * kQK_K + 32 * j + l] = s * float(q) - off;
      }
    }
  }
}

void quantize_q5_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    int sc[8], mn[8], q[kQK_K];
    fit_k_super_block(x, 31, &b[i].d, &b[i].dmin, sc, mn, q);
    pack_scale_min(sc, mn, b[i].scales);
    std::memset(b[i].qh, 0, sizeof b[i].qh);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = q[64 * c + l], hi = q[64 * c + 32 + l];
        b[i].qs[32 * c + l] = uint8_t((lo & 0xf) | ((hi & 0xf) << 4));
        b[i].qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
      }
  }
}

// ---------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16, x = d·sc[j]·(q − 32), sc int8, q 6-bit. Two halves of 128 values; half h
// uses ql[64h .. 64h+64), qh[32h .. 32h+32); within a half, value v = 32·r + l (r = 0..3, l < 32) has
//   low 4 bits: ql[64h + l + 32·(r % 2)], low nibble if r < 2 else high nibble
//   high 2 bits: bits 2r, 2r+1 of qh[32h + l]

int q6_code(const BlockQ6_K& b, int v) {
  const int h = v / 128, r = (v % 128) / 32, l = v % 32;
  const uint8_t lo = b.ql[64 * h + l + 32 * (r % 2)];
  return ((r < 2) ? (lo & 0xf) : (lo >> 4)) | (((b.qh[32 * h + l] >> (2 * r)) & 3) << 4);
}

void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d);
    for (int v = 0; v < kQK_K; ++v) y[i * kQK_K + v] = d * float(b[i].scales[v / 16]) * float(q6_code(b[i], v) - 32);
  }
}

// Symmetric per sub-block: scale d·sc[j] ≥ max|x| / 31 (outwards), so codes stay in [−31, 31].
void quantize_q6_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float needed[16], max_needed = 0;
    for (int j = 0; j < 16; ++j) {
      float amax = 0;
      for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * j + l]));
      needed[j] = amax / 31.0f;
      max_needed = std::max(max_needed, needed[j]);
    }
    b[i].d = f16_at_least(max_needed / 127.0f);
    const float d = h2f(b[i].d);
    std::memset(b[i].ql, 0, sizeof b[i].ql);
    std::memset(b[i].qh, 0, sizeof b[i].qh);
    for (int j = 0; j < 16; ++j) {
      const int sc = d ? std::min(127, int(std::ceil(needed[j] / d))) : 0;
      b[i].scales[j] = int8_t(sc);
      const float s = d * float(sc), is = s ? 1.0f / s : 0.0f;
      for (int l = 0; l < 16; ++l) {
        const int v = 16 * j + l, q = round_clamp(x[v] * is, -32, 31) + 32;
        const int h = v / 128, r = (v % 128) / 32, k = v % 32;
        uint8_t& lo = b[i].ql[64 * h + k + 32 * (r % 2)];
        lo = uint8_t(lo | ((r < 2) ? (q & 0xf) : ((q & 0xf) << 4)));
        b[i].qh[32 * h + k] = uint8_t(b[i].qh[32 * h + k] | ((q >> 4) << (2 * r)));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Plain floats, for the same table.

void dequantize_f32(const void* src, float* y, int64_t n) { std::memcpy(y, src, size_t(n) * 4); }
void quantize_f32(const float* x, void* dst, int64_t n) { std::memcpy(dst, x, size_t(n) * 4); }
void dequantize_f16(const void* src, float* y, int64_t n) {
  const auto* p = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = h2f(p[i]);
}
void quantize_f16(const float* x, void* dst, int64_t n) {
  auto* p = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) p[i] = f32_to_f16(x[i]);
}
void dequantize_bf16(const void* src, float* y, int64_t n) {
  const auto* p = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(p[i]);
}
void quantize_bf16(const float* x, void* dst, int64_t n) {
  auto* p = static_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) p[i] = f32_to_bf16(x[i]);
}

// ---------------------------------------------------------------------------------------------
// Integer forms (DecodeInts): value = scale·q + offset per sub-block, in the same float operations
// as the decoders above, so scale·q + offset equals the dequantized value exactly.

void ints_q8_0(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    std::memcpy(q + i * kQK, b[i].qs, kQK);
    scale[i] = h2f(b[i].d), offset[i] = 0;
  }
}

void ints_q4_0(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    for (int j = 0; j < kQK; ++j) q[i * kQK + j] = int8_t(low_nibble_of(b[i].qs, j) - 8);
    scale[i] = h2f(b[i].d), offset[i] = 0;
  }
}

void ints_q4_1(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    for (int j = 0; j < kQK; ++j) q[i * kQK + j] = int8_t(low_nibble_of(b[i].qs, j));
    scale[i] = h2f(b[i].d), offset[i] = h2f(b[i].m);
  }
}

void ints_q5_0(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    for (int j = 0; j < kQK; ++j) q[i * kQK + j] = int8_t((low_nibble_of(b[i].qs, j) | high_bit_of(b[i].qh, j) << 4) - 16);
    scale[i] = h2f(b[i].d), offset[i] = 0;
  }
}

void ints_q5_1(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i) {
    for (int j = 0; j < kQK; ++j) q[i * kQK + j] = int8_t(low_nibble_of(b[i].qs, j) | high_bit_of(b[i].qh, j) << 4);
    scale[i] = h2f(b[i].d), offset[i] = h2f(b[i].m);
  }
}

// Q4_K / Q5_K: sub-block j of 32 has scale d·sc[j] and offset −dmin·mn[j].
template <bool kFifthBit, typename Block>
void ints_qx_k(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      unpack_scale_min(b[i].scales, j, &sc, &mn);
      scale[8 * i + j] = d * float(sc), offset[8 * i + j] = -(dmin * float(mn));
      const uint8_t* qs = b[i].qs + 32 * (j / 2);
      for (int l = 0; l < 32; ++l) {
        int v = (j % 2 == 0) ? (qs[l] & 0xf) : (qs[l] >> 4);
        if constexpr (kFifthBit) v |= ((b[i].qh[l] >> j) & 1) << 4;
        q[i * kQK_K + 32 * j + l] = int8_t(v);
      }
    }
  }
}

// Q6_K: sub-block j of 16 has scale d·sc[j]; codes q − 32.
void ints_q6_k(const void* src, int64_t n, int8_t* q, float* scale, float* offset) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = h2f(b[i].d);
    for (int j = 0; j < 16; ++j) scale[16 * i + j] = d * float(b[i].scales[j]), offset[16 * i + j] = 0;
    for (int v = 0; v < kQK_K; ++v) q[i * kQK_K + v] = int8_t(q6_code(b[i], v) - 32);
  }
}

// ggml_type ids (ggml.h): F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, Q4_K 12, Q5_K 13,
// Q6_K 14, BF16 30.
const TypeTraits kTypes[] = {
    {DType::F32, "F32", 0, 1, 4, dequantize_f32, quantize_f32, 0, nullptr},
    {DType::F16, "F16", 1, 1, 2, dequantize_f16, quantize_f16, 0, nullptr},
    {DType::BF16, "BF16", 30, 1, 2, dequantize_bf16, quantize_bf16, 0, nullptr},
    {DType::Q8_0, "Q8_0", 8, kQK, sizeof(BlockQ8_0), dequantize_q8_0, quantize_q8_0, kQK, ints_q8_0},
    {DType::Q4_0, "Q4_0", 2, kQK, sizeof(BlockQ4_0), dequantize_q4_0, quantize_q4_0, kQK, ints_q4_0},
    {DType::Q4_1, "Q4_1", 3, kQK, sizeof(BlockQ4_1), dequantize_q4_1, quantize_q4_1, kQK, ints_q4_1},
    {DType::Q5_0, "Q5_0", 6, kQK, sizeof(BlockQ5_0), dequantize_q5_0, quantize_q5_0, kQK, ints_q5_0},
    {DType::Q5_1, "Q5_1", 7, kQK, sizeof(BlockQ5_1), dequantize_q5_1, quantize_q5_1, kQK, ints_q5_1},
    {DType::Q4_K, "Q4_K", 12, kQK_K, sizeof(BlockQ4_K), dequantize_q4_k, quantize_q4_k, kQK, ints_qx_k<false, BlockQ4_K>},
    {DType::Q5_K, "Q5_K", 13, kQK_K, sizeof(BlockQ5_K), dequantize_q5_k, quantize_q5_k, kQK, ints_qx_k<true, BlockQ5_K>},
    {DType::Q6_K, "Q6_K", 14, kQK_K, sizeof(BlockQ6_K), dequantize_q6_k, quantize_q6_k, 16, ints_q6_k},
};

}  // namespace

const TypeTraits* traits(DType t) {
  for (const auto& e : kTypes)
    if (e.dtype == t) return &e;
  return nullptr;
}

const TypeTraits* traits_for_ggml_type(uint32_t ggml_type) {
  for (const auto& e : kTypes)
    if (e.ggml_type == ggml_type) return &e;
  return nullptr;
}

const TypeTraits* traits_for_name(const char* name) {
  std::string upper(name);
  for (char& c : upper) c = char(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& e : kTypes)
    if (upper == e.name) return &e;
  return nullptr;
}

void dequantize_range(DType t, const void* data, int64_t begin, int64_t n, float* dst) {
  const TypeTraits* tt = traits(t);
  if (!tt) throw Error(std::string("dequantize: no decoder for dtype ") + dtype_name(t));
  if (begin % tt->block_size || n % tt->block_size)
    throw Error(std::string("dequantize: values [") + std::to_string(begin) + ", " + std::to_string(begin + n) +
                ") of a " + tt->name + " tensor do not start and end on " + std::to_string(tt->block_size) +
                "-value block boundaries");
  tt->dequantize(static_cast<const char*>(data) + size_t(begin / tt->block_size) * tt->block_bytes, dst, n);
}

}  // namespace chroma::quant

// linear in int8 arithmetic (Compute::Int8) for block-quantized weights (Q8_0, Q4_x, Q5_x, K-quants),
// as llama.cpp's q8_0 × q8_0 dot product does for LLMs:
//
//   x is quantized per row and 32-value block: d = max|x| / 127, qx = round(x / d) ∈ [−127, 127];
//   each weight sub-block (32 values, Q6_K 16) is value = s·qw + o (quant::DecodeInts), so
//   y[m, n] = Σ_sub-blocks  float(Σ qx·qw) · (s·d)  +  o · (d·Σ qx)          (+ bias)
//
// The inner sums are exact integers: AVX-512 VNNI vpdpbusd (u8 × s8, so x is stored + 128 and
// 128·Σ qw is subtracted) or AVX2 vpmaddubsw + vpmaddwd (|w| × x·sign(w), no saturation since
// |w| ≤ 128 and |qx| ≤ 127). Both kernels then do the same float operations in the same order, so
// their results are bit-identical; the tests check that, and each against exact math.
//
// oneDNN 2.6's int8 matmul takes one scale per output column, not one per 32-value block, so these
// kernels are our own. Weights are repacked per call, a panel of rows at a time on each thread
// (as linear.cpp widens them): 16 rows side by side, 4 consecutive codes of a row in each 32-bit
// lane, so one broadcast of 4 x codes multiplies 16 rows at once.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cpu/kernels.h"
#include "tensor/quant.h"

namespace chroma::cpu {
namespace {

constexpr int kXBlock = 32;       // x values per scale
constexpr int kLanes = 16;        // weight rows per group, side by side
constexpr int64_t kPanelRows = 256;  // weight rows per task: 16 groups
constexpr int64_t kChunkValues = 512;  // values of K per pass over a panel: 256 × 512 codes stay in L2
constexpr int64_t kMinChunkRows = 32;

enum class Kernel { None, Avx2, Avx512Vnni };

Kernel detect_kernel() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool vnni = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vnni");
  // CHROMA_INT8_KERNEL=avx2 caps the choice (tests run the AVX2 kernel on AVX-512 machines).
  const char* cap = std::getenv("CHROMA_INT8_KERNEL");
  const std::string want = cap ? cap : "";
  if (want == "none") return Kernel::None;
  if (want == "avx2") return avx2 ? Kernel::Avx2 : Kernel::None;
  return vnni ? Kernel::Avx512Vnni : avx2 ? Kernel::Avx2 : Kernel::None;
}

Kernel kernel() {
  static const Kernel k = detect_kernel();
  return k;
}

bool has_offsets(DType t) { return t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K; }

// ---------------------------------------------------------------------------------------------
// x [M, K] (the inputs side by side) as codes per 32-value block.
struct QuantizedRows {
  std::vector<int8_t> q;   // [M, K]; for VNNI the byte holds qx + 128 (read as unsigned)
  std::vector<float> d;    // [M, K / 32] scales
  std::vector<float> sum;  // [M, K / 32] d · Σ qx, for weights with offsets
};

void quantize_rows(std::span<const Tensor* const> xs, int64_t M, int64_t K, bool offset_128, QuantizedRows& out) {
  const int64_t blocks = K / kXBlock;
  out.q.resize(size_t(M * K));
  out.d.resize(size_t(M * blocks));
  out.sum.resize(size_t(M * blocks));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      int64_t k0 = 0;
      for (const Tensor* x : xs) {
        const int64_t Ki = x->dim(-1);
        std::memcpy(row.data() + k0, x->ptr() + m * Ki, size_t(Ki) * 4);
        k0 += Ki;
      }
      for (int64_t b = 0; b < blocks; ++b) {
        const float* v = row.data() + b * kXBlock;
        float amax = 0;
        bool finite = true;
        for (int i = 0; i < kXBlock; ++i) amax = std::max(amax, std::fabs(v[i])), finite &= std::isfinite(v[i]);
        // inf or NaN in x: d = NaN carries it into y, as it would poison the float32 product
        const float d = finite ? amax / 127.0f : NAN, id = d > 0 ? 1.0f / d : 0.0f;
        int8_t* q = out.q.data() + m * K + b * kXBlock;
        int total = 0;
        for (int i = 0; i < kXBlock; ++i) {
          const int c = finite ? std::clamp(int(std::nearbyint(v[i] * id)), -127, 127) : 0;
          total += c;
          q[i] = int8_t(offset_128 ? c ^ 0x80 : c);  // c ^ 0x80 is the byte of c + 128 as unsigned
        }
        out.d[size_t(m * blocks + b)] = d;
        out.sum[size_t(m * blocks + b)] = d * float(total);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A panel of weight rows in the kernels' layout: for each group of 16 rows and each sub-block of
// SUB values, one record: codes [SUB/4][16 lanes][4], then scale[16], offset[16] (floats) and
// 128·Σ codes[16] (int32, VNNI's correction). Rows past the weight's end are zero.
struct Panel {
  int sub = 0;               // values per sub-block
  int64_t sub_blocks = 0;    // K / sub
  int64_t record_bytes = 0;  // sub·16 + 3·64
  int64_t groups = 0;
  std::vector<uint8_t> bytes;

  const uint8_t* record(int64_t g, int64_t s) const { return bytes.data() + (g * sub_blocks + s) * record_bytes; }
};

void repack(const TensorView& w, const quant::TypeTraits& tt, int64_t n0, int64_t rows, Panel& p) {
  const int64_t K = w.dim(1);
  p.sub = tt.int_sub_block;
  p.sub_blocks = K / p.sub;
  p.record_bytes = int64_t(p.sub) * kLanes + 3 * 4 * kLanes;
  p.groups = (rows + kLanes - 1) / kLanes;
  p.bytes.resize(size_t(p.groups * p.sub_blocks * p.record_bytes));
  if (rows % kLanes)  // the last group's unused lanes: zero codes, scales and corrections
    std::memset(p.bytes.data() + (p.groups - 1) * p.sub_blocks * p.record_bytes, 0,
                size_t(p.sub_blocks * p.record_bytes));
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> scale, offset;
  q.resize(size_t(K));
  scale.resize(size_t(p.sub_blocks));
  offset.resize(size_t(p.sub_blocks));
  const size_t row_bytes = dtype_row_bytes(w.dtype, K);
  for (int64_t r = 0; r < rows; ++r) {
    tt.decode_ints(static_cast<const uint8_t*>(w.data) + size_t(n0 + r) * row_bytes, K, q.data(), scale.data(),
                   offset.data());
    const int64_t g = r / kLanes, lane = r % kLanes;
    for (int64_t s = 0; s < p.sub_blocks; ++s) {
      uint8_t* rec = p.bytes.data() + (g * p.sub_blocks + s) * p.record_bytes;
      const int8_t* src = q.data() + s * p.sub;
      int total = 0;
      for (int j = 0; j < p.sub / 4; ++j) {
        std::memcpy(rec + j * 64 + lane * 4, src + 4 * j, 4);
        total += src[4 * j] + src[4 * j + 1] + src[4 * j + 2] + src[4 * j + 3];
      }
      float* meta = reinterpret_cast<float*>(rec + p.sub * kLanes);
      meta[lane] = scale[size_t(s)];
      meta[kLanes + lane] = offset[size_t(s)];
      const int32_t correction = 128 * total;
      std::memcpy(meta + 2 * kLanes + lane, &correction, 4);
    }
  }
}

// One tile: rows [0, MR) of x against groups of the panel, for sub-blocks [s0, s1), accumulating into
// y (first: starting from zero). `valid` is how many of the last group's 16 columns exist.
struct Tile {
  const int8_t* xq;  // x codes of the tile's first row
  const float* xd;   // its block scales
  const float* xs;   // its d·Σ qx
  int64_t ldx, ldd;  // row strides of xq (K) and of xd / xs (K / 32)
  const Panel* panel;
  int64_t g0, s0, s1;
  float* y;  // y[0, column of group g0]
  int64_t ldy;
  int valid;
  bool first;
};

#define CHROMA_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define CHROMA_AVX2 __attribute__((target("avx2,fma")))

template <int MR, int NV, bool OFF>
CHROMA_VNNI void tile_vnni(const Tile& t) {
  const Panel& p = *t.panel;
  const int sub = p.sub, quads = sub / 4;
  __mmask16 mask[NV];  // the last group's columns that exist
  for (int v = 0; v < NV; ++v) mask[v] = v == NV - 1 ? __mmask16((1u << t.valid) - 1) : __mmask16(0xffff);
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = t.first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], t.y + r * t.ldy + v * kLanes);
  for (int64_t s = t.s0; s < t.s1; ++s) {
    const uint8_t* rec[NV];
    for (int v = 0; v < NV; ++v) rec[v] = p.record(t.g0 + v, s);
    __m512i dot[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) dot[r][v] = _mm512_setzero_si512();
    const int8_t* xq = t.xq + s * sub;
    for (int j = 0; j < quads; ++j) {
      __m512i wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(rec[v] + 64 * j);
      for (int r = 0; r < MR; ++r) {
        int32_t four;
        std::memcpy(&four, xq + r * t.ldx + 4 * j, 4);
        const __m512i xb = _mm512_set1_epi32(four);
        for (int v = 0; v < NV; ++v) dot[r][v] = _mm512_dpbusd_epi32(dot[r][v], xb, wv[v]);
      }
    }
    const int64_t xb = s * sub / kXBlock;
    for (int v = 0; v < NV; ++v) {
      const float* meta = reinterpret_cast<const float*>(rec[v] + sub * kLanes);
      const __m512 scale = _mm512_loadu_ps(meta);
      const __m512i correction = _mm512_loadu_si512(meta + 2 * kLanes);
      for (int r = 0; r < MR; ++r) {
        // maskz: the unmasked form trips GCC 12's -Wmaybe-uninitialized inside its own header
        const __m512 f = _mm512_maskz_cvtepi32_ps(0xffff, _mm512_sub_epi32(dot[r][v], correction));
        acc[r][v] = _mm512_fmadd_ps(f, _mm512_mul_ps(scale, _mm512_set1_ps(t.xd[r * t.ldd + xb])), acc[r][v]);
        if constexpr (OFF)
          acc[r][v] = _mm512_fmadd_ps(_mm512_loadu_ps(meta + kLanes), _mm512_set1_ps(t.xs[r * t.ldd + xb]), acc[r][v]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(t.y + r * t.ldy + v * kLanes, mask[v], acc[r][v]);
}

// One 16-row group as two 8-lane halves.
template <int MR, bool OFF>
CHROMA_AVX2 void tile_avx2(const Tile& t) {
  const Panel& p = *t.panel;
  const int sub = p.sub, quads = sub / 4;
  alignas(32) float buf[MR][kLanes];
  __m256 acc[MR][2];
  for (int r = 0; r < MR; ++r) {
    std::memset(buf[r], 0, sizeof buf[r]);
    if (!t.first) std::memcpy(buf[r], t.y + r * t.ldy, size_t(t.valid) * 4);
    for (int h = 0; h < 2; ++h) acc[r][h] = _mm256_load_ps(buf[r] + 8 * h);
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t s = t.s0; s < t.s1; ++s) {
    const uint8_t* rec = p.record(t.g0, s);
    __m256i dot[MR][2];
    for (int r = 0; r < MR; ++r) dot[r][0] = dot[r][1] = _mm256_setzero_si256();
    const int8_t* xq = t.xq + s * sub;
    for (int j = 0; j < quads; ++j) {
      __m256i wv[2], aw[2];
      for (int h = 0; h < 2; ++h) {
        wv[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 64 * j + 32 * h));
        aw[h] = _mm256_abs_epi8(wv[h]);  // |−128| reads as 128 unsigned
      }
      for (int r = 0; r < MR; ++r) {
        int32_t four;
        std::memcpy(&four, xq + r * t.ldx + 4 * j, 4);
        const __m256i xb = _mm256_set1_epi32(four);
        for (int h = 0; h < 2; ++h) {
          const __m256i pairs = _mm256_maddubs_epi16(aw[h], _mm256_sign_epi8(xb, wv[h]));
          dot[r][h] = _mm256_add_epi32(dot[r][h], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
    const int64_t xb = s * sub / kXBlock;
    const float* meta = reinterpret_cast<const float*>(rec + sub * kLanes);
    for (int h = 0; h < 2; ++h) {
      const __m256 scale = _mm256_loadu_ps(meta + 8 * h);
      for (int r = 0; r < MR; ++r) {
        const __m256 f = _mm256_cvtepi32_ps(dot[r][h]);
        acc[r][h] = _mm256_fmadd_ps(f, _mm256_mul_ps(scale, _mm256_set1_ps(t.xd[r * t.ldd + xb])), acc[r][h]);
        if constexpr (OFF)
          acc[r][h] =
              _mm256_fmadd_ps(_mm256_loadu_ps(meta + kLanes + 8 * h), _mm256_set1_ps(t.xs[r * t.ldd + xb]), acc[r][h]);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int h = 0; h < 2; ++h) _mm256_store_ps(buf[r] + 8 * h, acc[r][h]);
    std::memcpy(t.y + r * t.ldy, buf[r], size_t(t.valid) * 4);
  }
}

using TileFn = void (*)(const Tile&);

template <bool OFF>
TileFn vnni_tile(int mr, int nv) {
  static const TileFn table[4][2] = {{tile_vnni<1, 1, OFF>, tile_vnni<1, 2, OFF>},
                                     {tile_vnni<2, 1, OFF>, tile_vnni<2, 2, OFF>},
                                     {tile_vnni<3, 1, OFF>, tile_vnni<3, 2, OFF>},
                                     {tile_vnni<4, 1, OFF>, tile_vnni<4, 2, OFF>}};
  return table[mr - 1][nv - 1];
}

template <bool OFF>
TileFn avx2_tile(int mr) {
  return mr == 1 ? tile_avx2<1, OFF> : tile_avx2<2, OFF>;
}

// y[m0 .. m0 + mr, n0 .. n0 + rows] for one panel.
void panel_product(const QuantizedRows& x, int64_t K, int64_t m0, int64_t mr, const Panel& p, int64_t rows, bool off,
                   float* y, int64_t ldy) {
  const Kernel k = kernel();
  const int max_mr = k == Kernel::Avx512Vnni ? 4 : 2, max_groups = k == Kernel::Avx512Vnni ? 2 : 1;
  const int64_t ldd = K / kXBlock;
  const int64_t chunk_subs = std::max<int64_t>(1, kChunkValues / p.sub);
  for (int64_t s0 = 0; s0 < p.sub_blocks; s0 += chunk_subs) {
    const int64_t s1 = std::min(p.sub_blocks, s0 + chunk_subs);
    for (int64_t m = m0; m < m0 + mr; m += max_mr) {
      const int tm = int(std::min<int64_t>(max_mr, m0 + mr - m));
      for (int64_t g = 0; g < p.groups; g += max_groups) {
        const int tg = int(std::min<int64_t>(max_groups, p.groups - g));
        const int64_t last_col = std::min(rows, (g + tg) * kLanes);
        Tile t{x.q.data() + m * K, x.d.data() + m * ldd, x.sum.data() + m * ldd, K, ldd, &p, g, s0, s1,
               y + m * ldy + g * kLanes, ldy, int(last_col - (g + tg - 1) * kLanes), s0 == 0};
        const TileFn fn = k == Kernel::Avx512Vnni ? (off ? vnni_tile<true>(tm, tg) : vnni_tile<false>(tm, tg))
                                                  : (off ? avx2_tile<true>(tm) : avx2_tile<false>(tm));
        fn(t);
      }
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

bool int8_dot_supported() { return kernel() != Kernel::None; }
bool int8_dot_fast() { return kernel() == Kernel::Avx512Vnni; }

const char* int8_kernel_name() {
  switch (kernel()) {
    case Kernel::Avx512Vnni: return "avx512-vnni";
    case Kernel::Avx2: return "avx2";
    case Kernel::None: break;
  }
  return "none";
}

bool takes_int8_compute(const TensorView& w) {
  const quant::TypeTraits* tt = quant::traits(w.dtype);
  return tt && tt->decode_ints && w.scale == 1.0f && !w.parts && w.shape.size() == 2 && w.dim(1) % kXBlock == 0;
}

void linear_int8(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b, Tensor& y) {
  if (kernel() == Kernel::None) throw Error("linear (int8 compute): this CPU has neither AVX2 nor AVX-512 VNNI");
  const quant::TypeTraits& tt = *quant::traits(w.dtype);
  const int64_t K = w.dim(1), N = w.dim(0), M = y.numel() / N;
  thread_local QuantizedRows reused;  // M × K codes are tens of MB at 1024²
  QuantizedRows& x = reused;          // the calling thread's, named so inside the parallel loop
  quantize_rows(xs, M, K, kernel() == Kernel::Avx512Vnni, x);
  const bool off = has_offsets(w.dtype);

  // Tasks as linear.cpp's: panels of weight rows, and blocks of x rows when panels are fewer than threads.
  const int64_t threads = omp_get_max_threads();
  const int64_t panel = std::min(kPanelRows, ceil_div(ceil_div(N, threads), kLanes) * kLanes);
  const int64_t n_panels = ceil_div(N, panel);
  const int64_t m_chunks =
      n_panels >= threads ? 1 : std::clamp<int64_t>(ceil_div(threads, n_panels), 1, ceil_div(M, kMinChunkRows));
  const int64_t chunk = ceil_div(M, m_chunks);
  const Tensor bias = b ? widen(b) : Tensor();
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t p = 0; p < n_panels; ++p)
    for (int64_t c = 0; c < m_chunks; ++c) {
      const int64_t n0 = p * panel, rows = std::min(panel, N - n0);
      const int64_t m0 = c * chunk, mr = std::min(chunk, M - m0);
      if (mr <= 0) continue;
      thread_local Panel packed;
      repack(w, tt, n0, rows, packed);
      float* yp = y.ptr() + n0;
      panel_product(x, K, m0, mr, packed, rows, off, yp, N);
      if (b)
        for (int64_t m = m0; m < m0 + mr; ++m)
          for (int64_t n = 0; n < rows; ++n) yp[m * N + n] += bias.ptr()[n0 + n];
    }
}

}  // namespace chroma::cpu

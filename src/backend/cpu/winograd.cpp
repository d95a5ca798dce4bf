// 3×3 convolution, stride 1, zero padding 1, by Winograd's minimal filtering algorithm
// F(m×m, 3×3) — Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", §4.
//
// An m×m output tile comes from an α×α input tile d (α = m + 2; neighbouring tiles overlap by 2):
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A          g: the 3×3 kernel, ⊙: elementwise over α×α
// Summed over input channels c, the elementwise product becomes α² independent matrix products,
// one per position ξ = (k, l) of the α×α transformed tile:
//   U_ξ[o, c] = (G g[o, c] Gᵀ)_ξ      V_ξ[c, t] = (Bᵀ d[c, t] B)_ξ      M_ξ[o, t] = Σ_c U_ξ[o, c]·V_ξ[c, t]
//   y tile (o, t) = Aᵀ M[o, t] A       (t: tile index)
// Multiplies per output value: 9 for the direct conv, α²/m² in the products: 4 for F(2×2) and
// 2.25 for F(4×4). The transforms are O(α²) additions per tile and channel, small beside the
// products for the VAE's 128–512 channels.
//
// Layout: the image is cut into tiles (row-major tile index t), and threads take bands of
// consecutive tiles, each with its own V [α², C, band] and M [α², O, band] (bounded scratch, see
// the band constants below) and the α² products as single-threaded sgemm calls. Inside a band,
// rows of tiles are handled as "segments" (one tile row, a range of tile columns): the transforms
// run along whole segments, so every inner loop is a contiguous loop over tiles or columns.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

// Transform matrices by the Toom-Cook construction of Lavin & Gray 2016 §4 (their `wincnn` script):
// with interpolation points p_j (and ∞), Aᵀ[i][j] = p_jⁱ, G[j][k] = p_jᵏ / Π_{l≠j}(p_j − p_l), and
// Bᵀ from the Lagrange polynomials of the points.
// F(2×2, 3×3): points 0, 1, −1 — the matrices printed in Lavin & Gray §4.1.
struct F2x2 {
  static constexpr int m = 2;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
// F(4×4, 3×3): points 0, 1, −1, 1/2, −2 rather than Lavin & Gray's 0, ±1, ±2 (§4.2): the
// transforms are better balanced, and the float32 error is 3× lower (simulated at 256 channels:
// 3.2e-6 vs 9.3e-6 of max |y|; the pair 1/2, −2 is the one Barabasz et al. 2020, "Error analysis
// and improving the accuracy of Winograd convolution for deep neural networks", recommend), for
// four more additions per row of Bᵀ d.
struct F4x4 {
  static constexpr int m = 4;
  static constexpr float BT[6][6] = {{1, -1.5f, -2, 1.5f, 1, 0}, {0, -1, 0.5f, 2.5f, 1, 0},
                                     {0, 1, -2.5f, 0.5f, 1, 0},  {0, -2, -1, 2, 1, 0},
                                     {0, 0.5f, -1, -0.5f, 1, 0}, {0, 1, -1.5f, -2, 1.5f, 1}};
  static constexpr float G[6][3] = {{1, 0, 0},
                                    {1.0f / 3, 1.0f / 3, 1.0f / 3},
                                    {-1.0f / 3, 1.0f / 3, -1.0f / 3},
                                    {-16.0f / 15, -8.0f / 15, -4.0f / 15},
                                    {1.0f / 15, -2.0f / 15, 4.0f / 15},
                                    {0, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 0.5f, -2, 0}, {0, 1, 1, 0.25f, 4, 0}, {0, 1, -1, 0.125f, -8, 1}};
};

// Tiles per band, i.e. the column count N of the α² products [O, C]·[C, N]. Two regimes (measured
// with OpenBLAS 0.3.21 on AVX-512):
//  - OpenBLAS multiplies products with O·N·C ≤ 10⁶ in its "small matrix" kernels, which read the
//    operands in place. Where a band of ≥ kSmallMinTiles fits that (up to ~180 channels), bands
//    are sized for it, with V + M within kSmallScratchBytes so they stay in L2 (128 channels: 61
//    tiles, 2.2 MB).
//  - Larger products pack U_ξ (O·C values) on every call; bands of hundreds of tiles amortise that:
//    V + M of all threads together up to kScratchBytes, at least kMinTiles per band (2 threads,
//    256 channels: 455 tiles, 32 MB each).
constexpr double kSmallGemmMNK = 1e6;
constexpr int64_t kSmallMinTiles = 32;
constexpr int64_t kSmallScratchBytes = 4 << 20;
constexpr int64_t kScratchBytes = 64 << 20;
constexpr int64_t kMinTiles = 64;

// ---- constant-matrix application --------------------------------------------------------------
// dst[r][t] = Σ_i A[r][i]·src[i][t] for every row r of a constant matrix A and t ∈ [0, n): the
// loop over t vectorises, and the coefficients are compile-time constants, so zero entries cost
// nothing and ±1 needs no multiply. always_inline: the loops must be compiled inside the
// target_clones kernels below, for their instruction sets.
template <const auto& A, int r, int... i>
[[gnu::always_inline]] inline void apply_row(float* __restrict dst, const float* const* src, int64_t n,
                                             std::integer_sequence<int, i...>) {
  const float* s[] = {src[i]...};
#pragma GCC ivdep  // dst never overlaps a source row: no run-time alias checks (rows are short)
  for (int64_t t = 0; t < n; ++t) {
    float acc = -0.0f;  // x + (−0) == x exactly, so the first addition folds away
    ((A[r][i] != 0.0f ? void(acc += A[r][i] * s[i][t]) : void()), ...);
    dst[t] = acc;
  }
}

template <const auto& A, int... r>
[[gnu::always_inline]] inline void apply_rows(float* const* dst, const float* const* src, int64_t n,
                                              std::integer_sequence<int, r...>) {
  constexpr int cols = std::extent_v<std::remove_cvref_t<decltype(A)>, 1>;
  (apply_row<A, r>(dst[r], src, n, std::make_integer_sequence<int, cols>{}), ...);
}

template <const auto& A>
[[gnu::always_inline]] inline void apply(float* const* dst, const float* const* src, int64_t n) {
  constexpr int rows = std::extent_v<std::remove_cvref_t<decltype(A)>, 0>;
  apply_rows<A>(dst, src, n, std::make_integer_sequence<int, rows>{});
}

// ---- tiles ----------------------------------------------------------------------------------------
// One row of tiles inside a band: tile row ty, tile columns [tx0, tx0 + n), stored at band columns
// [offset, offset + n) of V and M.
struct Segment {
  int64_t ty, tx0, n, offset;
};

std::vector<Segment> segments(int64_t t0, int64_t t1, int64_t tiles_w) {
  std::vector<Segment> s;
  for (int64_t t = t0; t < t1;) {
    const int64_t ty = t / tiles_w, tx0 = t % tiles_w, n = std::min(tiles_w - tx0, t1 - t);
    s.push_back({ty, tx0, n, t - t0});
    t += n;
  }
  return s;
}

// ---- the three transforms ---------------------------------------------------------------------
// U[ξ][o][c] = (G g Gᵀ)_ξ for g = w[o, c] (3×3), for o ∈ [o0, o1). Vectorised over c.
//   taps[i][j][c] = w[o, c, i, j];  half[k][j][c] = Σ_i G[k][i]·taps[i][j][c];
//   U[(k, l)][o][c] = Σ_j G[l][j]·half[k][j][c]
template <class F>
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void filter_transform(const float* w, int64_t O, int64_t C, int64_t o0, int64_t o1, float* U) {
  constexpr int a = F::m + 2;
  std::vector<float> taps(size_t(9 * C)), half(size_t(a * 3 * C));
  for (int64_t o = o0; o < o1; ++o) {
    const float* wo = w + o * C * 9;
    for (int64_t c = 0; c < C; ++c)
      for (int ij = 0; ij < 9; ++ij) taps[size_t(ij * C + c)] = wo[c * 9 + ij];
    for (int j = 0; j < 3; ++j) {
      const float* src[3];
      float* dst[a];
      for (int i = 0; i < 3; ++i) src[i] = taps.data() + (i * 3 + j) * C;
      for (int k = 0; k < a; ++k) dst[k] = half.data() + (k * 3 + j) * C;
      apply<F::G>(dst, src, C);
    }
    for (int k = 0; k < a; ++k) {
      const float* src[3];
      float* dst[a];
      for (int j = 0; j < 3; ++j) src[j] = half.data() + (k * 3 + j) * C;
      for (int l = 0; l < a; ++l) dst[l] = U + ((k * a + l) * O + o) * C;
      apply<F::G>(dst, src, C);
    }
  }
}

// dst[q][u] = src[m·u + q] for u ∈ [0, count), q ∈ [0, m), zero where col0 + m·u + q is outside [0, W):
// one input row split by column phase (the loop over the inside compiles to vector permutes).
template <int m>
[[gnu::always_inline]] inline void split_phases(const float* src, int64_t col0, int64_t W, int64_t count,
                                                float* dst) {
  // Tiles u ∈ [lo, hi) read only inside the row.
  const int64_t lo = std::min(count, col0 >= 0 ? 0 : (m - 1 - col0) / m);
  const int64_t hi = std::max(lo, std::min(count, W - col0 >= m ? (W - col0 - m) / m + 1 : 0));
  auto edge = [&](int64_t u) {
    for (int q = 0; q < m; ++q) {
      const int64_t col = col0 + m * u + q;
      dst[q * count + u] = col >= 0 && col < W ? src[m * u + q] : 0.0f;
    }
  };
  for (int64_t u = 0; u < lo; ++u) edge(u);
  for (int64_t u = lo; u < hi; ++u)
    for (int q = 0; q < m; ++q) dst[q * count + u] = src[m * u + q];
  for (int64_t u = hi; u < count; ++u) edge(u);
}

// V[ξ][c][s] = (Bᵀ d B)_ξ for the band's tiles s, with d the α×α input tile of channel c at input
// rows m·ty − 1 + [0, α) and columns m·tx − 1 + [0, α); outside the image d is zero (padding 1,
// and the partial tiles at the right and bottom edges).
// Per segment and channel, with the tile row's α input rows split by column phase
// (xp[i][q][u] = row_i[m·(tx0 + u) + q − 1], so tile u's column j is xp[i][j mod m][u + j div m]):
//   hp[k] = Σ_i Bᵀ[k][i]·xp[i]                     (along H, all columns at once)
//   V[(k, l)][c][s] = Σ_j Bᵀ[l][j]·hp[k][j mod m][u + j div m]   (along W, all tiles at once)
template <class F>
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void input_transform(const float* x, int64_t C, int64_t H, int64_t W, const std::vector<Segment>& segs,
                     int64_t band, float* V, std::vector<float>& scratch) {
  constexpr int m = F::m, a = m + 2;
  int64_t max_n = 0;
  for (const Segment& s : segs) max_n = std::max(max_n, s.n);
  const int64_t len = m * (max_n + 1);  // one split row: columns m·tx0 − 1 + [0, m·(n + 1))
  scratch.resize(size_t((2 * a + 1) * len));
  float* zeros = scratch.data();  // [len]: rows above and below the image
  float* xp = zeros + len;        // [α][m][n + 1]
  float* hp = xp + a * len;       // [α][m][n + 1]
  std::fill_n(zeros, len, 0.0f);
  for (const Segment& s : segs) {
    const int64_t count = s.n + 1, seg_len = m * count, col0 = m * s.tx0 - 1;
    for (int64_t c = 0; c < C; ++c) {
      const float* rows[a];
      for (int i = 0; i < a; ++i) {
        const int64_t ih = m * s.ty - 1 + i;
        if (ih < 0 || ih >= H) {
          rows[i] = zeros;
        } else {
          split_phases<m>(x + (c * H + ih) * W + col0, col0, W, count, xp + i * seg_len);
          rows[i] = xp + i * seg_len;
        }
      }
      float* h[a];
      for (int k = 0; k < a; ++k) h[k] = hp + k * seg_len;
      apply<F::BT>(h, rows, seg_len);
      for (int k = 0; k < a; ++k) {
        const float* src[a];
        float* dst[a];
        for (int j = 0; j < a; ++j) src[j] = h[k] + (j % m) * count + j / m;
        for (int l = 0; l < a; ++l) dst[l] = V + ((k * a + l) * C + c) * band + s.offset;
        apply<F::BT>(dst, src, s.n);
      }
    }
  }
}

// y[o, m·ty + r, m·tx + q] = (Aᵀ M[o, t] A)[r][q] + bias[o], clipped at the right and bottom edges:
//   sw[k][q] = Σ_l Aᵀ[q][l]·M[(k, l)][o][s]      (along W, all tiles of a segment at once)
//   out[r][q] = Σ_k Aᵀ[r][k]·sw[k][q]           (along H)
template <class F>
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
void output_transform(const float* M, int64_t O, int64_t Ho, int64_t Wo, const float* bias,
                      const std::vector<Segment>& segs, int64_t band, float* y, std::vector<float>& scratch) {
  constexpr int m = F::m, a = m + 2;
  int64_t max_n = 0;
  for (const Segment& s : segs) max_n = std::max(max_n, s.n);
  scratch.resize(size_t((a * m + m * m) * max_n));
  float* sw = scratch.data();       // [α][m][n]
  float* out = sw + a * m * max_n;  // [m][m][n]
  for (int64_t o = 0; o < O; ++o) {
    const float b = bias ? bias[o] : 0.0f;
    for (const Segment& s : segs) {
      const int64_t n = s.n;
      for (int k = 0; k < a; ++k) {
        const float* src[a];
        float* dst[m];
        for (int l = 0; l < a; ++l) src[l] = M + ((k * a + l) * O + o) * band + s.offset;
        for (int q = 0; q < m; ++q) dst[q] = sw + (k * m + q) * n;
        apply<F::AT>(dst, src, n);
      }
      for (int q = 0; q < m; ++q) {
        const float* src[a];
        float* dst[m];
        for (int k = 0; k < a; ++k) src[k] = sw + (k * m + q) * n;
        for (int r = 0; r < m; ++r) dst[r] = out + (r * m + q) * n;
        apply<F::AT>(dst, src, n);
      }
      // Interleave the tile columns into the output rows; the last tile may be cut by the edge.
      const int64_t ow0 = m * s.tx0, full = std::min(n, (Wo - ow0) / m);
      for (int r = 0; r < m && m * s.ty + r < Ho; ++r) {
        const float* src = out + r * m * n;
        float* dst = y + (o * Ho + m * s.ty + r) * Wo + ow0;
        for (int64_t u = 0; u < full; ++u)
          for (int q = 0; q < m; ++q) dst[m * u + q] = src[q * n + u] + b;
        for (int64_t u = full; u < n; ++u)
          for (int q = 0; q < m && ow0 + m * u + q < Wo; ++q) dst[m * u + q] = src[q * n + u] + b;
      }
    }
  }
}

template <class F>
Tensor conv3x3(const Tensor& x, const Tensor& w, const float* bias) {
  constexpr int m = F::m, a = m + 2;
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2), O = w.dim(0);
  const int64_t tiles_w = (W + m - 1) / m, tiles = (H + m - 1) / m * tiles_w;
  const int64_t threads = omp_get_max_threads();
  Tensor y({O, H, W});

  // Scratch is allocated per call without initialisation (every value is written before it is
  // read) and freed on return. U [α², O, C] is 4× the widened kernel: 38 MB at 512 channels.
  const auto U = std::make_unique_for_overwrite<float[]>(size_t(a * a * O * C));
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    filter_transform<F>(w.ptr(), O, C, O * id / nt, O * (id + 1) / nt, U.get());
  }

  // Band size (see kSmallGemmMNK), capped so every thread gets a band, then evened out so the last
  // band is not a sliver.
  const int64_t tile_bytes = 4 * a * a * std::max<int64_t>(1, C + O);  // V + M per tile
  const int64_t small = std::min(int64_t(kSmallGemmMNK / double(std::max<int64_t>(1, O * C))),
                                 kSmallScratchBytes / tile_bytes);
  int64_t band = small >= kSmallMinTiles ? small : std::max(kMinTiles, kScratchBytes / threads / tile_bytes);
  band = std::clamp<int64_t>(band, 1, (tiles + threads - 1) / threads);
  const int64_t bands = (tiles + band - 1) / band;
  band = (tiles + bands - 1) / bands;

#pragma omp parallel
  {
    const auto V = std::make_unique_for_overwrite<float[]>(size_t(a * a * C * band));  // [α², C, band]
    const auto M = std::make_unique_for_overwrite<float[]>(size_t(a * a * O * band));  // [α², O, band]
    std::vector<float> rows;  // the transforms' row buffers
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < bands; ++b) {
      const int64_t t0 = b * band, n = std::min(band, tiles - t0);
      const std::vector<Segment> segs = segments(t0, t0 + n, tiles_w);
      input_transform<F>(x.ptr(), C, H, W, segs, n, V.get(), rows);
      for (int xi = 0; xi < a * a; ++xi)  // M_ξ [O, n] = U_ξ [O, C] · V_ξ [C, n]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(O), int(n), int(C), 1.0f, U.get() + xi * O * C,
                    int(C), V.get() + xi * C * n, int(n), 0.0f, M.get() + xi * O * n, int(n));
      output_transform<F>(M.get(), O, H, W, bias, segs, n, y.ptr(), rows);
    }
  }
  return y;
}

}  // namespace

Tensor conv3x3_winograd(const Tensor& x, const Tensor& w, const float* bias, int tile) {
  if (x.rank() != 3 || w.rank() != 4 || w.dim(1) != x.dim(0) || w.dim(2) != 3 || w.dim(3) != 3)
    throw Error("conv3x3_winograd: weight " + shape_str(w.shape) + " does not fit input " + shape_str(x.shape));
  if (tile == 2) return conv3x3<F2x2>(x, w, bias);
  if (tile == 4) return conv3x3<F4x4>(x, w, bias);
  throw Error("conv3x3_winograd: output tile " + std::to_string(tile) + " is not 2 or 4");
}

}  // namespace chroma::cpu

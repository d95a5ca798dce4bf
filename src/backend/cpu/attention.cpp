// Multi-head attention over packed sequences, flash style: a tile of queries meets the keys of its
// sequence one tile at a time, with a running row maximum and sum (online softmax, float32), so
// memory stays O(tile²) however long the sequence is.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

constexpr int64_t kQueryTile = 32;  // queries per task: enough tasks to balance, rows to reuse each key
constexpr int64_t kKeyTile = 128;   // keys per step: the score tile [32, 128] stays in L1

struct Task {
  int64_t begin, len;  // the sequence: rows [begin, begin + len)
  int64_t head;
  int64_t q0, q1;      // query rows of this tile, relative to the sequence
};

struct Sizes {
  int64_t C, D;  // row width H·D and head width D
};

// s[i, j] = scale · q_i · k_j (+ bias) for a tile of nq queries and nk keys of one head.
void scores(const float* q, const float* k, int64_t nq, int64_t nk, Sizes z, float scale, float* s) {
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t j = 0; j < nk; ++j) {
      const float* qi = q + i * z.C;
      const float* kj = k + j * z.C;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < z.D; ++d) dot += qi[d] * kj[d];
      s[i * kKeyTile + j] = dot * scale;
    }
}

// One task: queries [q0, q1) of one head of one sequence against all keys of that sequence.
void attend_tile(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* bias, int64_t L, Sizes z,
                 float scale, const Task& t, Tensor& out) {
  const int64_t nq = t.q1 - t.q0, D = z.D;
  std::vector<float> s(size_t(kQueryTile * kKeyTile)), acc(size_t(kQueryTile * D), 0.0f);
  std::vector<float> row_max(size_t(nq), -INFINITY), row_sum(size_t(nq), 0.0f);
  const float* qt = q.ptr() + (t.begin + t.q0) * z.C + t.head * D;
  for (int64_t k0 = 0; k0 < t.len; k0 += kKeyTile) {
    const int64_t nk = std::min(kKeyTile, t.len - k0);
    const float* kt = k.ptr() + (t.begin + k0) * z.C + t.head * D;
    const float* vt = v.ptr() + (t.begin + k0) * z.C + t.head * D;
    scores(qt, kt, nq, nk, z, scale, s.data());
    for (int64_t i = 0; i < nq; ++i) {
      float* si = s.data() + i * kKeyTile;
      if (bias) {  // bias is [H, L, L] for the single sequence
        const float* bi = bias->ptr() + (t.head * L + t.q0 + i) * L + k0;
        for (int64_t j = 0; j < nk; ++j) si[j] += bi[j];
      }
      // Online softmax: rescale what was accumulated under the old maximum.
      float m = row_max[size_t(i)];
      for (int64_t j = 0; j < nk; ++j) m = std::max(m, si[j]);
      if (m == -INFINITY) continue;  // every key so far masked out
      const float correction = std::exp(row_max[size_t(i)] - m);
      row_max[size_t(i)] = m;
      float sum = 0;
      for (int64_t j = 0; j < nk; ++j) {
        si[j] = std::exp(si[j] - m);
        sum += si[j];
      }
      row_sum[size_t(i)] = row_sum[size_t(i)] * correction + sum;
      float* ai = acc.data() + i * D;
      for (int64_t d = 0; d < D; ++d) ai[d] *= correction;
      for (int64_t j = 0; j < nk; ++j) {
        const float p = si[j];
        const float* vj = vt + j * z.C;
        for (int64_t d = 0; d < D; ++d) ai[d] += p * vj[d];
      }
    }
  }
  for (int64_t i = 0; i < nq; ++i) {
    const float inv = row_sum[size_t(i)] > 0 ? 1.0f / row_sum[size_t(i)] : 0.0f;
    float* o = out.ptr() + (t.begin + t.q0 + i) * z.C + t.head * D;
    for (int64_t d = 0; d < D; ++d) o[d] = acc[size_t(i * D + d)] * inv;
  }
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> seq_lens,
                 float scale, const Tensor* bias) {
  if (q.rank() != 2 || q.shape != k.shape || q.shape != v.shape)
    throw Error("attention: q, k, v must share one [L, H·D] shape, got " + shape_str(q.shape) + ", " +
                shape_str(k.shape) + ", " + shape_str(v.shape));
  const int64_t L = q.dim(0), C = q.dim(1);
  if (heads <= 0 || C % heads != 0)
    throw Error("attention: width " + std::to_string(C) + " cannot be split into " + std::to_string(heads) + " heads");
  int64_t total = 0;
  for (int64_t n : seq_lens) {
    if (n < 0) throw Error("attention: negative sequence length " + std::to_string(n));
    total += n;
  }
  if (total != L)
    throw Error("attention: sequence lengths sum to " + std::to_string(total) + " but q has " + std::to_string(L) +
                " rows");
  if (bias) {
    if (seq_lens.size() != 1)
      throw Error("attention: a bias needs a single sequence, got " + std::to_string(seq_lens.size()));
    if (bias->numel() != int64_t(heads) * L * L || bias->dim(-1) != L)
      throw Error("attention: bias " + shape_str(bias->shape) + " does not match [" + std::to_string(heads) + ", " +
                  std::to_string(L) + ", " + std::to_string(L) + "]");
  }
  const Sizes z{C, C / heads};

  std::vector<Task> tasks;
  int64_t begin = 0;
  for (int64_t n : seq_lens) {
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t q0 = 0; q0 < n; q0 += kQueryTile) tasks.push_back({begin, n, h, q0, std::min(n, q0 + kQueryTile)});
    begin += n;
  }
  Tensor out(q.shape);
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < tasks.size(); ++i) attend_tile(q, k, v, bias, L, z, scale, tasks[i], out);
  return out;
}

}  // namespace chroma::cpu

// The op vocabulary: compute ops forward to the active backend; data movement is done here.
#include "backend/ops.h"

#include <algorithm>

#include "backend/backend.h"

namespace chroma::ops {

Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b) { return active_backend().linear(x, w, b); }
Tensor layer_norm(const Tensor& x, float eps) { return active_backend().layer_norm(x, eps); }
Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps) {
  return active_backend().rms_norm(x, scale, eps);
}
Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  return active_backend().group_norm(x, groups, weight, bias, eps);
}
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  return active_backend().modulate(x, shift, scale);
}
void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) { active_backend().add_gated(x, gate, y); }
void add(Tensor& x, const Tensor& y) { active_backend().add(x, y); }
Tensor gelu_tanh(Tensor x) {
  active_backend().gelu_tanh(x);
  return x;
}
Tensor silu(Tensor x) {
  active_backend().silu(x);
  return x;
}
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> seq_lens,
                 float scale, const Tensor* bias) {
  return active_backend().attention(q, k, v, heads, seq_lens, scale, bias);
}
void rope(Tensor& x, int heads, const Tensor& rope_table) { active_backend().rope(x, heads, rope_table); }
Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, Padding pad) {
  return active_backend().conv2d(x, w, b, stride, pad);
}
Tensor upsample_nearest2x(const Tensor& x) { return active_backend().upsample_nearest2x(x); }

namespace {
void require_rank2(const char* op, const Tensor& x, const char* what) {
  if (x.rank() != 2) throw Error(std::string(op) + ": " + what + " must be 2-D, got " + shape_str(x.shape));
}
}  // namespace

Tensor transpose(const Tensor& x) {
  require_rank2("transpose", x, "input");
  const int64_t A = x.dim(0), B = x.dim(1);
  Tensor y({B, A});
  // Blocked so both sides stay in cache for large matrices.
  constexpr int64_t kBlock = 32;
  for (int64_t a0 = 0; a0 < A; a0 += kBlock)
    for (int64_t b0 = 0; b0 < B; b0 += kBlock)
      for (int64_t a = a0; a < std::min(A, a0 + kBlock); ++a)
        for (int64_t b = b0; b < std::min(B, b0 + kBlock); ++b) y.data[size_t(b * A + a)] = x.data[size_t(a * B + b)];
  return y;
}

Tensor concat_rows(const Tensor& a, const Tensor& b) {
  require_rank2("concat_rows", a, "first input");
  require_rank2("concat_rows", b, "second input");
  if (a.dim(1) != b.dim(1))
    throw Error("concat_rows: widths differ: " + shape_str(a.shape) + " vs " + shape_str(b.shape));
  Tensor y({a.dim(0) + b.dim(0), a.dim(1)});
  std::copy(a.data.begin(), a.data.end(), y.data.begin());
  std::copy(b.data.begin(), b.data.end(), y.data.begin() + a.numel());
  return y;
}

Tensor concat_cols(const Tensor& a, const Tensor& b) {
  require_rank2("concat_cols", a, "first input");
  require_rank2("concat_cols", b, "second input");
  if (a.dim(0) != b.dim(0))
    throw Error("concat_cols: row counts differ: " + shape_str(a.shape) + " vs " + shape_str(b.shape));
  const int64_t L = a.dim(0), Ca = a.dim(1), Cb = b.dim(1);
  Tensor y({L, Ca + Cb});
  for (int64_t i = 0; i < L; ++i) {
    std::copy_n(a.ptr() + i * Ca, Ca, y.ptr() + i * (Ca + Cb));
    std::copy_n(b.ptr() + i * Cb, Cb, y.ptr() + i * (Ca + Cb) + Ca);
  }
  return y;
}

Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end) {
  require_rank2("slice_cols", x, "input");
  const int64_t L = x.dim(0), C = x.dim(1);
  if (begin < 0 || end < begin || end > C)
    throw Error("slice_cols: columns [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of range for " +
                shape_str(x.shape));
  const int64_t W = end - begin;
  Tensor y({L, W});
  for (int64_t i = 0; i < L; ++i) std::copy_n(x.ptr() + i * C + begin, W, y.ptr() + i * W);
  return y;
}

}  // namespace chroma::ops

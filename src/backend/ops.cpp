// The op vocabulary: compute ops forward to the active backend; data movement is done here.
#include "backend/ops.h"

#include <algorithm>
#include <chrono>

#include "backend/backend.h"
#include "backend/op_profile.h"

namespace chroma::ops {

// ---- Profiling hook (op_profile.h) --------------------------------------------------------------
// Each op below opens an OpTimer; unless the benchmark enabled profiling it reads one flag, skips
// the clock and records nothing (the work estimates are a few multiplications).
namespace {
using profile::OpClass;

class OpTimer {
 public:
  OpTimer(OpClass c, const char* op) : class_(c), op_(op), on_(profile::enabled()) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (on_)
      profile::record(class_, op_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), flops,
                      bytes);
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;
  bool on() const { return on_; }
  double flops = 0, bytes = 0;

 private:
  OpClass class_;
  const char* op_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

// float32 bytes of `reads` + `writes` elements
double f32_bytes(int64_t reads, int64_t writes) { return 4.0 * double(reads + writes); }
}  // namespace
// -------------------------------------------------------------------------------------------------

// 2·M·N·r of the extra products
double extra_flops(std::span<const ExtraProduct> extra) {
  double f = 0;
  for (const ExtraProduct& e : extra) f += 2.0 * double(e.u->numel()) * double(e.v.dim(0));
  return f;
}

Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b, std::span<const ExtraProduct> extra) {
  OpTimer t(OpClass::Linear, "linear");
  if (t.on() && w.shape.size() == 2) t.flops = 2.0 * double(x.numel()) * double(w.dim(0)) + extra_flops(extra);  // 2·M·N·K
  return active_backend().linear(x, w, b, extra);
}
Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                     std::span<const ExtraProduct> extra) {
  OpTimer t(OpClass::Linear, "linear");
  if (t.on() && w.shape.size() == 2)
    t.flops = 2.0 * double(a.numel() + b.numel()) * double(w.dim(0)) + extra_flops(extra);  // 2·M·N·K
  return active_backend().linear_concat(a, b, w, bias, extra);
}
Tensor layer_norm(const Tensor& x, float eps) {
  OpTimer t(OpClass::Norm, "layer_norm");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().layer_norm(x, eps);
}
Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps) {
  OpTimer t(OpClass::Norm, "rms_norm");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().rms_norm(x, scale, eps);
}
Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  OpTimer t(OpClass::Norm, "group_norm");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().group_norm(x, groups, weight, bias, eps);
}
Tensor group_norm_silu(Tensor x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
  OpTimer t(OpClass::Norm, "group_norm_silu");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().group_norm_silu(x, groups, weight, bias, eps);
  return x;
}
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  OpTimer t(OpClass::Norm, "modulate");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().modulate(x, shift, scale);
}
Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps) {
  OpTimer t(OpClass::Norm, "layer_norm_modulate");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().layer_norm_modulate(x, shift, scale, eps);
}
void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) {
  OpTimer t(OpClass::Norm, "add_gated");
  t.bytes = f32_bytes(2 * x.numel(), x.numel());
  active_backend().add_gated(x, gate, y);
}
void add(Tensor& x, const Tensor& y) {
  OpTimer t(OpClass::Norm, "add");
  t.bytes = f32_bytes(2 * x.numel(), x.numel());
  active_backend().add(x, y);
}
void mul(Tensor& x, const Tensor& y) {
  OpTimer t(OpClass::Norm, "mul");
  t.bytes = f32_bytes(2 * x.numel(), x.numel());
  active_backend().mul(x, y);
}
Tensor gelu_tanh(Tensor x) {
  OpTimer t(OpClass::Norm, "gelu_tanh");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().gelu_tanh(x);
  return x;
}
Tensor silu(Tensor x) {
  OpTimer t(OpClass::Norm, "silu");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().silu(x);
  return x;
}
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> seq_lens,
                 float scale, const Tensor* bias) {
  OpTimer t(OpClass::Attention, "attention");
  if (t.on() && q.rank() == 2)
    for (int64_t n : seq_lens) t.flops += 4.0 * double(n) * double(n) * double(q.dim(1));  // 4·Lq·Lk·D per head
  return active_backend().attention(q, k, v, heads, seq_lens, scale, bias);
}
void rope(Tensor& x, int heads, const Tensor& rope_table) {
  OpTimer t(OpClass::Norm, "rope");
  t.bytes = f32_bytes(x.numel() + rope_table.numel(), x.numel());
  active_backend().rope(x, heads, rope_table);
}
void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table) {
  OpTimer t(OpClass::Norm, "rms_norm_rope");
  t.bytes = f32_bytes(x.numel() + rope_table.numel(), x.numel());
  active_backend().rms_norm_rope(x, scale, eps, heads, rope_table);
}
Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, Padding pad) {
  OpTimer t(OpClass::Conv, "conv2d");
  Tensor y = active_backend().conv2d(x, w, b, stride, pad);
  if (t.on()) t.flops = 2.0 * double(w.numel()) * double(y.dim(-1) * y.dim(-2));  // 2·O·C·kh·kw·Hout·Wout
  return y;
}
Tensor upsample_nearest2x(const Tensor& x) {
  OpTimer t(OpClass::Norm, "upsample_nearest2x");
  t.bytes = f32_bytes(x.numel(), 4 * x.numel());
  return active_backend().upsample_nearest2x(x);
}

Tensor downsample_nearest2x(const Tensor& x) {
  OpTimer t(OpClass::Norm, "downsample_nearest2x");
  t.bytes = f32_bytes(x.numel() / 4, x.numel() / 4);
  return active_backend().downsample_nearest2x(x);
}
Tensor batched_matmul(const Tensor& a, const Tensor& b) {
  OpTimer t(OpClass::Linear, "batched_matmul");
  if (t.on() && a.rank() == 3 && b.rank() == 3) t.flops = 2.0 * double(a.numel()) * double(b.dim(2));  // 2·B·M·K·N
  return active_backend().batched_matmul(a, b);
}
void normalize_columns(Tensor& x, float eps) {
  OpTimer t(OpClass::Norm, "normalize_columns");
  t.bytes = f32_bytes(2 * x.numel(), x.numel());
  active_backend().normalize_columns(x, eps);
}

namespace {
void require_rank2(const char* op, const Tensor& x, const char* what) {
  if (x.rank() != 2) throw Error(std::string(op) + ": " + what + " must be 2-D, got " + shape_str(x.shape));
}
}  // namespace

Tensor transpose(const Tensor& x) {
  OpTimer t(OpClass::DataMovement, "transpose");
  t.bytes = f32_bytes(x.numel(), x.numel());
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
  OpTimer t(OpClass::DataMovement, "concat_rows");
  t.bytes = f32_bytes(a.numel() + b.numel(), a.numel() + b.numel());
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
  OpTimer t(OpClass::DataMovement, "concat_cols");
  t.bytes = f32_bytes(a.numel() + b.numel(), a.numel() + b.numel());
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
  OpTimer t(OpClass::DataMovement, "slice_cols");
  if (x.rank() == 2) t.bytes = f32_bytes(x.dim(0) * (end - begin), x.dim(0) * (end - begin));
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

Tensor image_to_patch_pixels(const Tensor& x, int patch) {
  OpTimer t(OpClass::DataMovement, "image_to_patch_pixels");
  t.bytes = f32_bytes(x.numel(), x.numel());
  const int64_t p = patch;
  if (x.rank() != 3 || p < 1 || x.dim(1) < p || x.dim(2) < p || x.dim(1) % p || x.dim(2) % p)
    throw Error("image_to_patch_pixels: input " + shape_str(x.shape) + " is not an image [C, H, W] with H and W "
                "positive multiples of the patch size " + std::to_string(patch));
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2), gw = W / p;
  Tensor y({H * W, C});
  for (int64_t c = 0; c < C; ++c)
    for (int64_t yy = 0; yy < H; ++yy)
      for (int64_t xx = 0; xx < W; ++xx) {
        const int64_t patch_index = (yy / p) * gw + xx / p, pixel = (yy % p) * p + xx % p;
        y.data[size_t((patch_index * p * p + pixel) * C + c)] = x.data[size_t((c * H + yy) * W + xx)];
      }
  return y;
}

void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image) {
  OpTimer t(OpClass::DataMovement, "patch_pixels_to_image");
  t.bytes = f32_bytes(rows.numel(), rows.numel());
  const int64_t p = patch;
  if (image.rank() != 3 || p < 1 || image.dim(1) % p || image.dim(2) % p)
    throw Error("patch_pixels_to_image: image " + shape_str(image.shape) + " is not [C, H, W] with H and W multiples of " +
                std::to_string(patch));
  const int64_t C = image.dim(0), H = image.dim(1), W = image.dim(2), gw = W / p, patches = (H / p) * gw;
  if (rows.rank() != 2 || rows.dim(1) != C || rows.dim(0) % (p * p) || first_patch < 0 ||
      first_patch + rows.dim(0) / (p * p) > patches)
    throw Error("patch_pixels_to_image: rows " + shape_str(rows.shape) + " from patch " + std::to_string(first_patch) +
                " do not fit image " + shape_str(image.shape) + " in " + std::to_string(patch) + "-pixel patches");
  const int64_t n = rows.dim(0) / (p * p);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t patch_index = first_patch + k, y0 = (patch_index / gw) * p, x0 = (patch_index % gw) * p;
    for (int64_t pixel = 0; pixel < p * p; ++pixel) {
      const float* src = rows.ptr() + (k * p * p + pixel) * C;
      const int64_t yy = y0 + pixel / p, xx = x0 + pixel % p;
      for (int64_t c = 0; c < C; ++c) image.data[size_t((c * H + yy) * W + xx)] = src[c];
    }
  }
}

}  // namespace chroma::ops

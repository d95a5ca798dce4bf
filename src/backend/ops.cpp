// The op vocabulary: every op forwards to the active backend, timed when the benchmark profiles.
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

Tensor to_backend(Tensor x) {
  Memory& memory = active_backend().memory();
  if (&x.memory() == &memory) return x;
  OpTimer t(OpClass::DataMovement, "to_backend");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return to_memory(std::move(x), memory);
}
const Tensor& backend_readable(const Tensor& x, Tensor& holder) {
  if (&x.memory() == &active_backend().memory()) return x;
  holder = to_backend(x);
  return holder;
}
Tensor zeros(Shape shape) { return Tensor(std::move(shape), active_backend().memory()); }

Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) {
  OpTimer t(OpClass::Norm, "axpby");
  t.bytes = f32_bytes(2 * x.numel(), x.numel());
  return active_backend().axpby(a, x, b, y);
}
void affine(Tensor& x, float a, float b) {
  OpTimer t(OpClass::Norm, "affine");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().affine(x, a, b);
}
void divide(Tensor& x, float d) {
  OpTimer t(OpClass::Norm, "divide");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().divide(x, d);
}
void round_bf16(Tensor& x) {
  OpTimer t(OpClass::Norm, "round_bf16");
  t.bytes = f32_bytes(x.numel(), x.numel());
  active_backend().round_bf16(x);
}
void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask) {
  OpTimer t(OpClass::Norm, "mask_blend");
  t.bytes = f32_bytes(2 * x.numel() + mask.numel(), x.numel());
  active_backend().mask_blend(x, y, mask);
}
double sum_abs(const Tensor& x) {
  OpTimer t(OpClass::Norm, "sum_abs");
  t.bytes = f32_bytes(x.numel(), 0);
  return active_backend().sum_abs(x);
}
double sum_abs_diff(const Tensor& x, const Tensor& y) {
  OpTimer t(OpClass::Norm, "sum_abs_diff");
  t.bytes = f32_bytes(2 * x.numel(), 0);
  return active_backend().sum_abs_diff(x, y);
}
bool all_finite(const Tensor& x) {
  OpTimer t(OpClass::Norm, "all_finite");
  t.bytes = f32_bytes(x.numel(), 0);
  return active_backend().all_finite(x);
}

Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids) {
  OpTimer t(OpClass::DataMovement, "gather_rows");
  if (table.shape.size() == 2) t.bytes = f32_bytes(0, int64_t(ids.size()) * table.dim(1));
  return active_backend().gather_rows(table, ids);
}
Tensor transpose(const Tensor& x) {
  OpTimer t(OpClass::DataMovement, "transpose");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().transpose(x);
}
Tensor concat_rows(const Tensor& a, const Tensor& b) {
  OpTimer t(OpClass::DataMovement, "concat_rows");
  t.bytes = f32_bytes(a.numel() + b.numel(), a.numel() + b.numel());
  return active_backend().concat_rows(a, b);
}
Tensor concat_cols(const Tensor& a, const Tensor& b) {
  OpTimer t(OpClass::DataMovement, "concat_cols");
  t.bytes = f32_bytes(a.numel() + b.numel(), a.numel() + b.numel());
  return active_backend().concat_cols(a, b);
}
Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end) {
  OpTimer t(OpClass::DataMovement, "slice_cols");
  if (x.rank() == 2) t.bytes = f32_bytes(x.dim(0) * (end - begin), x.dim(0) * (end - begin));
  return active_backend().slice_cols(x, begin, end);
}
Tensor image_to_patches(const Tensor& x, int patch) {
  OpTimer t(OpClass::DataMovement, "image_to_patches");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().image_to_patches(x, patch);
}
Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width) {
  OpTimer t(OpClass::DataMovement, "patches_to_image");
  t.bytes = f32_bytes(tokens.numel(), tokens.numel());
  return active_backend().patches_to_image(tokens, patch, height, width);
}
Tensor image_to_patch_pixels(const Tensor& x, int patch) {
  OpTimer t(OpClass::DataMovement, "image_to_patch_pixels");
  t.bytes = f32_bytes(x.numel(), x.numel());
  return active_backend().image_to_patch_pixels(x, patch);
}
void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image) {
  OpTimer t(OpClass::DataMovement, "patch_pixels_to_image");
  t.bytes = f32_bytes(rows.numel(), rows.numel());
  active_backend().patch_pixels_to_image(rows, first_patch, patch, image);
}

}  // namespace chroma::ops

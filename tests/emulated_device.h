// A stand-in for a GPU backend, for tests on machines without one: its tensors live in memory the
// host may not read (Tensor::ptr() throws on them, as it would on CUDA memory), and each op runs the
// CPU backend's op on host copies of its arguments, then moves the results back. The results are the
// CPU backend's bit for bit, so a model or sampler run under it must give the CPU run's values, and
// any place that reads a device tensor's values directly, or hands an op a tensor from the wrong
// memory, throws with the op's name. The memory counts the bytes that cross to and from the host.
#pragma once
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace chroma::test {

class OffHostMemory final : public Memory {
 public:
  const char* name() const override { return "emulated-device"; }
  bool host_accessible() const override { return false; }
  void* allocate(size_t bytes) override {
    void* p = std::malloc(bytes);
    if (!p) throw Error("emulated device: out of memory");
    return p;
  }
  void release(void* p) noexcept override { std::free(p); }
  void fill_zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    to_host_bytes += bytes;
    std::memcpy(dst, src, bytes);
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    from_host_bytes += bytes;
    std::memcpy(dst, src, bytes);
  }
  std::atomic<size_t> to_host_bytes{0}, from_host_bytes{0};
};

class EmulatedDeviceBackend final : public Backend {
 public:
  explicit EmulatedDeviceBackend(OffHostMemory& memory, Compute compute = Compute::F32)
      : memory_(memory), cpu_(make_cpu_backend(compute)) {}
  const char* name() const override { return "emulated device"; }
  Memory& memory() override { return memory_; }
  void set_threads(int n) override { cpu_->set_threads(n); }
  int threads() const override { return cpu_->threads(); }
  size_t linear_workspace_bytes(int64_t rows, int64_t k) const override { return cpu_->linear_workspace_bytes(rows, k); }

  Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b,
                std::span<const ops::ExtraProduct> extra) override {
    const HostExtra host(*this, "linear", extra);
    return out(cpu_->linear(in("linear", x), w, b, host.products));
  }
  Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                       std::span<const ops::ExtraProduct> extra) override {
    const HostExtra host(*this, "linear_concat", extra);
    return out(cpu_->linear_concat(in("linear_concat", a), in("linear_concat", b), w, bias, host.products));
  }
  Tensor layer_norm(const Tensor& x, float eps) override { return out(cpu_->layer_norm(in("layer_norm", x), eps)); }
  Tensor rms_norm(const Tensor& x, const TensorView& s, float eps) override {
    return out(cpu_->rms_norm(in("rms_norm", x), s, eps));
  }
  Tensor group_norm(const Tensor& x, int g, const TensorView& w, const TensorView& b, float eps) override {
    return out(cpu_->group_norm(in("group_norm", x), g, w, b, eps));
  }
  void group_norm_silu(Tensor& x, int g, const TensorView& w, const TensorView& b, float eps) override {
    Tensor h = in("group_norm_silu", x);
    cpu_->group_norm_silu(h, g, w, b, eps);
    x = out(std::move(h));
  }
  Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) override {
    return out(cpu_->modulate(in("modulate", x), in("modulate", shift), in("modulate", scale)));
  }
  Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps) override {
    return out(cpu_->layer_norm_modulate(in("layer_norm_modulate", x), in("layer_norm_modulate", shift),
                                         in("layer_norm_modulate", scale), eps));
  }
  void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) override {
    in_place("add_gated", x, [&](Tensor& h) { cpu_->add_gated(h, in("add_gated", gate), in("add_gated", y)); });
  }
  void add(Tensor& x, const Tensor& y) override {
    in_place("add", x, [&](Tensor& h) { cpu_->add(h, in("add", y)); });
  }
  void mul(Tensor& x, const Tensor& y) override {
    in_place("mul", x, [&](Tensor& h) { cpu_->mul(h, in("mul", y)); });
  }
  void gelu_tanh(Tensor& x) override { in_place("gelu_tanh", x, [&](Tensor& h) { cpu_->gelu_tanh(h); }); }
  void silu(Tensor& x) override { in_place("silu", x, [&](Tensor& h) { cpu_->silu(h); }); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> lens,
                   float scale, const Tensor* bias) override {
    const Tensor hb = bias ? in("attention (bias)", *bias) : Tensor();
    return out(cpu_->attention(in("attention", q), in("attention", k), in("attention", v), heads, lens, scale,
                               bias ? &hb : nullptr));
  }
  void rope(Tensor& x, int heads, const Tensor& table) override {
    in_place("rope", x, [&](Tensor& h) { cpu_->rope(h, heads, in("rope", table)); });
  }
  void rms_norm_rope(Tensor& x, const TensorView& s, float eps, int heads, const Tensor& table) override {
    in_place("rms_norm_rope", x, [&](Tensor& h) { cpu_->rms_norm_rope(h, s, eps, heads, in("rms_norm_rope", table)); });
  }
  Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, ops::Padding pad) override {
    return out(cpu_->conv2d(in("conv2d", x), w, b, stride, pad));
  }
  Tensor upsample_nearest2x(const Tensor& x) override { return out(cpu_->upsample_nearest2x(in("upsample", x))); }
  Tensor downsample_nearest2x(const Tensor& x) override { return out(cpu_->downsample_nearest2x(in("downsample", x))); }
  Tensor batched_matmul(const Tensor& a, const Tensor& b) override {
    return out(cpu_->batched_matmul(in("batched_matmul", a), in("batched_matmul", b)));
  }
  void normalize_columns(Tensor& x, float eps) override {
    in_place("normalize_columns", x, [&](Tensor& h) { cpu_->normalize_columns(h, eps); });
  }
  Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) override {
    return out(cpu_->axpby(a, in("axpby", x), b, in("axpby", y)));
  }
  void affine(Tensor& x, float a, float b) override { in_place("affine", x, [&](Tensor& h) { cpu_->affine(h, a, b); }); }
  void divide(Tensor& x, float d) override { in_place("divide", x, [&](Tensor& h) { cpu_->divide(h, d); }); }
  void round_bf16(Tensor& x) override { in_place("round_bf16", x, [&](Tensor& h) { cpu_->round_bf16(h); }); }
  void mask_blend(Tensor& x, const Tensor& y, const Tensor& m) override {
    in_place("mask_blend", x, [&](Tensor& h) { cpu_->mask_blend(h, in("mask_blend", y), in("mask_blend", m)); });
  }
  double sum_abs(const Tensor& x) override { return cpu_->sum_abs(in("sum_abs", x)); }
  double sum_abs_diff(const Tensor& x, const Tensor& y) override {
    return cpu_->sum_abs_diff(in("sum_abs_diff", x), in("sum_abs_diff", y));
  }
  bool all_finite(const Tensor& x) override { return cpu_->all_finite(in("all_finite", x)); }
  Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids) override {
    return out(cpu_->gather_rows(table, ids));
  }
  Tensor transpose(const Tensor& x) override { return out(cpu_->transpose(in("transpose", x))); }
  Tensor concat_rows(const Tensor& a, const Tensor& b) override {
    return out(cpu_->concat_rows(in("concat_rows", a), in("concat_rows", b)));
  }
  Tensor concat_cols(const Tensor& a, const Tensor& b) override {
    return out(cpu_->concat_cols(in("concat_cols", a), in("concat_cols", b)));
  }
  Tensor slice_cols(const Tensor& x, int64_t b, int64_t e) override { return out(cpu_->slice_cols(in("slice_cols", x), b, e)); }
  Tensor image_to_patches(const Tensor& x, int p) override { return out(cpu_->image_to_patches(in("image_to_patches", x), p)); }
  Tensor patches_to_image(const Tensor& t, int p, int64_t h, int64_t w) override {
    return out(cpu_->patches_to_image(in("patches_to_image", t), p, h, w));
  }
  Tensor image_to_patch_pixels(const Tensor& x, int p) override {
    return out(cpu_->image_to_patch_pixels(in("image_to_patch_pixels", x), p));
  }
  void patch_pixels_to_image(const Tensor& rows, int64_t first, int p, Tensor& image) override {
    in_place("patch_pixels_to_image", image,
             [&](Tensor& h) { cpu_->patch_pixels_to_image(in("patch_pixels_to_image", rows), first, p, h); });
  }

 private:
  // An argument on the host, for the CPU op; it must be in this backend's memory.
  Tensor in(const char* op, const Tensor& t) const {
    if (&t.memory() != &memory_)
      throw Error(std::string("emulated device: ") + op + " got a tensor " + shape_str(t.shape) + " in " +
                  t.memory().name() + " memory");
    return to_host(t);
  }
  Tensor out(Tensor host) const { return to_memory(std::move(host), memory_); }
  // A linear's extra products with their u on the host.
  struct HostExtra {
    HostExtra(const EmulatedDeviceBackend& backend, const char* op, std::span<const ops::ExtraProduct> extra) {
      for (const ops::ExtraProduct& e : extra) us.push_back(backend.in(op, *e.u));
      for (size_t i = 0; i < extra.size(); ++i) products.push_back({&us[i], extra[i].v});
    }
    std::vector<Tensor> us;
    std::vector<ops::ExtraProduct> products;
  };
  template <typename F>
  void in_place(const char* op, Tensor& x, F&& f) const {
    Tensor h = in(op, x);
    f(h);
    x = out(std::move(h));
  }

  OffHostMemory& memory_;
  std::unique_ptr<Backend> cpu_;
};

}  // namespace chroma::test

// The CPU backend: OpenBLAS sgemm for the large products, OpenMP loops for everything else.
#include <cblas.h>

#include <algorithm>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "io/untrusted.h"

namespace chroma {
namespace {

class CpuBackend final : public Backend {
 public:
  // Every sgemm runs on one OpenMP thread (threads.cpp); OpenBLAS must not start its own pool.
  explicit CpuBackend(Compute compute) : compute_(compute) { openblas_set_num_threads(1); }
  const char* name() const override {
    switch (compute_) {
      case Compute::Bf16: return "cpu (bf16 compute)";
      case Compute::Int8: return "cpu (int8 compute)";
      case Compute::Auto: return "cpu (auto compute)";
      case Compute::F32: break;
    }
    return "cpu";
  }
  Memory& memory() override { return host_memory(); }
  void set_threads(int n) override { cpu::set_threads(n); }
  int threads() const override { return cpu::threads(); }
  size_t linear_workspace_bytes(int64_t rows, int64_t widest_k) const override {
    return size_t(std::max(1, cpu::threads())) * cpu::linear_scratch_bytes(widest_k) +
           cpu::linear_input_bytes(rows, widest_k);
  }
  Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b,
                std::span<const ops::ExtraProduct> extra) override {
    return cpu::linear(x, w, b, extra, compute_);
  }
  Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                       std::span<const ops::ExtraProduct> extra) override {
    return cpu::linear_concat(a, b, w, bias, extra, compute_);
  }
  Tensor layer_norm(const Tensor& x, float eps) override { return cpu::layer_norm(x, eps); }
  Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps) override {
    return cpu::rms_norm(x, scale, eps);
  }
  Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias,
                    float eps) override {
    return cpu::group_norm(x, groups, weight, bias, eps);
  }
  void group_norm_silu(Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) override {
    cpu::group_norm_silu(x, groups, weight, bias, eps);
  }
  Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) override {
    return cpu::modulate(x, shift, scale);
  }
  Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps) override {
    return cpu::layer_norm_modulate(x, shift, scale, eps);
  }
  void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) override { cpu::add_gated(x, gate, y); }
  void add(Tensor& x, const Tensor& y) override { cpu::add(x, y); }
  void mul(Tensor& x, const Tensor& y) override { cpu::mul(x, y); }
  void gelu_tanh(Tensor& x) override { cpu::gelu_tanh(x); }
  void silu(Tensor& x) override { cpu::silu(x); }
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> seq_lens,
                   float scale, const Tensor* bias) override {
    return cpu::attention(q, k, v, heads, seq_lens, scale, bias);
  }
  void rope(Tensor& x, int heads, const Tensor& rope_table) override { cpu::rope(x, heads, rope_table); }
  void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table) override {
    cpu::rms_norm_rope(x, scale, eps, heads, rope_table);
  }
  Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, ops::Padding pad) override {
    return cpu::conv2d(x, w, b, stride, pad);
  }
  Tensor upsample_nearest2x(const Tensor& x) override { return cpu::upsample_nearest2x(x); }
  Tensor downsample_nearest2x(const Tensor& x) override { return cpu::downsample_nearest2x(x); }
  Tensor batched_matmul(const Tensor& a, const Tensor& b) override { return cpu::batched_matmul(a, b); }
  void normalize_columns(Tensor& x, float eps) override { cpu::normalize_columns(x, eps); }

  Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) override { return cpu::axpby(a, x, b, y); }
  void affine(Tensor& x, float a, float b) override { cpu::affine(x, a, b); }
  void divide(Tensor& x, float d) override { cpu::divide(x, d); }
  void round_bf16(Tensor& x) override { cpu::round_values_bf16(x); }
  void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask) override { cpu::mask_blend(x, y, mask); }
  double sum_abs(const Tensor& x) override { return cpu::sum_abs(x); }
  double sum_abs_diff(const Tensor& x, const Tensor& y) override { return cpu::sum_abs_diff(x, y); }
  bool all_finite(const Tensor& x) override { return cpu::all_finite(x); }

  Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids) override {
    return cpu::gather_rows(table, ids);
  }
  Tensor transpose(const Tensor& x) override { return cpu::transpose(x); }
  Tensor concat_rows(const Tensor& a, const Tensor& b) override { return cpu::concat_rows(a, b); }
  Tensor concat_cols(const Tensor& a, const Tensor& b) override { return cpu::concat_cols(a, b); }
  Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end) override { return cpu::slice_cols(x, begin, end); }
  Tensor image_to_patches(const Tensor& x, int patch) override { return cpu::image_to_patches(x, patch); }
  Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width) override {
    return cpu::patches_to_image(tokens, patch, height, width);
  }
  Tensor image_to_patch_pixels(const Tensor& x, int patch) override { return cpu::image_to_patch_pixels(x, patch); }
  void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image) override {
    cpu::patch_pixels_to_image(rows, first_patch, patch, image);
  }

 private:
  Compute compute_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(Compute compute) { return std::make_unique<CpuBackend>(compute); }

const char* compute_name(Compute c) {
  switch (c) {
    case Compute::Bf16: return "bf16";
    case Compute::Int8: return "int8";
    case Compute::Auto: return "auto";
    case Compute::F32: break;
  }
  return "f32";
}

Compute parse_compute(const std::string& text) {
  for (Compute c : {Compute::F32, Compute::Bf16, Compute::Int8, Compute::Auto})
    if (text == compute_name(c)) return c;
  throw Error("--compute " + io::quote(text) + ": expected auto, f32, bf16 or int8");
}

void check_compute_supported(Compute c) {
  if (c == Compute::Bf16 && !cpu::bf16_dot_supported())
    throw Error("--compute bf16: this CPU has no AVX-512 BF16 (vdpbf16ps), so bf16 products would run far slower "
                "than float32; use --compute f32");
  if (c == Compute::Int8 && !cpu::int8_dot_supported())
    throw Error("--compute int8: this CPU has neither AVX2 nor AVX-512 VNNI for int8 dot products; use --compute f32");
}

}  // namespace chroma

// The compute backend interface: a short list of operations (one virtual call per op, never per
// element). ops.h forwards to the active backend; a faster CPU path or a CUDA backend implements
// this class without touching model code. Backends know nothing of any model.
// Every tensor an op returns lives in the backend's memory(); an op's tensor arguments are there too
// (ops::to_backend moves host-built inputs in). The CPU backend's memory is the host's.
#pragma once
#include <memory>
#include <span>
#include <string>

#include "backend/ops.h"

namespace chroma {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Where this backend's tensors live.
  virtual Memory& memory() = 0;
  // Worker threads of this backend's ops started from the calling thread (0 = all cores).
  virtual void set_threads(int n) = 0;
  virtual int threads() const = 0;
  // Scratch bytes the linear layers keep for an input of `rows` rows and the widest K (memory planning).
  virtual size_t linear_workspace_bytes(int64_t rows, int64_t widest_k) const = 0;

  // ops::linear, with the extra products accumulated into the output.
  virtual Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b,
                        std::span<const ops::ExtraProduct> extra) = 0;
  // ops::linear_concat. The default builds the concatenation and calls linear.
  virtual Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                               std::span<const ops::ExtraProduct> extra);
  virtual Tensor layer_norm(const Tensor& x, float eps) = 0;
  virtual Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps) = 0;
  virtual Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias,
                            float eps) = 0;
  // ops::group_norm_silu, in place. The default is group_norm, then silu.
  virtual void group_norm_silu(Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps) {
    x = group_norm(x, groups, weight, bias, eps);
    silu(x);
  }
  virtual Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) = 0;
  // ops::layer_norm_modulate. The default is layer_norm, then modulate.
  virtual Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps);
  virtual void add_gated(Tensor& x, const Tensor& gate, const Tensor& y) = 0;
  virtual void add(Tensor& x, const Tensor& y) = 0;
  virtual void mul(Tensor& x, const Tensor& y) = 0;
  virtual void gelu_tanh(Tensor& x) = 0;
  virtual void silu(Tensor& x) = 0;
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads,
                           std::span<const int64_t> seq_lens, float scale, const Tensor* bias) = 0;
  virtual void rope(Tensor& x, int heads, const Tensor& rope_table) = 0;
  // ops::rms_norm_rope, in place. The default is rms_norm per head, then rope.
  virtual void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table);
  virtual Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride,
                        ops::Padding pad) = 0;
  virtual Tensor upsample_nearest2x(const Tensor& x) = 0;
  virtual Tensor downsample_nearest2x(const Tensor& x) = 0;
  virtual Tensor batched_matmul(const Tensor& a, const Tensor& b) = 0;
  virtual void normalize_columns(Tensor& x, float eps) = 0;

  // Elementwise arithmetic and reductions (ops.h).
  virtual Tensor axpby(float a, const Tensor& x, float b, const Tensor& y) = 0;
  virtual void affine(Tensor& x, float a, float b) = 0;
  virtual void divide(Tensor& x, float d) = 0;
  virtual void round_bf16(Tensor& x) = 0;
  virtual void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask) = 0;
  virtual double sum_abs(const Tensor& x) = 0;
  virtual double sum_abs_diff(const Tensor& x, const Tensor& y) = 0;
  virtual bool all_finite(const Tensor& x) = 0;

  // Data movement (ops.h).
  virtual Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids) = 0;
  virtual Tensor transpose(const Tensor& x) = 0;
  virtual Tensor concat_rows(const Tensor& a, const Tensor& b) = 0;
  virtual Tensor concat_cols(const Tensor& a, const Tensor& b) = 0;
  virtual Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end) = 0;
  virtual Tensor image_to_patches(const Tensor& x, int patch) = 0;
  virtual Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width) = 0;
  virtual Tensor image_to_patch_pixels(const Tensor& x, int patch) = 0;
  virtual void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image) = 0;
};

// The backend ops.h uses on the calling thread: the one a BackendScope bound, else the process's
// shared CPU backend.
Backend& active_backend();

// Binds `backend` and its worker-thread count (0 = all cores) to the calling thread for the lifetime
// of the object, restoring the previous ones after: a run's context (pipeline/run_context.h), so
// two runs on two threads never share either. Not owned.
class BackendScope {
 public:
  BackendScope(Backend& backend, int threads);
  ~BackendScope();
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  Backend* saved_backend_;
  Backend& backend_;
  int saved_threads_;
};

// The processors this process may run on.
int available_cores();

// The arithmetic of the large products. F32: weights widened to float32, OpenBLAS sgemm (exact to
// float32 rounding). Bf16: bf16 weights multiply inputs rounded to bf16, products summed in float32
// (AVX-512 BF16's vdpbf16ps). Int8: block-quantized weights (Q8_0, Q4_x, Q5_x, K-quants) multiply
// the inputs quantized to int8 per 32-value block, exact integer sums scaled in float32 (AVX-512
// VNNI or AVX2). Auto: Int8 for block-quantized weights where the CPU has AVX-512 VNNI (with AVX2 alone
// int8 measured no faster than float32), F32 for the rest.
// Weight types a mode does not cover stay F32. Attention, norms and the sampler are float32 always.
enum class Compute { F32, Bf16, Int8, Auto };
const char* compute_name(Compute c);             // "f32", "bf16", "int8", "auto"
Compute parse_compute(const std::string& text);  // throws chroma::Error naming the text and the choices
// Whether this CPU runs `c` at speed; throws chroma::Error saying why not (Bf16 without AVX-512 BF16,
// Int8 without AVX2).
void check_compute_supported(Compute c);

// The CPU backend (backend/cpu/): OpenBLAS, oneDNN and our kernels, threaded with OpenMP.
std::unique_ptr<Backend> make_cpu_backend(Compute compute = Compute::F32);

}  // namespace chroma

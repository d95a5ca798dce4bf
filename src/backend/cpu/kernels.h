// CPU kernels behind the Backend interface (backend.h); shapes as documented in ops.h.
// Internal to src/backend/cpu: model code calls chroma::ops, never these.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "backend/backend.h"
#include "backend/ops.h"

namespace chroma::cpu {

// "'name' in file" for error messages about a stored tensor.
std::string describe(const TensorView& v);
// Throws unless v holds a float dtype whose byte count matches its shape.
void check_float_view(const char* op, const TensorView& v);

// Widens rows [row0, row0 + rows) of a float view of shape [R, K] into dst[rows, K] (float32).
void widen_rows(const TensorView& v, int64_t row0, int64_t rows, float* dst);
// Widens a whole (small) float view: norm scales, biases, conv kernels.
Tensor widen(const TensorView& v);

// linear.cpp     y[M, N] = x[M, K] · wᵀ + b;   linear_concat: x = [a | b] (ops.h). With Compute::Bf16,
// bf16 weights take linear_bf16 for the main product (the extra products stay float32).
Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b, std::span<const ops::ExtraProduct> extra = {},
              Compute compute = Compute::F32);
Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias,
                     std::span<const ops::ExtraProduct> extra = {}, Compute compute = Compute::F32);

// linear_bf16.cpp  y = bf16(x) · wᵀ + b, float32 sums (oneDNN): x = [xs_0 | xs_1 | …] side by side.
bool takes_bf16_compute(const TensorView& w);  // bf16 weights, one part, no scale
void linear_bf16(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b, Tensor& y);
bool bf16_dot_supported();  // AVX-512 BF16 on this CPU (else linear emulates bf16 compute in float32)

// linear_int8.cpp  y = Σ per 32-value block of x's int8 codes · the weight's integer codes, scales in float32.
bool takes_int8_compute(const TensorView& w);  // block-quantized weights with an integer form, one part
void linear_int8(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b, Tensor& y);
bool int8_dot_supported();     // AVX2 or AVX-512 VNNI (CHROMA_INT8_KERNEL=avx2 caps it at AVX2)
// Whether int8 beats float32 here, so Compute::Auto takes it: with AVX-512 VNNI only. The AVX2 kernel
// ran at the AVX2 sgemm's rate (150 against 152–168 GOP/s, docs/PERFORMANCE.md): no gain for its rounding.
bool int8_dot_fast();
const char* int8_kernel_name();  // "avx512-vnni", "avx2", "none"

// norm.cpp
Tensor layer_norm(const Tensor& x, float eps);
Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps);
Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps);
Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps);
void group_norm_silu(Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps);  // in place
void rope(Tensor& x, int heads, const Tensor& rope_table);                                                 // in place
void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table);    // in place

// elementwise.cpp
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);
void add_gated(Tensor& x, const Tensor& gate, const Tensor& y);
void add(Tensor& x, const Tensor& y);
void mul(Tensor& x, const Tensor& y);
void gelu_tanh(Tensor& x);
void silu(Tensor& x);
Tensor upsample_nearest2x(const Tensor& x);
Tensor downsample_nearest2x(const Tensor& x);

// arithmetic.cpp (ops.h): elementwise sums and products rounded as written, reductions
Tensor axpby(float a, const Tensor& x, float b, const Tensor& y);
void affine(Tensor& x, float a, float b);
void divide(Tensor& x, float d);
void round_values_bf16(Tensor& x);
void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask);
double sum_abs(const Tensor& x);
double sum_abs_diff(const Tensor& x, const Tensor& y);
bool all_finite(const Tensor& x);

// layout.cpp (ops.h): data movement
Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids);
Tensor transpose(const Tensor& x);
Tensor concat_rows(const Tensor& a, const Tensor& b);
Tensor concat_cols(const Tensor& a, const Tensor& b);
Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end);
Tensor image_to_patches(const Tensor& x, int patch);
Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width);
Tensor image_to_patch_pixels(const Tensor& x, int patch);
void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image);

// threads.cpp: OpenMP worker threads of the calling thread (0 = all cores); OpenBLAS stays on one.
void set_threads(int n);
int threads();

// linear.cpp: bytes of widened weight panel each worker thread keeps for linear layers with K input
// columns, and of the copy of an input [rows, K] that bf16 and int8 compute keep (bf16 values, or
// int8 codes with their block scales); both reused across calls.
size_t linear_scratch_bytes(int64_t K);
size_t linear_input_bytes(int64_t rows, int64_t K);

// batched.cpp: one single-threaded sgemm per matrix of the batch, threads over the batch.
Tensor batched_matmul(const Tensor& a, const Tensor& b);
void normalize_columns(Tensor& x, float eps);  // in place

// attention.cpp
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, std::span<const int64_t> seq_lens,
                 float scale, const Tensor* bias);

// conv2d.cpp: Winograd for 3×3 stride 1 padding 1, im2col + sgemm for every other shape.
Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, ops::Padding pad);
// winograd.cpp: 3×3 conv, stride 1, zero padding 1, by Winograd F(tile×tile, 3×3), tile 2 or 4.
//   x [C, H, W], w [O, C, 3, 3], bias [O] or nullptr → y [O, H, W]
Tensor conv3x3_winograd(const Tensor& x, const Tensor& w, const float* bias, int tile);

}  // namespace chroma::cpu

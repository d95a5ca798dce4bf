// The op vocabulary every model is written in.
//
// Layouts (batch 1, PyTorch order, float32 activations in the active backend's memory):
//   tokens  [L, C]            L tokens of width C; multi-head tensors keep heads inside C as "(H D)"
//   images  [C, H, W]         channels first
// Weights are TensorViews in their stored dtype ([N, K] for linear layers, PyTorch order) and
// are widened inside the kernels, never copied whole. An empty TensorView means "no bias".
//
// The functions below forward to the active Backend (backend.h); model code never names one, and
// never reads a tensor's values: inputs built on the host (noise, embeddings of exact integers, tables)
// enter through to_backend, and values the host needs (an image to encode) leave through to_host
// (tensor.h). With the CPU backend both are free.
#pragma once
#include <cstdint>
#include <span>

#include "tensor/tensor.h"

namespace chroma::ops {

// A product u · vᵀ added into a linear's output (e.g. a low-rank update B·(A·x)): u [M, r] (M = the
// linear's rows), v [N, r] in its stored dtype. Accumulated in place: no [M, N] temporary, no extra pass.
struct ExtraProduct {
  const Tensor* u;
  TensorView v;
};

// y[..., N] = x[..., K] · wᵀ + b (+ Σ u_j · v_jᵀ)          w: [N, K], b: [N] or empty
Tensor linear(const Tensor& x, const TensorView& w, const TensorView& b = {}, std::span<const ExtraProduct> extra = {});
// linear of the column concatenation [a | b] without building it:
//   a: [L, Ka], b: [L, Kb], w: [N, Ka + Kb] → y[L, N] = a · w[:, :Ka]ᵀ + b · w[:, Ka:]ᵀ + bias (+ extra).
// Equals linear(concat_cols(a, b), w, bias) up to float32 summation order.
Tensor linear_concat(const Tensor& a, const Tensor& b, const TensorView& w, const TensorView& bias = {},
                     std::span<const ExtraProduct> extra = {});

// LayerNorm over the last dim, no affine: (x − mean) / sqrt(var_biased + eps)
Tensor layer_norm(const Tensor& x, float eps);
// RMSNorm over the last dim: x · rsqrt(mean(x²) + eps) · scale      scale: [last dim]
Tensor rms_norm(const Tensor& x, const TensorView& scale, float eps);
// GroupNorm of an image [C, H, W]: statistics per group of C/groups channels, then affine per channel.
Tensor group_norm(const Tensor& x, int groups, const TensorView& weight, const TensorView& bias, float eps);
// silu(group_norm(x, …)) in one pass writing the result, in place on the argument, which is returned
// (pass an rvalue to reuse its memory; an lvalue is copied, as for the activations below).
Tensor group_norm_silu(Tensor x, int groups, const TensorView& weight, const TensorView& bias, float eps);

// (1 + scale) ⊙ x + shift, broadcast over rows.                  x: [L, C], shift/scale: [C]
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);
// modulate(layer_norm(x, eps), shift, scale) in one pass per row: each row's statistics, then
// (1 + scale) ⊙ (x − mean)·rstd + shift written once (no normalised intermediate).
// Equals the two ops up to float32 rounding (the same statistics, the same formulas).
Tensor layer_norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps);
// x += gate ⊙ y, broadcast over rows.                             x, y: [L, C], gate: [C]
void add_gated(Tensor& x, const Tensor& gate, const Tensor& y);
// x += y (same shape)
void add(Tensor& x, const Tensor& y);
// x ⊙= y elementwise (same shape)
void mul(Tensor& x, const Tensor& y);

// Elementwise activations (in place on the argument, which is returned).
Tensor gelu_tanh(Tensor x);   // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
Tensor silu(Tensor x);        // x · sigmoid(x)

// Multi-head attention over packed sequences.
//   q, k, v: [L, H·D] with L = Σ seq_lens; token rows of sequence s are consecutive.
//   Each query attends only to keys of its own sequence: softmax(q·kᵀ·scale + bias)·v.
//   bias: empty, or an additive [H, Lb, Lb] tensor with Lb ≥ every seq_len; sequence s adds its
//   top-left [len_s, len_s] block (T5's relative bias: positions restart at 0 in each sequence and
//   the bias depends only on k − q). A bias of another shape throws chroma::Error.
// Returns [L, H·D]. Softmax statistics in float32; the L×L matrix need not be materialised.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads,
                 std::span<const int64_t> seq_lens, float scale, const Tensor* bias = nullptr);

// Rotary embedding on adjacent pairs of every head, in place.
//   x: [L, H·D]; rope: [L, D/2, 2] holding (cos θ, sin θ) per token and pair:
//   (x0, x1) ← (cos·x0 − sin·x1, sin·x0 + cos·x1)
void rope(Tensor& x, int heads, const Tensor& rope_table);
// QK-norm then RoPE, in place, one pass per (token, head): each head's D values are RMS-normalised
// with the per-dimension scale [D], then rotated as by rope.      x: [L, H·D], rope: [L, D/2, 2]
// Equals rms_norm of x viewed as [L·H, D], then rope, up to float32 rounding.
void rms_norm_rope(Tensor& x, const TensorView& scale, float eps, int heads, const Tensor& rope_table);

// 2-D convolution of an image [C, H, W] with w [O, C, kh, kw], b [O] or empty.
struct Padding { int top = 0, left = 0, bottom = 0, right = 0; };
Tensor conv2d(const Tensor& x, const TensorView& w, const TensorView& b, int stride, Padding pad);
// Nearest-neighbour ×2 upsampling of an image [C, H, W] → [C, 2H, 2W].
Tensor upsample_nearest2x(const Tensor& x);
// Nearest-neighbour ×½ downsampling of an image [C, H, W] (H, W even) → [C, H/2, W/2]: y[c, i, j] =
// x[c, 2i, 2j] (PyTorch's interpolate(mode="nearest") to exactly half the size).
Tensor downsample_nearest2x(const Tensor& x);

// Batched matrix product (torch.bmm): a [B, M, K] · b [B, K, N] → [B, M, N], float32.
Tensor batched_matmul(const Tensor& a, const Tensor& b);
// L2 normalisation of every column of every matrix of x [B, K, N], in place (torch's
// F.normalize(x, dim=-2)): x[b, :, n] ← x[b, :, n] / max(‖x[b, :, n]‖₂, eps).
void normalize_columns(Tensor& x, float eps);

// ---- Memory ----
// `x` in the active backend's memory (moved when it is there already, e.g. always on the CPU).
Tensor to_backend(Tensor x);
// `x` itself when it is in the active backend's memory, else a copy there kept in `holder`: an
// argument for ops without a copy on the CPU (tensor.h host_readable is the way back).
const Tensor& backend_readable(const Tensor& x, Tensor& holder);
// Zeros of `shape` in the active backend's memory.
Tensor zeros(Shape shape);

// ---- Elementwise arithmetic (float32, each operation rounded as written) and reductions ----
// a·x + b·y (same shape)
Tensor axpby(float a, const Tensor& x, float b, const Tensor& y);
// x ← a·x + b in place (exactly a·x when b is 0: a −0 stays −0)
void affine(Tensor& x, float a, float b);
// x ← x / d in place (a division, as the reference writes it: not x·(1/d), which can differ by a rounding)
void divide(Tensor& x, float d);
// Every value rounded to bf16 (nearest even) and back, in place: a bf16 tensor's arithmetic.
void round_bf16(Tensor& x);
// x ← m·x + (1 − m)·y with m = mask [P] broadcast over the leading dimension: x, y [C, P] (any shape of C·P values).
void mask_blend(Tensor& x, const Tensor& y, const Tensor& mask);
// Σ|x| and Σ|x − y| in double precision.
double sum_abs(const Tensor& x);
double sum_abs_diff(const Tensor& x, const Tensor& y);
// Whether no value is NaN or ±Inf.
bool all_finite(const Tensor& x);

// ---- Data movement ----
// Rows ids of a stored table [V, C] widened to float32 → [n, C] (an embedding lookup). Throws for an
// id outside [0, V).
Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids);
Tensor transpose(const Tensor& x);                             // [A, B] → [B, A]
Tensor concat_rows(const Tensor& a, const Tensor& b);          // [La, C] ++ [Lb, C] → [La+Lb, C]
Tensor concat_cols(const Tensor& a, const Tensor& b);          // [L, Ca] ++ [L, Cb] → [L, Ca+Cb]
Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end);  // [L, C] → [L, end−begin]
// An image [C, H, W] (or [1, C, H, W]) as one token per p×p patch: [(H/p)·(W/p), C·p·p], patches in
// row-major order, each token's values in (c, dy, dx) order (einops "c (h p1) (w p2) -> (h w) (c p1 p2)").
// Throws unless H and W are positive multiples of p.
Tensor image_to_patches(const Tensor& x, int patch);
// The inverse: tokens [(H/p)·(W/p), C·p·p] → the image [1, C, H, W].
Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width);
// An image [C, H, W] cut into p×p patches, one row per pixel: [(H/p)·(W/p)·p², C]. Row
// (t·p² + dy·p + dx) holds the C channels of pixel (p·i + dy, p·j + dx) of patch t = i·(W/p) + j
// (PyTorch's unfold(kernel p, stride p) transposed to patch-major, pixel-major order).
// Throws chroma::Error unless H and W are positive multiples of p.
Tensor image_to_patch_pixels(const Tensor& x, int patch);
// The inverse for a run of patches: rows [n·p², C] of patches first … first + n − 1 written into
// `image` [C, H, W] (PyTorch's fold of those patches). Throws when the patches do not fit the image.
void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image);

}  // namespace chroma::ops

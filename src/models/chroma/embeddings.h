// The Chroma DiT's fixed (weight-free) input transforms: patchify, RoPE table, timestep and
// modulation-index embeddings (chroma-spec.md §3.1–§3.4, §6.1–§6.3).
//
// Size legend: Cl latent channels (16), h×w latent size (even), p patch (2),
// Li = (h/p)·(w/p) image tokens, Lt text tokens, L = Lt + Li, D head dim (128).
#pragma once
#include <cstdint>

#include "models/chroma/config.h"
#include "tensor/tensor.h"

namespace chroma::dit {

// §3.1 latent [1, Cl, h, w] → tokens [Li, Cl·p·p]: token t = i·(w/p) + j for patch row i, column j;
// feature f = c·p² + dy·p + dx for channel c and pixel (p·i + dy, p·j + dx).
// Throws chroma::Error unless the latent is [1, Cl, h, w] with h, w multiples of p.
Tensor patchify(const Tensor& latent, int patch);
// §3.9 the exact inverse: tokens [Li, Cl·p·p] → latent [1, Cl, h, w].
Tensor unpatchify(const Tensor& tokens, int64_t h, int64_t w, int patch);

// §3.2 RoPE (EmbedND) table for the joint sequence, text first: [L, D/2, 2] holding (cos θ, sin θ)
// per token and adjacent-pair, the layout ops::rope reads. Text ids are (0,0,0) and image token
// (i, j) has ids (0, i, j); pairs are axis 0 (axes_dim[0]/2), then rows, then columns.
// ω = 1 / theta^(2k/d) and cos/sin in float64, rounded to float32 (flow `rope`, spec §6.3).
Tensor rope_table(int64_t text_tokens, int64_t grid_h, int64_t grid_w, const ChromaConfig& config);

// §3.3 timestep embedding [dim] = [cos(a_0..a_{half-1}), sin(a_0..a_{half-1})],
// a_k = f32(1000·t) · freq_k, freq_k = exp(f32(−ln 10000)·k / half) — all float32 in the
// reference's order of operations, exp included: PyTorch's CPU expf (SLEEF, ≤ 1 ulp) rather than
// the correctly rounded std::exp (reference case a `temb16`).
Tensor timestep_embedding(float t, int dim);
// The same when t arrives as a bf16 tensor (the author's sampler and trainer, spec §6.2): t and
// 1000·t are rounded to bf16, and so is the result (reference case a `temb16_bf16_t`).
Tensor timestep_embedding_bf16(float t, int dim);
// §3.4 / §6.1 the modulation-index part of the approximator input: [rows, dim], row r = emb(r, dim)
// with float32 arguments f32(1000·r)·freq_k (reference case a `mod_index_table`). Arguments reach
// 3.4e5 rad, so float64 arguments would differ from the reference by up to 0.009, and std::exp's
// frequencies (one ulp off torch's for k = 7, 14) by up to 1e-3.
Tensor mod_index_table(int rows, int dim = 32);

}  // namespace chroma::dit

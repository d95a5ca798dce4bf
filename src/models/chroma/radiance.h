// Chroma1-Radiance's pixel path (docs/radiance.md): the patch embedding that replaces img_in, and the
// per-patch decoder ("NeRF head") that replaces final_layer and the VAE, written after flow
// `src/models/chroma/model_dct.py` and `module/layers.py` (NerfEmbedder, NerfGLUBlock,
// NerfFinalLayerConv). The DiT blocks between them are the latent model's (model.cpp).
//
// Size legend (real model): C hidden (3072), Ci image channels (3), H×W image, p pixels per token
// side (16; 32 with __32x32__), Li = (H/p)·(W/p) tokens, h NeRF width (64), F DCT frequencies per
// axis (8), m = r·h generated MLP width (256), n patches of one tile.
#pragma once
#include <cstdint>

#include "models/chroma/config.h"
#include "models/chroma/weights.h"
#include "tensor/tensor.h"

namespace chroma::dit::radiance {

// Patches the head decodes at once: bounds its memory (≈ 1 MiB per patch at the real sizes) while
// keeping each param_generator product large enough for the GEMM to run at speed.
inline constexpr int64_t kTilePatches = 256;
inline constexpr float kRmsEps = 1e-6f;        // RMSNorm (F.rms_norm eps=1e-6)
inline constexpr float kNormalizeEps = 1e-12f;  // F.normalize default

// §2 flow NerfEmbedder.fetch_pos: [p², F²], row dy·p + dx, column fx·F + fy:
//   cos(π·fx·u_dx)·cos(π·fy·u_dy) / (1 + fx·fy), u = torch.linspace(0, 1, p) (float32 throughout).
Tensor dct_features(int patch, int max_freqs);

// §3 image [1, Ci, H, W] → tokens [Li, C]: nearest ×½ with __32x32__, then img_in_patch (a p×p conv of
// stride p), flattened row-major over the token grid.
Tensor embed_pixels(const Tensor& image, const RadianceWeights& w, const ChromaConfig& c);

// §4.1 NerfEmbedder: pixel rows [n·p², Ci] (ops::image_to_patch_pixels) → [n·p², h] =
// Linear([pixels | DCT features of the pixel's position]).
// dct: the host table of dct_features.
Tensor embed_patch_pixels(const Tensor& pixels, const Tensor& dct, const LinearWeights& embedder);

// §4.2 The MLP weights one NerfGLUBlock generates from the tokens [n, C] of n patches:
// param_generator(tokens) split in three, each matrix L2-normalised over its input dimension.
struct GeneratedMlp {
  Tensor gate;   // [n, h, m]
  Tensor value;  // [n, h, m]
  Tensor out;    // [n, m, h]
};
GeneratedMlp generate_mlp(const Tensor& tokens, const NerfBlockWeights& w, const ChromaConfig& c);

// §4.3 NerfGLUBlock.forward on x [n·p², h] (patch-major rows), in place:
//   x += (silu(RMSNorm(x)·gate) ⊙ (RMSNorm(x)·value))·out, per patch with its own generated weights.
void glu_block(Tensor& x, const GeneratedMlp& mlp, const NerfBlockWeights& w);

// §4 The whole head for one sequence: tokens [Li, C] (the DiT's image rows after the last block) and
// the input image [1, Ci, H, W] → the network's prediction [1, Ci, H, W]. Patches are decoded in tiles
// of kTilePatches (NerfEmbedder, the GLU blocks, the final RMSNorm), each written into the [h, H, W]
// feature image (fold), then the 3×3 conv (padding 1) runs once over the whole image.
Tensor decode(const Tensor& tokens, const Tensor& image, const RadianceWeights& w, const ChromaConfig& c,
              int64_t tile_patches = kTilePatches);

// §5 flow Chroma._apply_x0_residual (inference, eps 0): velocity = (x_t − x0) / t, float32. t > 0.
Tensor velocity_from_x0(const Tensor& x_t, const Tensor& x0, float t);

}  // namespace chroma::dit::radiance

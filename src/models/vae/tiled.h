// Tiled VAE decoding, for images whose whole-image decode would not fit in memory (memory_plan.h):
// the latent is cut into overlapping square tiles, each tile decoded alone, and the decoded tiles
// blended with weights that ramp linearly across each overlap, so no seam shows. Tiles see only
// their own neighbourhood — the decoder's mid-block attention is global — so the result differs a
// little from the whole-image decode (docs/PERFORMANCE.md measures by how much). A tile as large as
// the latent gives exactly the whole-image decode. ComfyUI's VAEDecodeTiled defaults: 512-pixel
// tiles, 64 pixels of overlap.
#pragma once
#include <functional>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::vae {

struct Tiling {
  int tile = 64;    // tile side in latent pixels (512 image pixels for the Flux VAE)
  int overlap = 8;  // latent pixels shared by neighbouring tiles (64 image pixels); < tile / 2
};

// The start of each tile along a side of `size` latent pixels: 0, tile − overlap, … with the last
// tile ending at `size` (it overlaps its neighbour by at least `overlap`); {0} when one tile covers it.
std::vector<int> tile_starts(int size, const Tiling& tiling);

// latent [1, z, h, w] → image [1, C, s·h, s·w] with s = decoded side / tile side (8 for the Flux VAE),
// decoding each tile with `decode` ([1, z, th, tw] → [1, C, s·th, s·tw]) and calling
// `after_tile(done, total)` after each one (it may throw to cancel). Throws chroma::Error for a
// tiling with tile < 1, overlap < 0 or overlap ≥ tile / 2, or a decode that returns another scale.
Tensor decode_tiled(const std::function<Tensor(const Tensor&)>& decode, const Tensor& latent, const Tiling& tiling,
                    const std::function<void(int done, int total)>& after_tile = {});

}  // namespace chroma::vae

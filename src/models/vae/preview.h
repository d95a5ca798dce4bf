// A cheap preview of a latent without the VAE: each latent pixel's 16 channels mapped to RGB by one
// fixed linear map, so a server can show progress at every step for about a microsecond per pixel
// (the full decode costs seconds). The map is the one ComfyUI fitted for the Flux VAE's latent space
// (comfy/latent_formats.py, class Flux: latent_rgb_factors and latent_rgb_factors_bias), applied to the
// DiT's latents, which live in the same scaled and shifted space: rgb = W·z + b in [−1, 1], then
// (rgb + 1)/2 to 8 bits. The image has the latent's size, H/8 × W/8.
#pragma once
#include "io/image.h"
#include "tensor/tensor.h"

namespace chroma::vae {

// latent [1, 16, h, w] → an h × w RGB image. Throws chroma::Error for another shape.
io::Image latent_preview(const Tensor& latent);

}  // namespace chroma::vae

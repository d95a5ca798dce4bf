// Images given to a request (img2img's init image, inpainting's mask), brought to the request's
// size and into the model's spaces.
//
// Fitting rule (both images): scaled so that it covers W×H with its aspect ratio kept, then the
// centre W×H cut out; an image already W×H is used as it is. Resampling is separable linear
// interpolation whose kernel widens with the scale factor when shrinking (no aliasing).
#pragma once
#include "io/image.h"
#include "tensor/tensor.h"

namespace chroma::pipeline {

// Cover-and-centre-crop resize to width × height (the rule above).
io::Image fit_image(const io::Image& image, int width, int height);

// 8-bit RGB → [1, 3, H, W] in [−1, 1] (x/127.5 − 1, the inverse of to_rgb8 up to its truncation).
Tensor image_to_tensor(const io::Image& image);

// A mask image → [H, W] in [0, 1]: the mean of its channels / 255 (white = 1 = repaint), blurred with
// a Gaussian of σ = blur/2 px over a radius of `blur` px (0: no blur).
Tensor mask_weights(const io::Image& mask, int blur);

// The pixel mask [H, W] averaged over each 8×8 block: the latent mask [1, 1, H/8, W/8].
Tensor latent_mask(const Tensor& pixel_mask);

// Inpainting's paste-back: where the mask is 0 the original pixel exactly, where it is 1 the
// generated one, blended between: round(m·generated + (1 − m)·original).
std::vector<uint8_t> paste_back(const std::vector<uint8_t>& generated, const std::vector<uint8_t>& original,
                                const Tensor& pixel_mask);

}  // namespace chroma::pipeline

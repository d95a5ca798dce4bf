// Which published Chroma a DiT checkpoint is (issue 9 §3; spec §1.1 "Files").
// Chroma1-HD, Chroma1-Base, DC-2k and Chroma1-Flash have the same tensors, names and shapes: only the
// names the file travels under tell them apart (lodestones' files and the community's quantizations keep
// the variant in the file or repository name: Chroma1-HD.safetensors, Chroma1-Flash-Q8_0.gguf,
// chroma-unlocked-v47-flash-heun-8-steps-cfg-1.safetensors, …). Chroma1-Radiance has tensors of its own
// (img_in_patch, nerf_*). A name that says nothing gives Variant::Chroma, which runs as HD does.
#pragma once
#include <string>

#include "io/safetensors.h"

namespace chroma::dit {

enum class Variant {
  Chroma,    // a latent Chroma whose name does not say which (older chroma-unlocked-vN, merges, finetunes)
  HD,        // Chroma1-HD: the mixed-resolution finetune of Base; the one recommended for inference
  Base,      // Chroma1-Base (= chroma-unlocked-v48): the 512² pretrained model
  DC2k,      // DC-2k: v48-detail-calibrated merged with the 2048² test finetune, for images above 1024²
  Flash,     // Chroma1-Flash: CFG baked in; 8 heun steps at cfg 1, no negative pass
  Radiance,  // Chroma1-Radiance: pixel space, no VAE
};

const char* variant_name(Variant v);  // "Chroma1-HD", …, "Chroma" for the unnamed one
// "chroma", "hd", "base", "dc-2k", "flash", "radiance" (or the names variant_name gives, any case);
// throws chroma::Error naming the text and the choices.
Variant parse_variant(const std::string& text);
std::string variant_choices();  // "chroma, hd, base, dc-2k, flash, radiance"

// The latent variant a checkpoint's path names, case-insensitively: the innermost of its file name and
// the two folders above it (a diffusers folder's "Chroma1-HD/transformer", a pull cache's repository
// folder) that mentions "chroma" decides. Flash before the rest ("Chroma1-HD-Flash" is a Flash), then
// DC-2k, HD, Base (also "unlocked-v48" without "detail-calibrated"); Variant::Chroma otherwise.
// Radiance is recognised by its tensors (detect_variant), not here.
Variant variant_from_path(const std::string& path);

// Radiance when the checkpoint has Radiance's tensors (config.h is_radiance: img_in_patch.weight or
// nerf_final_layer_conv.*), else variant_from_path of the store's path.
Variant detect_variant(const io::WeightStore& weights);

}  // namespace chroma::dit

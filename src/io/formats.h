// Checkpoint formats, recognised from tensor names (never from file names), and their translation
// into the original names and values the models ask for (chroma-spec.md §1):
//   original   BFL / flow DiT and VAE names, HF T5 names, optionally under a UI prefix (§1.1, §1.3, §1.4)
//   diffusers  lodestones/Chroma1-HD transformer/ and vae/ names (§1.2, §1.4); its text_encoder/ has HF names
//   scaled fp8 ComfyUI "scaled" checkpoints: float8_e4m3fn weights, each with a per-tensor
//              "<layer>.scale_weight" (effective weight = stored value × scale) and a "scaled_fp8" marker
//              (comfy `ops.py` scaled_fp8_ops; `text_encoders/sd3_clip.py` t5_xxl_detect)
// The translation copies no weight data: scales ride on the views (TensorView::scale), diffusers'
// split q/k/v become row-concatenated views (TensorView::parts), 1×1 convs stored as Linear are reshaped.
#pragma once
#include <map>
#include <string>

#include "tensor/tensor.h"

namespace chroma::io {

enum class ModelKind { Unknown, DiT, T5, VAE };
enum class Naming { Original, Diffusers };

struct Format {
  ModelKind kind = ModelKind::Unknown;
  Naming naming = Naming::Original;
  bool scaled_fp8 = false;  // per-tensor scales beside (fp8) weights
  // "Chroma DiT, diffusers names, fp8 scaled"
  std::string describe() const;
  bool operator==(const Format&) const = default;
};

// The format of a set of stored tensors (names with or without a UI prefix).
Format detect_format(const std::map<std::string, TensorView>& stored);

// The tensors under original names: scales attached to their weights (scale and marker tensors
// dropped), diffusers names mapped, split projections joined as row-concatenated views. Throws
// chroma::Error naming `where` and the tensor for a missing or misshaped part, a scale without
// its weight, a non-scalar scale, or two stored tensors claiming one original name.
std::map<std::string, TensorView> to_original(const std::map<std::string, TensorView>& stored, const Format& format,
                                              const std::string& where);

}  // namespace chroma::io

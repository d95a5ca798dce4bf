// LoRA adapter files for the Chroma DiT: each adapted Linear W [N, K] gets a low-rank update
//   W' = W + scale · B · A        A "down" [r, K], B "up" [N, r], scale = alpha / r (1 without alpha)
// read from a safetensors file and named after the original module it adapts (chroma-spec.md §1.1).
//
// Key layouts recognised (a module path, then a suffix naming the tensor's role):
//   module paths   original BFL names              double_blocks.0.img_attn.qkv
//                  diffusers names                 transformer_blocks.0.attn.to_q (split q/k/v, linear1
//                                                  parts; io/name_tables.cpp diffusers_dit_names)
//                  either with "_" for "."         kohya/sd-scripts: lora_unet_double_blocks_0_img_attn_qkv,
//                                                  lora_transformer_transformer_blocks_0_attn_to_q
//   prefixes       transformer. diffusion_model. model.diffusion_model. base_model.model.
//                  lora_unet_ lora_transformer_ (the last two: module paths with "_")
//   suffixes       .lora_A(.weight) / .lora_B(.weight)            ai-toolkit, diffusers, PEFT
//                  .lora_down.weight / .lora_up.weight / .alpha   kohya
//                  .lora.down.weight / .lora.up.weight            older ComfyUI exports
// A diffusers part (to_q of a fused qkv, proj_mlp of linear1) adapts one row block of its target:
// `part` of `parts`, the same numbering as the diffusers checkpoint table.
//
// Not supported yet, and refused with an error naming the tensor rather than applied in part:
// LyCORIS LoHa (hada_*), LoKr (lokr_*), DoRA (dora_scale, lora_magnitude_vector), Tucker mid tensors (lora_mid) and full
// weight differences (.diff). Keys that name no DiT Linear (text-encoder LoRAs, Flux-only modules
// such as img_mod) are kept as `unmatched` for the caller's report.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::io {

class SafetensorsFile;

// The low-rank update of one module (or one row block of it).
struct LoraDelta {
  std::string target;        // original module name: "double_blocks.0.img_attn.qkv"
  int part = 0, parts = 1;   // the row block of the target it adapts (parts 1: all rows)
  TensorView down;           // A [r, K] in its stored dtype
  TensorView up;             // B [N_part, r]
  float scale = 1.0f;        // alpha / r
  std::vector<std::string> keys;  // the file's tensors this delta was read from (A, B, alpha)
};

// One LoRA file, mapped: the deltas' views point into it, and copies share the mapping.
class LoraFile {
 public:
  // Reads and checks every tensor (float A and B of rank 2, A's rows = B's columns = the rank, alpha a
  // finite scalar, A and B both present); throws chroma::Error naming the file and the tensor.
  static LoraFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<LoraDelta>& deltas() const { return deltas_; }
  // Keys naming no DiT Linear, sorted.
  const std::vector<std::string>& unmatched() const { return unmatched_; }
  // All tensors in the file (deltas' keys + unmatched).
  size_t key_count() const { return key_count_; }

 private:
  std::string path_;
  std::shared_ptr<const SafetensorsFile> file_;
  std::vector<LoraDelta> deltas_;
  std::vector<std::string> unmatched_;
  size_t key_count_ = 0;
};

}  // namespace chroma::io

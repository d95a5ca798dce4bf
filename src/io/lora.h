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
// LyCORIS adapters on Linears are read too, from the same module paths:
//   LoHa   .hada_w1_a [N, r] .hada_w1_b [r, K] .hada_w2_a [N, r'] .hada_w2_b [r', K] (.alpha)
//          ΔW = (w1a·w1b) ⊙ (w2a·w2b) · alpha/r                       (1 without alpha)
//   LoKr   .lokr_w1 [a, b] or .lokr_w1_a·.lokr_w1_b, .lokr_w2 [c, d] or .lokr_w2_a·.lokr_w2_b (.alpha)
//          ΔW = kron(w1, w2) · alpha/r, [a·c, b·d], r the rank of the decomposed factor (w2's when both
//          are; 1 when neither is or without alpha) — ComfyUI's and LyCORIS's rules.
// Their updates are not low-rank, so the model merges them into its weights (model.h set_loras).
// Not supported yet, and refused with an error naming the tensor rather than applied in part:
// Tucker-decomposed LoHa/LoKr (hada_t1/t2, lokr_t2: convolutions), DoRA (dora_scale,
// lora_magnitude_vector), Tucker mid tensors (lora_mid) and full weight differences (.diff). Keys that name no DiT Linear (text-encoder LoRAs, Flux-only modules
// such as img_mod) are kept as `unmatched` for the caller's report.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace chroma::io {

class SafetensorsFile;

// The update of one module (or one row block of it).
struct LoraDelta {
  enum class Kind { LowRank, LoHa, LoKr };
  std::string target;        // original module name: "double_blocks.0.img_attn.qkv"
  int part = 0, parts = 1;   // the row block of the target it adapts (parts 1: all rows)
  Kind kind = Kind::LowRank;
  TensorView down;           // LowRank: A [r, K] in its stored dtype
  TensorView up;             // LowRank: B [N_part, r]
  // LoHa: w1a, w1b, w2a, w2b. LoKr: w1 (or w1a·w1b) and w2 (or w2a·w2b); unset views are absent.
  TensorView w1, w1a, w1b, w2, w2a, w2b;
  float scale = 1.0f;        // alpha / r
  std::vector<std::string> keys;  // the file's tensors this delta was read from (A, B, alpha)
  // The update's shape [N_part, K] (from its factors).
  Shape shape() const;
};

// One LoRA file, mapped: the deltas' views point into it, and copies share the mapping.
class LoraFile {
 public:
  // Reads and checks every tensor (float matrices whose inner sizes agree, every factor of a module
  // present, alpha a finite scalar, one adapter kind per module); throws chroma::Error naming the
  // file and the tensor.
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

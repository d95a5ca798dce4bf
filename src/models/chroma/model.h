// The Chroma DiT (lodestones; FLUX.1-schnell-derived) — chroma-spec.md §3.
// One forward predicts the flow velocity of a latent, given T5 text features and the modulation
// vectors of the current timestep.
//
// Size legend (real model / chroma-mini):
//   C hidden (3072 / 256)   H heads (24 / 2)   D head dim (128)   M MLP hidden (12288 / 1024)
//   Cl latent channels (16) h×w latent size (even)   Li = (h/2)·(w/2) image tokens
//   Lt visible text tokens   L = Lt + Li   T context dim (4096 / 128)   R = mod_rows (344 / 32)
//
// Text: the author's pipeline masks all but n_valid + 1 text tokens (reference README §3.2); a
// forward on only those visible rows with no mask gives the same velocity, so forward() takes
// just the visible rows and runs attention unmasked (spec §2.3, §3.10).
//
// Precision: float32 activations; weights stay in their stored dtype and are widened inside the
// kernels. Timestep embedding in float32 by default (spec §6.2; TimestepPrecision::BF16 reproduces
// the author's sampler), modulation-index table from exact float32 products (spec §6.1).
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/lora.h"
#include "io/residency.h"
#include "io/safetensors.h"
#include "models/chroma/config.h"
#include "models/chroma/embeddings.h"
#include "models/chroma/weights.h"
#include "tensor/tensor.h"

namespace chroma::dit {

// How the timestep reaches the approximator (spec §6.2).
enum class TimestepPrecision {
  F32,   // 1000·t and its embedding in float32 (ComfyUI; this project's default)
  BF16,  // t, 1000·t and the embedding rounded to bf16 (flow's sampler and trainer)
};

// How set_loras applies the low-rank updates (io/lora.h).
enum class LoraMode {
  // y = W·x + b + Σ s·B·(A·x) inside each adapted linear: base weights untouched, so any base dtype
  // (bf16, fp8 scaled, GGUF) works; two small extra products per adapted linear and call.
  Runtime,
  // W' = W + Σ s·B·A merged once (in float32) into copies of the adapted weights stored in the
  // base's type — bf16 stays bf16, a GGUF block type is quantized again, fp8 scaled becomes bf16 —
  // which the model then owns in memory (as many bytes as the base layers): no extra work per step.
  Fuse,
};

// One LoRA to apply, at a strength multiplying its alpha/r scale (0: loaded and checked, no effect).
struct LoraSetting {
  io::LoraFile file;
  float strength = 1.0f;
};

// What set_loras did with one LoRA file; applied_keys + unmatched_keys.size() = the file's tensors.
struct LoraReport {
  std::string path;
  size_t applied_keys = 0;                  // tensors (A, B, alpha) adapting a layer of this model
  std::vector<std::string> unmatched_keys;  // tensors that name no layer of this model (warn about them)
};

// The type LoraMode::Fuse stores a merged weight of base type `base` in: the base's own where we can
// encode it (f32, f16, bf16, GGUF block types), bf16 otherwise (fp8 scaled).
DType fused_dtype(DType base);

// A weight with a LoRA merged in (LoraMode::Fuse), owned by the model.
struct FusedWeight {
  std::vector<uint8_t> bytes;  // the weight in view.dtype
  TensorView view;             // of bytes
};

// First-block cache (`--cache fbcache:T`; the "first block cache" of ParaAttention, also known from
// WaveSpeed and TeaCache's family): between consecutive evaluations of one run, the first double
// block's change to the image stream, r = img after block 0 − img before, is compared with r of the
// last evaluation that ran every block; when mean|r − r_last| / mean|r_last| < T the remaining
// blocks are skipped and their residual from that evaluation (final image rows − img after block 0)
// is added instead. One cache per image of a run; a change in the packed sequences' shape (e.g. CFG
// switching on) runs every block.
struct StepCache {
  explicit StepCache(float threshold) : threshold(threshold) {}
  float threshold;           // > 0
  Tensor first_residual;     // r of the last full evaluation      [S·Li, C]
  Tensor rest_residual;      // its remaining blocks' residual     [S·Li, C]
  int evaluations = 0, skipped = 0;
};

class ChromaModel {
 public:
  // Checks every tensor (presence, shape, float dtype) now, with or without the
  // "model.diffusion_model." prefix; throws chroma::Error naming the first bad one.
  // Keeps a copy of the store, which keeps the mapped files alive. With Residency::ReleaseAfterUse
  // (--low-memory) each block's and the approximator's weight pages are dropped after use, so at
  // most one block's weights are resident at a time (io/residency.h); results are unchanged.
  explicit ChromaModel(const io::WeightStore& weights, io::Residency residency = io::Residency::Keep);

  const ChromaConfig& config() const { return config_; }
  // The weights forwards use: the checkpoint's, with set_loras' adapters or fused copies.
  const ChromaWeights& weights() const { return weights_; }

  // §3.4 the approximator output for flow time t ∈ [0, 1] (guidance input 0, spec §4.4): [R, C].
  // Depends on t only: compute once per step and share between the CFG passes.
  // Traces "approx_input" [R, 64] and "mod_vectors" [R, C].
  Tensor modulations(float t, TimestepPrecision precision = TimestepPrecision::F32) const;

  // §3.1–§3.9 latent [1, Cl, h, w] (h, w even), txt [Lt, T] (the visible text rows, Lt ≥ 1),
  // mods [R, C] from modulations(). Returns the velocity [1, Cl, h, w].
  // Traces img_packed [Li, 64], img_in [Li, C], txt_in_visible [Lt, C], double.{i}.img [Li, C],
  // double.{i}.txt_visible [Lt, C], single.{i}.joint_visible [L, C], final_out [Li, 64].
  // The packed forward with one sequence.
  // Chroma1-Radiance (docs/radiance.md): `latent` is the image [1, 3, H, W] (H, W multiples of
  // config().token_patch()) and the result its velocity [1, 3, H, W]; an x0 model (__x0__) needs the
  // flow time t of `mods` to turn its x0 prediction into the velocity (x_t − x0)/t. Latent models
  // ignore t. Radiance traces img_in, the blocks' names, nerf_features [h, H, W] and nerf_out.
  Tensor forward(const Tensor& latent, const Tensor& txt, const Tensor& mods, std::optional<float> t = std::nullopt) const;

  // One text condition of a packed forward.
  struct TextInput {
    TextInput(const Tensor& txt, std::string trace_prefix = "") : txt(txt), trace_prefix(std::move(trace_prefix)) {}
    const Tensor& txt;         // [Lt_s, T] the visible text rows of this prompt, Lt_s ≥ 1
    std::string trace_prefix;  // this sequence's intermediates are traced as trace_prefix + name
  };
  // S forwards of the same latent under S text conditions (e.g. {positive, negative} for CFG) in
  // one pass: the S joint sequences [txt_s; img] are packed into one token matrix so each weight
  // multiplies the rows of all S sequences at once (one pass over the weights instead of S); the
  // attention stays per sequence (ops::attention seq_lens, no padding, no mask), so each velocity
  // equals forward(latent, txts[s].txt, mods). Returns S velocities [1, Cl, h, w], in input order.
  // Row layouts, L_s = Lt_s + Li:
  //   joint (single blocks, attention)  [txt_0; img_0; txt_1; img_1; …]   [Σ L_s, C]
  //   streams (double-block linears)    txt [txt_0; txt_1; …] [Σ Lt_s, C], img [img_0; img_1; …] [S·Li, C]
  // Traces the same names as forward(), per sequence, under its trace_prefix.
  // With `cache`, the blocks after the first may be skipped (StepCache).
  std::vector<Tensor> forward_packed(const Tensor& latent, const std::vector<TextInput>& txts,
                                     const Tensor& mods, StepCache* cache = nullptr,
                                     std::optional<float> t = std::nullopt) const;

  // Replaces the adapters of every later forward and modulations() call by `loras` (summed where
  // several adapt one layer), without reading the base weights again: only the adapter state is
  // rebuilt. An empty list returns to the base model exactly. All LoRAs are checked before any takes
  // effect; on an error (a LoRA that adapts nothing, a shape that does not fit its layer) the model
  // keeps its previous adapters and chroma::Error names the file and the tensor.
  // Not to be called while another thread runs a forward on this model.
  std::vector<LoraReport> set_loras(std::span<const LoraSetting> loras, LoraMode mode = LoraMode::Runtime);

 private:
  io::WeightStore store_;   // owns the mapped files the views below point into
  ChromaConfig config_;
  ChromaWeights base_weights_;  // views of the store only
  // What forwards use: base_weights_ plus the adapters of set_loras, whose views point into
  // lora_files_ (runtime) or fused_ (fuse mode). Shared and immutable, so copies of the model stay valid.
  ChromaWeights weights_;
  std::vector<io::LoraFile> lora_files_;
  std::vector<std::shared_ptr<const FusedWeight>> fused_;
  Tensor index_table_;      // [R, 32] modulation-index embeddings, constant (spec §3.4)
  io::Residency residency_;
  std::string prefix_;      // weight_prefix() of the store

  // In ReleaseAfterUse mode: drops the pages of the weight group that has just run (e.g.
  // "double_blocks.3.") and starts reading the group that runs next (io/residency.h).
  void done_with(const std::string& group, const std::string& next) const;
};

}  // namespace chroma::dit

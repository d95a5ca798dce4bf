// Views of every Chroma DiT tensor, named after the checkpoint (chroma-spec.md §1.1), shapes in
// PyTorch [out, in] order. Views borrow the mapped file: the WeightStore must outlive them.
//
// Size legend: C hidden (3072), H heads, D head dim (128), M MLP hidden (12288), P packed patch
// width (64), T context dim (4096), A approximator in (64), X approximator hidden (5120).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/chroma/config.h"
#include "tensor/tensor.h"

namespace chroma::dit {

// One LoRA's low-rank update of a linear layer, applied beside the weight: y += B·(A·x)
// (ChromaModel::set_loras, runtime mode). Views into the LoRA file, in its stored dtype.
struct LowRankWeights {
  TensorView down;  // A [r, in]
  TensorView up;    // B [out, r], its view scale = the LoRA's alpha/r × strength
};

struct LinearWeights {
  TensorView weight;  // [out, in]
  TensorView bias;    // [out]
  std::vector<LowRankWeights> lora = {};  // none in the base model
  // LoHa / LoKr updates of this block, dense [out, in] float32 with their scale applied; set_loras
  // merges them into the weight (they are not low-rank), so forwards never see them.
  std::vector<std::shared_ptr<const Tensor>> dense_lora = {};
};

// distilled_guidance_layer.* (spec §3.4)
struct ApproximatorLayerWeights {
  TensorView norm;         // norms.{i}.scale              [X]
  LinearWeights in_layer;  // layers.{i}.in_layer           [X, X]
  LinearWeights out_layer; // layers.{i}.out_layer          [X, X]
};
struct ApproximatorWeights {
  LinearWeights in_proj;                          // [X, A]
  std::vector<ApproximatorLayerWeights> layers;
  LinearWeights out_proj;                         // [C, X]
};

// The query/key/value projections and QK-norm scales of one attention (spec §3.7 steps 1–2).
// They are packed row blocks Q | K | V of one matrix (qkv or linear1, spec §1.1), held as row views.
struct QkvWeights {
  LinearWeights q, k, v;   // rows [0, C), [C, 2C), [2C, 3C)   each [C, C]
  TensorView query_norm;   // norm.query_norm.scale            [D]
  TensorView key_norm;     // norm.key_norm.scale              [D]
};
// {img,txt}_attn.* of a double block
struct AttentionWeights {
  QkvWeights qkv;      // qkv.weight/.bias [3C, C] and norm.*
  LinearWeights proj;  // proj             [C, C]
};
// {img,txt}_mlp.0 and .2 (index 1 is the GELU)
struct MlpWeights {
  LinearWeights fc1;  // mlp.0  [M, C]
  LinearWeights fc2;  // mlp.2  [C, M]
};
// double_blocks.{i} (spec §3.7)
struct DoubleBlockWeights {
  AttentionWeights img_attn, txt_attn;
  MlpWeights img_mlp, txt_mlp;
};
// single_blocks.{i} (spec §3.8). linear1 rows are Q | K | V | MLP fc1.
struct SingleBlockWeights {
  QkvWeights qkv;          // linear1 rows [0, 3C) and norm.*
  LinearWeights mlp_in;    // linear1 rows [3C, 3C + M)   [M, C]
  LinearWeights linear2;   // [C, C + M]: columns [0, C) read the attention, [C, C + M) GELU(mlp)
};

// Chroma1-Radiance's pixel path (docs/radiance.md §1). Size legend: h NeRF width (64), F² DCT
// features (64), r·h generated MLP width (256), p conv patch (16), Ci image channels (3).
struct NerfBlockWeights {
  LinearWeights param_generator;  // nerf_blocks.{i}.param_generator  [3·h·(r·h), C]
  TensorView norm;                // nerf_blocks.{i}.norm.scale       [h]
};
struct RadianceWeights {
  TensorView patch_weight;  // img_in_patch.weight  [C, Ci, p, p]
  TensorView patch_bias;    // img_in_patch.bias    [C]
  LinearWeights embedder;   // nerf_image_embedder.embedder.0  [h, Ci + F²]
  std::vector<NerfBlockWeights> blocks;
  TensorView final_norm;    // nerf_final_layer_conv.norm.scale   [h]
  TensorView conv_weight;   // nerf_final_layer_conv.conv.weight  [Ci, h, 3, 3]
  TensorView conv_bias;     // nerf_final_layer_conv.conv.bias    [Ci]
};

struct ChromaWeights {
  RadianceWeights radiance;  // Architecture::Radiance only (then img_in and final_linear are empty)
  LinearWeights img_in;  // [C, P]
  LinearWeights txt_in;  // [C, T]
  ApproximatorWeights approximator;
  std::vector<DoubleBlockWeights> double_blocks;
  std::vector<SingleBlockWeights> single_blocks;
  LinearWeights final_linear;  // final_layer.linear  [P, C]
};

// Looks up every tensor the config implies (under weight_prefix()) and checks its shape and float
// dtype; throws chroma::Error naming the first missing or misshaped tensor.
ChromaWeights load_weights(const io::WeightStore& store, const ChromaConfig& config);

// Every Linear of `w` under its original module name ("double_blocks.0.img_attn.qkv"), as the row
// blocks the model multiplies with, in row order: qkv → q, k, v; linear1 → q, k, v, mlp_in; any
// other layer → itself. Pointers into `w`. For attaching LoRA updates (io/lora.h targets).
std::map<std::string, std::vector<LinearWeights*>> linear_layers(ChromaWeights& w);

}  // namespace chroma::dit

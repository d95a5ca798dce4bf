// Building blocks of the Flux VAE (chroma-spec.md §5; bfl `src/flux/modules/autoencoder.py`), shared by
// the encoder and the decoder. Weight fields are named after the checkpoint tensors; each struct
// holds borrowed views of the stored tensors (stored dtype, never copied).
//
// Activations are images [C, H, W] (backend/ops.h). Every block takes its input by value and
// frees what it no longer needs before allocating the next full-size tensor: at 1024² the
// decoder's last level works on [128, 1024, 1024] tensors of 512 MB each, so callers should pass
// `std::move(x)`.
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace chroma::vae {

struct VaeConfig;

struct GroupNormWeights {
  TensorView weight;  // [C]
  TensorView bias;    // [C]
};

struct ConvWeights {
  TensorView weight;  // [C_out, C_in, k, k]
  TensorView bias;    // [C_out]
  explicit operator bool() const { return bool(weight); }
};

// bfl ResnetBlock: "<prefix>.norm1", ".conv1", ".norm2", ".conv2" and, only when C_in ≠ C_out,
// ".nin_shortcut" (a 1×1 conv on the skip path).
struct ResnetBlockWeights {
  GroupNormWeights norm1;    // [C_in]
  ConvWeights conv1;         // [C_out, C_in, 3, 3]
  GroupNormWeights norm2;    // [C_out]
  ConvWeights conv2;         // [C_out, C_out, 3, 3]
  ConvWeights nin_shortcut;  // [C_out, C_in, 1, 1], empty when C_in == C_out
};

// bfl AttnBlock: "<prefix>.norm", ".q", ".k", ".v", ".proj_out" (1×1 convs [C, C, 1, 1]).
struct AttnBlockWeights {
  GroupNormWeights norm;
  ConvWeights q, k, v, proj_out;
};

// "<encoder|decoder>.mid": block_1, attn_1, block_2, all at the deepest level's width.
struct MidWeights {
  ResnetBlockWeights block_1;
  AttnBlockWeights attn_1;
  ResnetBlockWeights block_2;
};

// "encoder.down.{l}": num_res_blocks ResnetBlocks, then "downsample.conv" except at the last level.
struct EncoderLevelWeights {
  std::vector<ResnetBlockWeights> block;
  ConvWeights downsample;  // [C, C, 3, 3], empty at the last level
};

// "decoder.up.{l}": num_res_blocks + 1 ResnetBlocks, then "upsample.conv" except at level 0.
// Level l runs at the width of encoder level l; the decoder walks the levels from the last to 0.
struct DecoderLevelWeights {
  std::vector<ResnetBlockWeights> block;
  ConvWeights upsample;  // [C, C, 3, 3], empty at level 0
};

struct EncoderWeights {
  ConvWeights conv_in;                     // [ch, in_channels, 3, 3]
  std::vector<EncoderLevelWeights> down;   // one per level
  MidWeights mid;
  GroupNormWeights norm_out;               // [C_last]
  ConvWeights conv_out;                    // [2·z, C_last, 3, 3]: mean and logvar
};

struct DecoderWeights {
  ConvWeights conv_in;                     // [C_last, z, 3, 3]
  MidWeights mid;
  std::vector<DecoderLevelWeights> up;     // indexed by level (up[0] is the last one run)
  GroupNormWeights norm_out;               // [ch]
  ConvWeights conv_out;                    // [out_channels, ch, 3, 3]
};

// Loaders: require every tensor under `prefix` with the shape the config implies, so that a
// missing or misshaped tensor is reported (by name) when the model is built, not mid-run.
GroupNormWeights load_group_norm(const io::WeightStore& ws, const std::string& prefix, int channels,
                                 const VaeConfig& cfg);
ConvWeights load_conv(const io::WeightStore& ws, const std::string& prefix, int c_in, int c_out, int kernel);
ResnetBlockWeights load_resnet_block(const io::WeightStore& ws, const std::string& prefix, int c_in, int c_out,
                                     const VaeConfig& cfg);
MidWeights load_mid(const io::WeightStore& ws, const std::string& prefix, int channels, const VaeConfig& cfg);

// The API boundary: checks that x is [1, channels, H, W] (else chroma::Error naming `what` and the
// shape) and returns its data as [channels, H, W].
Tensor unbatch(const Tensor& x, int channels, const std::string& what);

// Forward passes. x: [C_in, H, W].
Tensor conv3x3(const Tensor& x, const ConvWeights& w);                              // → [C_out, H, W]
Tensor resnet_block(Tensor x, const ResnetBlockWeights& w, const VaeConfig& cfg);   // → [C_out, H, W]
Tensor attn_block(Tensor x, const AttnBlockWeights& w, const VaeConfig& cfg);       // → [C, H, W]
Tensor mid_block(Tensor x, const MidWeights& w, const VaeConfig& cfg);              // → [C, H, W]
Tensor upsample(Tensor x, const ConvWeights& conv);                                 // → [C, 2H, 2W]
Tensor downsample(Tensor x, const ConvWeights& conv);                               // → [C, H/2, W/2]
// The head of both halves: GroupNorm → SiLU → conv_out 3×3.
Tensor norm_silu_conv_out(Tensor x, const GroupNormWeights& norm, const ConvWeights& conv_out,
                          const VaeConfig& cfg);                                    // → [C_out, H, W]

}  // namespace chroma::vae

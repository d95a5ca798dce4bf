// T5 v1.1 encoder (google/t5-v1_1-xxl, Hugging Face tensor names) — chroma-spec.md §1.3, §2.4.
// Turns token ids into the text features the Chroma DiT reads.
//
// Sizes used in shape comments:
//   n  valid ids (text + EOS), 1 ≤ n ≤ 512         C  d_model (4096 in T5-XXL)
//   H  heads (64)      D  d_kv (64)      F  d_ff (10240)      V  vocab (32128)
//
// Padding (spec §2.2, §2.3; reference README §3.2): the author's pipeline (flow) pads the ids to 512
// and masks T5 attention with the outer product m·mᵀ. Valid rows then attend only to valid rows, so
// we compute them on the unpadded sequence. Every padding row is fully masked, attends uniformly to
// all 512 positions in every layer, and all padding rows stay identical; the DiT sees exactly one of
// them. encode() therefore returns the n valid rows plus that one padding row, computed directly.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/residency.h"
#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace chroma::t5 {

// How a prompt's padding is treated (spec §2.2, §2.3.3): which padding row the DiT sees, if any. The
// valid rows are the same in Flow, KeyMasked and None (valid rows attend to valid rows only).
enum class Padding {
  Flow,       // the author's: ids padded to 512, outer-product mask; the padding row attends uniformly
              // to all 512 positions (the default; the reference data's)
  KeyMasked,  // Hugging Face / diffusers: a key-padding mask; the padding row at position n attends to
              // the n valid rows, with its relative-position bias
  None,       // ComfyUI: no padding, no mask; no padding row (encode returns [n, C])
  Unmasked,   // sd.cpp: ids padded to 512 and no T5 mask, every row attends to all 512; the first
              // n + 1 rows are returned
};

// Length the author's tokenizer pads to (spec §2.1); the padding row depends on it.
inline constexpr int kPaddedLength = 512;
// Id of <pad> (spec §2.1); the padding row starts as its embedding.
inline constexpr int32_t kPadId = 0;

struct T5Config {
  int d_model = 0;  // C: shared.weight columns
  int d_kv = 0;     // D: q.weight rows / heads
  int heads = 0;    // H: relative_attention_bias.weight columns
  int d_ff = 0;     // F: wi_0.weight rows
  int layers = 0;   // number of encoder.block.N
  int vocab = 0;    // V: shared.weight rows
  int buckets = 0;  // relative_attention_bias.weight rows
  // Not visible in the weights; T5 v1.1 values (spec §1.3).
  int max_distance = 128;
  float eps = 1e-6f;

  // Every size from tensor names and shapes; throws chroma::Error naming a missing or malformed tensor.
  static T5Config from_weights(const io::WeightStore& weights);
};

// Bucket of a relative position k − q for bidirectional T5 attention (spec §2.4): half the buckets
// for k > q, half for k ≤ q; exact below buckets/4, logarithmic up to max_distance, clamped after.
int relative_position_bucket(int64_t relative_position, int buckets, int max_distance);

class T5Encoder {
 public:
  // Checks every tensor (presence, shape, float dtype) now; throws chroma::Error naming the first bad
  // one. Keeps a copy of the store, which keeps the mapped files alive. With
  // Residency::ReleaseAfterUse (--low-memory) each block's weight pages are dropped after the block
  // has run (io/residency.h); results are unchanged.
  explicit T5Encoder(const io::WeightStore& weights, io::Residency residency = io::Residency::Keep);

  const T5Config& config() const { return config_; }

  // One prompt of a batch.
  struct Prompt {
    Prompt(std::span<const int32_t> ids, std::string trace_prefix = "", Padding padding = Padding::Flow)
        : ids(ids), trace_prefix(std::move(trace_prefix)), padding(padding) {}
    std::span<const int32_t> ids;  // the n valid ids including the final EOS, each in [0, V)
    std::string trace_prefix;      // this prompt's intermediates are traced as trace_prefix + name
    Padding padding;
  };

  // Encodes the prompts in one pass over the weights: their rows are stacked into one matrix, so each
  // linear, RMSNorm and GELU runs once for all of them (T5 at a few dozen rows is bound by reading
  // the weights); only attention keeps them apart. Element s is what encode(prompts[s].ids) returns,
  // up to float32 summation order. Traces encode()'s names per prompt, under its trace_prefix.
  std::vector<Tensor> encode_batch(const std::vector<Prompt>& prompts) const;

  // ids: the n valid ids including the final EOS, each in [0, V).
  // Returns [n + 1, C]: the n valid rows, then the one padding row the DiT sees; [512, C] when n == 512
  // (no padding); [n, C] with Padding::None. Traces "layer.<i>" (residual stream after block i) and
  // "hidden" (the result).
  Tensor encode(std::span<const int32_t> ids, Padding padding = Padding::Flow) const;

 private:
  struct Packing;  // where each prompt's rows lie in the stacked matrix (t5.cpp)

  // encoder.block.{i}; shapes in the legend above.
  struct Block {
    TensorView attn_norm;  // layer.0.layer_norm.weight            [C]
    TensorView q, k, v;    // layer.0.SelfAttention.{q,k,v}.weight [H·D, C]
    TensorView o;          // layer.0.SelfAttention.o.weight       [C, H·D]
    TensorView ff_norm;    // layer.1.layer_norm.weight            [C]
    TensorView wi_0;       // layer.1.DenseReluDense.wi_0.weight   [F, C] (gate, through GELU)
    TensorView wi_1;       // layer.1.DenseReluDense.wi_1.weight   [F, C]
    TensorView wo;         // layer.1.DenseReluDense.wo.weight     [C, F]
  };

  Tensor embed(const std::vector<Prompt>& prompts, const Packing& p) const;
  Tensor relative_position_bias(int64_t n) const;
  void block(Tensor& x, const Block& w, const Tensor& bias, const Packing& p) const;
  Tensor self_attention(const Tensor& h, const Block& w, const Tensor& bias, const Packing& p) const;
  Tensor feed_forward(const Tensor& h, const Block& w) const;
  void key_masked_pad_attention(const float* q, const float* k, const float* v, int64_t n, float* out) const;

  io::WeightStore weights_;
  T5Config config_;
  TensorView shared_;          // shared.weight                                      [V, C]
  Tensor relative_bias_;       // block 0's relative_attention_bias.weight, widened  [buckets, H]
  std::vector<Block> blocks_;  // [layers]
  TensorView final_norm_;      // encoder.final_layer_norm.weight                    [C]
  io::Residency residency_;
};

}  // namespace chroma::t5

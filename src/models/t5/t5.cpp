#include "models/t5/t5.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "tensor/trace.h"

namespace chroma::t5 {
namespace {

std::string block_name(int i, const std::string& rest) { return "encoder.block." + std::to_string(i) + "." + rest; }

const char* const kRelativeBias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";

// The named tensor, checked to have `rank` dimensions (its sizes are what we infer from).
const TensorView& require_rank(const io::WeightStore& weights, const std::string& name, size_t rank) {
  const TensorView& t = weights.require(name);
  if (t.shape.size() != rank)
    throw Error(t.file + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " +
                std::to_string(rank) + " dimensions");
  return t;
}

}  // namespace

// spec §1.3: every size is visible in the tensor shapes except max_distance and eps.
T5Config T5Config::from_weights(const io::WeightStore& weights) {
  T5Config c;
  const TensorView& shared = require_rank(weights, "shared.weight", 2);           // [V, C]
  c.vocab = int(shared.dim(0));
  c.d_model = int(shared.dim(1));
  const TensorView& rel = require_rank(weights, kRelativeBias, 2);                 // [buckets, H]
  c.buckets = int(rel.dim(0));
  c.heads = int(rel.dim(1));
  const std::string q_name = block_name(0, "layer.0.SelfAttention.q.weight");
  const TensorView& q = require_rank(weights, q_name, 2);                          // [H·D, C]
  if (c.heads <= 0 || q.dim(0) % c.heads != 0)
    throw Error(q.file + ": tensor '" + q_name + "' has " + std::to_string(q.dim(0)) +
                " rows, not a multiple of the " + std::to_string(c.heads) + " heads in '" + kRelativeBias + "'");
  c.d_kv = int(q.dim(0) / c.heads);
  c.d_ff = int(require_rank(weights, block_name(0, "layer.1.DenseReluDense.wi_0.weight"), 2).dim(0));  // [F, C]
  c.layers = weights.count_indexed("encoder.block.");
  // The bidirectional bucketing needs an even count with room for exact and log buckets.
  if (c.buckets < 4 || c.buckets % 2 != 0)
    throw Error(rel.file + ": tensor '" + std::string(kRelativeBias) + "' has " + std::to_string(c.buckets) +
                " rows (relative-position buckets), expected an even number ≥ 4");
  return c;
}

// spec §2.4 (HF/flow `_relative_position_bucket`, bidirectional). Float32 log like the reference.
int relative_position_bucket(int64_t relative_position, int buckets, int max_distance) {
  const int half = buckets / 2;    // one half for keys after the query, one for the rest
  const int max_exact = half / 2;  // offsets below this get a bucket each
  int bucket = relative_position > 0 ? half : 0;
  const int64_t n = relative_position < 0 ? -relative_position : relative_position;
  if (n < max_exact) return bucket + int(n);
  const float log_ratio = std::log(float(n) / float(max_exact)) /
                          float(std::log(double(max_distance) / double(max_exact)));
  const int64_t large = max_exact + int64_t(log_ratio * float(half - max_exact));  // truncation, as .to(long)
  return bucket + int(std::min<int64_t>(large, half - 1));
}

T5Encoder::T5Encoder(const io::WeightStore& weights, io::Residency residency)
    : weights_(weights), config_(T5Config::from_weights(weights)), residency_(residency) {
  const T5Config& c = config_;
  const int64_t C = c.d_model, HD = int64_t(c.heads) * c.d_kv, F = c.d_ff;
  shared_ = weights_.require("shared.weight", {c.vocab, C});
  relative_bias_ = weights_.require(kRelativeBias, {c.buckets, c.heads}).to_f32();
  for (int i = 0; i < c.layers; ++i) {
    Block b;
    b.attn_norm = weights_.require(block_name(i, "layer.0.layer_norm.weight"), {C});
    b.q = weights_.require(block_name(i, "layer.0.SelfAttention.q.weight"), {HD, C});
    b.k = weights_.require(block_name(i, "layer.0.SelfAttention.k.weight"), {HD, C});
    b.v = weights_.require(block_name(i, "layer.0.SelfAttention.v.weight"), {HD, C});
    b.o = weights_.require(block_name(i, "layer.0.SelfAttention.o.weight"), {C, HD});
    b.ff_norm = weights_.require(block_name(i, "layer.1.layer_norm.weight"), {C});
    b.wi_0 = weights_.require(block_name(i, "layer.1.DenseReluDense.wi_0.weight"), {F, C});
    b.wi_1 = weights_.require(block_name(i, "layer.1.DenseReluDense.wi_1.weight"), {F, C});
    b.wo = weights_.require(block_name(i, "layer.1.DenseReluDense.wo.weight"), {C, F});
    blocks_.push_back(b);
  }
  final_norm_ = weights_.require("encoder.final_layer_norm.weight", {C});
}

// Rows of a batch in the stacked matrix: the valid rows of every prompt, prompt after prompt, then
// the padding rows of the prompts shorter than 512, in the same order. Row-wise steps see one matrix;
// attention takes the valid rows as packed sequences and computes the padding rows itself.
// With Padding::Unmasked the 512 padded ids are all "valid" rows (they attend to each other
// unmasked), and the first n + 1 are returned; Padding::None has no padding row.
struct T5Encoder::Packing {
  std::vector<int64_t> lens;     // rows of prompt s in the packed attention: n_s, or 512 (Unmasked)
  std::vector<int64_t> begin;    // first valid row of prompt s
  std::vector<int64_t> out_rows; // of those, the rows returned: n_s, or n_s + 1 (Unmasked, at most 512)
  std::vector<int64_t> pad_row;  // row of prompt s's padding row (Flow, KeyMasked); −1 when none
  std::vector<Padding> padding;  // prompt s's
  int64_t valid_rows = 0;        // Σ lens
  int64_t rows = 0;              // valid rows + padding rows
  int64_t longest = 0;           // max lens: the relative-position bias covers it

  explicit Packing(const std::vector<Prompt>& prompts) {
    if (prompts.empty()) throw Error("t5: no prompts to encode");
    for (const Prompt& prompt : prompts) {
      const int64_t n = int64_t(prompt.ids.size());
      if (n < 1 || n > kPaddedLength)
        throw Error("t5: " + std::to_string(n) + " token ids, expected 1.." + std::to_string(kPaddedLength) +
                    " (text + EOS)");
      const bool unmasked = prompt.padding == Padding::Unmasked;
      lens.push_back(unmasked ? kPaddedLength : n);
      out_rows.push_back(unmasked ? std::min<int64_t>(n + 1, kPaddedLength) : n);
      padding.push_back(prompt.padding);
      begin.push_back(valid_rows);
      valid_rows += lens.back();
      longest = std::max(longest, lens.back());
    }
    rows = valid_rows;
    for (size_t s = 0; s < lens.size(); ++s) {
      const bool has_row = (padding[s] == Padding::Flow || padding[s] == Padding::KeyMasked) && lens[s] < kPaddedLength;
      pad_row.push_back(has_row ? rows++ : -1);
    }
  }

  // Prompt s's rows of x, as encode() returns them: [n_s(+1), ·].
  Tensor of(const Tensor& x, size_t s) const {
    const Tensor valid = x.rows(begin[s], begin[s] + out_rows[s]);
    return pad_row[s] < 0 ? valid : ops::concat_rows(valid, x.rows(pad_row[s], pad_row[s] + 1));
  }

  // Traces prompt s's rows of x under its prefix (copies only while a tracer is installed).
  void trace_prompts(const std::string& name, const Tensor& x, const std::vector<Prompt>& prompts) const {
    if (!tracing()) return;
    for (size_t s = 0; s < prompts.size(); ++s) trace(prompts[s].trace_prefix + name, of(x, s));
  }
};

// spec §2.4: per block pre-RMSNorm self-attention and gated FF, each added to the residual; then
// the final RMSNorm. The stream holds every prompt's valid rows and padding row (Packing).
std::vector<Tensor> T5Encoder::encode_batch(const std::vector<Prompt>& prompts) const {
  const Packing p(prompts);
  Tensor x = embed(prompts, p);                           // [rows, C]
  const Tensor bias = relative_position_bias(p.longest);  // [H, n_max, n_max]
  io::prefetch_pages(weights_, block_name(0, ""));
  for (int i = 0; i < config_.layers; ++i) {
    // Weights are read once per run, in order: let the kernel read the next block while this one runs.
    if (i + 1 < config_.layers) io::prefetch_pages(weights_, block_name(i + 1, ""));
    block(x, blocks_[size_t(i)], bias, p);
    if (residency_ == io::Residency::ReleaseAfterUse) io::release_pages(weights_, block_name(i, ""));  // io/residency.h
    p.trace_prompts("layer." + std::to_string(i), x, prompts);
  }
  const Tensor hidden = ops::rms_norm(x, final_norm_, config_.eps);  // [rows, C]
  p.trace_prompts("hidden", hidden, prompts);
  std::vector<Tensor> out;
  for (size_t s = 0; s < prompts.size(); ++s) out.push_back(p.of(hidden, s));
  return out;
}

Tensor T5Encoder::encode(std::span<const int32_t> ids, Padding padding) const {
  return encode_batch({Prompt(ids, "", padding)})[0];
}

// Rows of shared.weight, no scaling (spec §1.3); each padding row is <pad>'s embedding.
Tensor T5Encoder::embed(const std::vector<Prompt>& prompts, const Packing& p) const {
  std::vector<int64_t> ids(size_t(p.rows), kPadId);
  auto put = [&](int64_t row, int32_t id, int64_t position) {
    if (id < 0 || id >= config_.vocab)
      throw Error("t5: token id " + std::to_string(id) + " at position " + std::to_string(position) +
                  " is outside the vocabulary of " + std::to_string(config_.vocab) + " (shared.weight rows)");
    ids[size_t(row)] = id;
  };
  for (size_t s = 0; s < prompts.size(); ++s) {
    const auto n = int64_t(prompts[s].ids.size());  // Unmasked: the ids, then <pad> up to 512
    for (int64_t i = 0; i < p.lens[s]; ++i) put(p.begin[s] + i, i < n ? prompts[s].ids[size_t(i)] : kPadId, i);
    if (p.pad_row[s] >= 0) put(p.pad_row[s], kPadId, p.lens[s]);
  }
  return ops::gather_rows(shared_, ids);  // [rows, C]
}

// bias[h, q, k] = W_rel[bucket(k − q), h] for q, k < n (spec §2.4); block 0's table serves every layer.
// Positions restart at 0 in each prompt and the bias depends only on k − q, so a prompt of n_s ≤ n
// rows uses the top-left [n_s, n_s] block (ops::attention).
Tensor T5Encoder::relative_position_bias(int64_t n) const {
  const int H = config_.heads;
  Tensor bias({H, n, n});  // built on the host from the table, then moved to the backend
  float* out = bias.ptr();
  const float* table = relative_bias_.ptr();
  for (int64_t q = 0; q < n; ++q)
    for (int64_t k = 0; k < n; ++k) {
      const int b = relative_position_bucket(k - q, config_.buckets, config_.max_distance);
      for (int h = 0; h < H; ++h) out[(h * n + q) * n + k] = table[b * H + h];
    }
  return ops::to_backend(std::move(bias));
}

// flow T5Block: x += O(attention(RMSNorm(x))); x += FF(RMSNorm(x)).        x: [rows, C]
void T5Encoder::block(Tensor& x, const Block& w, const Tensor& bias, const Packing& p) const {
  ops::add(x, self_attention(ops::rms_norm(x, w.attn_norm, config_.eps), w, bias, p));
  ops::add(x, feed_forward(ops::rms_norm(x, w.ff_norm, config_.eps), w));
}

// T5Attention with the outer-product mask (spec §2.2–2.4), no 1/√D scaling.  h: [rows, C] → [rows, C]
// Valid rows attend to their prompt's n valid rows only. A padding row's logits are all −3.4e38 (the
// bias is absorbed), so its softmax is uniform over the 512 padded positions: n valid ones and
// 512 − n identical padding ones, i.e. (Σ_valid V + (512 − n)·V_pad) / 512 in every head (README §3.2).
// Padding::KeyMasked: the padding row is an ordinary query at position n over the n valid keys.
Tensor T5Encoder::self_attention(const Tensor& h, const Block& w, const Tensor& bias, const Packing& p) const {
  const Tensor q = ops::linear(h, w.q), k = ops::linear(h, w.k), v = ops::linear(h, w.v);  // [rows, H·D]
  const int64_t N = p.valid_rows, HD = v.dim(1);
  Tensor out = ops::attention(q.rows(0, N), k.rows(0, N), v.rows(0, N), config_.heads, p.lens, 1.0f,
                              &bias);  // [N, H·D]
  if (p.rows == N) return ops::linear(out, w.o);

  // The padding rows' attention is computed on the host in double precision (few rows, exact sums):
  // q, k, v come over and the rows go back.
  Tensor q_copy, k_copy, v_copy;
  const Tensor &hq = host_readable(q, q_copy), &hk = host_readable(k, k_copy), &hv = host_readable(v, v_copy);
  Tensor pads({p.rows - N, HD});
  for (size_t s = 0; s < p.lens.size(); ++s) {
    if (p.pad_row[s] < 0) continue;
    const int64_t n = p.lens[s];
    const float* vs = hv.ptr() + p.begin[s] * HD;  // prompt s's valid rows
    float* o = pads.ptr() + (p.pad_row[s] - N) * HD;
    if (p.padding[s] == Padding::KeyMasked) {
      key_masked_pad_attention(hq.ptr() + p.pad_row[s] * HD, hk.ptr() + p.begin[s] * HD, vs, n, o);
      continue;
    }
    for (int64_t c = 0; c < HD; ++c) {
      double sum = double(kPaddedLength - n) * hv.ptr()[p.pad_row[s] * HD + c];  // the padding positions
      for (int64_t i = 0; i < n; ++i) sum += vs[i * HD + c];                            // the valid positions
      o[c] = float(sum / kPaddedLength);
    }
  }
  return ops::linear(ops::concat_rows(out, ops::to_backend(std::move(pads))), w.o);
}

// One query row q [H·D] at position n over the n keys/values [n, H·D] at positions 0…n−1: per head
// softmax_k(q·k_k + W_rel[bucket(k − n), h])·v, no scaling (spec §2.4). out: [H·D].
void T5Encoder::key_masked_pad_attention(const float* q, const float* k, const float* v, int64_t n, float* out) const {
  const int H = config_.heads;
  const int64_t D = config_.d_kv, HD = H * D;
  std::vector<double> logits(static_cast<size_t>(n));
  for (int h = 0; h < H; ++h) {
    double top = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += double(q[h * D + d]) * double(k[j * HD + h * D + d]);
      const int b = relative_position_bucket(j - n, config_.buckets, config_.max_distance);
      logits[size_t(j)] = dot + double(relative_bias_.ptr()[b * H + h]);
      top = std::max(top, logits[size_t(j)]);
    }
    double total = 0;
    for (double& l : logits) total += (l = std::exp(l - top));
    for (int64_t d = 0; d < D; ++d) {
      double acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += logits[size_t(j)] * double(v[j * HD + h * D + d]);
      out[h * D + d] = float(acc / total);
    }
  }
}

// T5DenseGatedActDense: wo(gelu_tanh(wi_0(h)) ⊙ wi_1(h)).                 h: [L, C] → [L, C]
Tensor T5Encoder::feed_forward(const Tensor& h, const Block& w) const {
  Tensor gate = ops::gelu_tanh(ops::linear(h, w.wi_0));  // [L, F]
  ops::mul(gate, ops::linear(h, w.wi_1));                // ⊙ wi_1(h)   [L, F]
  return ops::linear(gate, w.wo);
}

}  // namespace chroma::t5

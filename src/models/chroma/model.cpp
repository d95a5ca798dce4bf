// The Chroma DiT forward pass (chroma-spec.md §3), mirroring flow `src/models/chroma/model.py`
// and `module/layers.py`. Size names as in model.h: C, H, D, M, Li, Lt, L, R.
#include "models/chroma/model.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "backend/ops.h"
#include "tensor/trace.h"

namespace chroma::dit {

namespace {

// ---- Modulation layout (spec §3.5, flow `distribute_modulations`) --------------------------------
// Rows of the approximator output, each a [C] vector; every triple is (shift, scale, gate):
//   3i .. 3i+2                  single block i
//   3S + 6i .. +5               double block i, image stream: attention triple, then MLP triple
//   3S + 6D + 6i .. +5          double block i, text stream: likewise
//   R − 2, R − 1                final layer: shift, scale

struct Modulation {
  Tensor shift, scale, gate;  // each [C]
};
struct DoubleBlockModulation {
  Modulation img_attn, img_mlp, txt_attn, txt_mlp;
};
struct FinalModulation {
  Tensor shift, scale;  // each [C]
};

Tensor mod_row(const Tensor& mods, int64_t row) { return mods.rows(row, row + 1).reshaped({mods.dim(1)}); }

Modulation modulation_at(const Tensor& mods, int64_t row) {
  return {mod_row(mods, row), mod_row(mods, row + 1), mod_row(mods, row + 2)};
}

Modulation single_block_modulation(const Tensor& mods, int i) { return modulation_at(mods, 3 * i); }

DoubleBlockModulation double_block_modulation(const Tensor& mods, const ChromaConfig& c, int i) {
  const int64_t img = 3 * c.single_blocks + 6 * i;
  const int64_t txt = 3 * c.single_blocks + 6 * c.double_blocks + 6 * i;
  return {modulation_at(mods, img), modulation_at(mods, img + 3), modulation_at(mods, txt),
          modulation_at(mods, txt + 3)};
}

FinalModulation final_modulation(const Tensor& mods) {
  const int64_t R = mods.dim(0);
  return {mod_row(mods, R - 2), mod_row(mods, R - 1)};
}

// ---- Small pieces shared by the blocks ---------------------------------------------------------

Tensor linear(const Tensor& x, const LinearWeights& l) { return ops::linear(x, l.weight, l.bias); }

// (1 + scale) ⊙ LayerNorm(x) + shift — LayerNorm without affine (spec §3.7)
Tensor norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, const ChromaConfig& c) {
  return ops::modulate(ops::layer_norm(x, c.eps), shift, scale);
}

// fc2(GELU_tanh(fc1(x))) — {img,txt}_mlp (spec §3.7 step 4)
Tensor mlp(const Tensor& x, const MlpWeights& w) { return linear(ops::gelu_tanh(linear(x, w.fc1)), w.fc2); }

struct Qkv {
  Tensor q, k, v;  // each [L, C] = [L, (H D)]
};

// RMSNorm over each head's D values (flow `QKNorm`): a [L, (H D)] tensor is [L·H, D] row-major.
Tensor head_rms_norm(Tensor x, const TensorView& scale, const ChromaConfig& c) {
  const int64_t L = x.dim(0);
  x.reshape({L * c.heads, c.head_dim});
  Tensor y = ops::rms_norm(x, scale, c.eps);
  y.reshape({L, c.hidden});
  return y;
}

// Q, K, V of already modulated tokens x [L, C], with QK-norm (spec §3.7 step 1).
Qkv project_qkv(const Tensor& x, const QkvWeights& w, const ChromaConfig& c) {
  return {head_rms_norm(linear(x, w.q), w.query_norm, c), head_rms_norm(linear(x, w.k), w.key_norm, c),
          linear(x, w.v)};
}

// RoPE on Q and K, then unmasked softmax(QKᵀ/√D)·V over the whole joint sequence (spec §3.7 step 3).
// rope: [L, D/2, 2]. Returns [L, C] with heads merged.
Tensor joint_attention(Qkv qkv, const Tensor& rope, const ChromaConfig& c) {
  ops::rope(qkv.q, c.heads, rope);
  ops::rope(qkv.k, c.heads, rope);
  const int64_t seq_lens[] = {qkv.q.dim(0)};
  return ops::attention(qkv.q, qkv.k, qkv.v, c.heads, seq_lens, 1.0f / std::sqrt(float(c.head_dim)));
}

// ---- The network (one function per spec section) -----------------------------------------------

// chroma-spec.md §3.4 — flow `Approximator`: in_proj, then residual MLPEmbedder layers
// x += out_layer(SiLU(in_layer(RMSNorm(x)))), then out_proj.        input [R, 64] → [R, C]
Tensor approximator(const Tensor& input, const ApproximatorWeights& w, const ChromaConfig& c) {
  Tensor x = linear(input, w.in_proj);  // [R, X]
  for (const ApproximatorLayerWeights& layer : w.layers)
    ops::add(x, linear(ops::silu(linear(ops::rms_norm(x, layer.norm, c.eps), layer.in_layer)), layer.out_layer));
  return linear(x, w.out_proj);  // [R, C]
}

// chroma-spec.md §3.7 — flow `DoubleStreamBlock.forward`. img [Li, C], txt [Lt, C], updated in place.
void double_block(Tensor& img, Tensor& txt, const DoubleBlockWeights& w, const DoubleBlockModulation& m,
                  const Tensor& rope, const ChromaConfig& c) {
  const int64_t Lt = txt.dim(0), L = Lt + img.dim(0);
  const Qkv img_qkv = project_qkv(norm_modulate(img, m.img_attn.shift, m.img_attn.scale, c), w.img_attn.qkv, c);
  const Qkv txt_qkv = project_qkv(norm_modulate(txt, m.txt_attn.shift, m.txt_attn.scale, c), w.txt_attn.qkv, c);
  // One attention over the joint sequence, text first.
  const Tensor attn = joint_attention({ops::concat_rows(txt_qkv.q, img_qkv.q), ops::concat_rows(txt_qkv.k, img_qkv.k),
                                       ops::concat_rows(txt_qkv.v, img_qkv.v)},
                                      rope, c);  // [L, C]

  ops::add_gated(img, m.img_attn.gate, linear(attn.rows(Lt, L), w.img_attn.proj));
  ops::add_gated(img, m.img_mlp.gate, mlp(norm_modulate(img, m.img_mlp.shift, m.img_mlp.scale, c), w.img_mlp));
  ops::add_gated(txt, m.txt_attn.gate, linear(attn.rows(0, Lt), w.txt_attn.proj));
  ops::add_gated(txt, m.txt_mlp.gate, mlp(norm_modulate(txt, m.txt_mlp.shift, m.txt_mlp.scale, c), w.txt_mlp));
}

// chroma-spec.md §3.8 — flow `SingleStreamBlock.forward`. x [L, C] (text then image), updated in place.
void single_block(Tensor& x, const SingleBlockWeights& w, const Modulation& m, const Tensor& rope,
                  const ChromaConfig& c) {
  const Tensor x_mod = norm_modulate(x, m.shift, m.scale, c);
  const Tensor attn = joint_attention(project_qkv(x_mod, w.qkv, c), rope, c);      // [L, C]
  const Tensor hidden = ops::gelu_tanh(linear(x_mod, w.mlp_in));                   // [L, M]
  ops::add_gated(x, m.gate, linear(ops::concat_cols(attn, hidden), w.linear2));   // linear2: [C + M] → [C]
}

// chroma-spec.md §3.9 — flow `LastLayer`: linear((1 + scale) ⊙ LN(img) + shift).   img [Li, C] → [Li, 64]
Tensor final_layer(const Tensor& img, const LinearWeights& w, const FinalModulation& m, const ChromaConfig& c) {
  return linear(norm_modulate(img, m.shift, m.scale, c), w);
}

std::string block_name(const char* kind, int i, const char* what) {
  return std::string(kind) + "." + std::to_string(i) + "." + what;
}

}  // namespace

ChromaModel::ChromaModel(const io::WeightStore& weights)
    : store_(weights),
      config_(ChromaConfig::from_weights(store_)),
      weights_(load_weights(store_, config_)),
      index_table_(mod_index_table(config_.mod_rows, config_.index_dim())) {}

// chroma-spec.md §3.4 — approximator input row r = [emb(t, 16), emb(guidance = 0, 16), emb(r, 32)].
Tensor ChromaModel::modulations(float t, TimestepPrecision precision) const {
  const ChromaConfig& c = config_;
  const Tensor t_emb = precision == TimestepPrecision::BF16 ? timestep_embedding_bf16(t, c.temb_dim())
                                                            : timestep_embedding(t, c.temb_dim());
  // Chroma always feeds guidance 0 (spec §4.4); its embedding is exact in either precision.
  const Tensor g_emb = timestep_embedding(0.0f, c.temb_dim());

  Tensor input({c.mod_rows, c.approx_in});  // [R, 64]
  for (int r = 0; r < c.mod_rows; ++r) {
    float* row = input.ptr() + int64_t(r) * c.approx_in;
    row = std::copy(t_emb.data.begin(), t_emb.data.end(), row);
    row = std::copy(g_emb.data.begin(), g_emb.data.end(), row);
    std::copy_n(index_table_.ptr() + int64_t(r) * c.index_dim(), c.index_dim(), row);
  }
  trace("approx_input", input);

  Tensor mods = approximator(input, weights_.approximator, c);  // [R, C]
  trace("mod_vectors", mods);
  return mods;
}

// chroma-spec.md §3.1–§3.9 — flow `Chroma._forward` with the text already cut to its visible rows.
Tensor ChromaModel::forward(const Tensor& latent, const Tensor& txt, const Tensor& mods) const {
  const ChromaConfig& c = config_;
  if (latent.rank() != 4 || latent.dim(0) != 1 || latent.dim(1) != c.latent_channels() || latent.dim(2) % c.patch ||
      latent.dim(3) % c.patch || latent.dim(2) == 0 || latent.dim(3) == 0)
    throw Error("DiT latent has shape " + shape_str(latent.shape) + ", expected [1, " +
                std::to_string(c.latent_channels()) + ", h, w] with h and w positive and even");
  if (txt.rank() != 2 || txt.dim(1) != c.context_dim || txt.dim(0) < 1)
    throw Error("DiT text features have shape " + shape_str(txt.shape) + ", expected [tokens >= 1, " +
                std::to_string(c.context_dim) + "]");
  if (mods.shape != Shape{c.mod_rows, c.hidden})
    throw Error("DiT modulation vectors have shape " + shape_str(mods.shape) + ", expected " +
                shape_str({c.mod_rows, c.hidden}) + " (from ChromaModel::modulations)");

  const int64_t h = latent.dim(2), w = latent.dim(3);
  const int64_t Lt = txt.dim(0);

  // §3.1, §3.6 embeddings and the RoPE table of the joint sequence.
  const Tensor packed = patchify(latent, c.patch);  // [Li, 64]
  trace("img_packed", packed);
  const int64_t Li = packed.dim(0), L = Lt + Li;
  const Tensor rope = rope_table(Lt, h / c.patch, w / c.patch, c);  // [L, D/2, 2]
  Tensor img = linear(packed, weights_.img_in);  // [Li, C]
  trace("img_in", img);
  Tensor txt_h = linear(txt, weights_.txt_in);  // [Lt, C]
  trace("txt_in_visible", txt_h);

  // §3.7 double-stream blocks.
  for (int i = 0; i < c.double_blocks; ++i) {
    double_block(img, txt_h, weights_.double_blocks[size_t(i)], double_block_modulation(mods, c, i), rope, c);
    trace(block_name("double", i, "img"), img);
    trace(block_name("double", i, "txt_visible"), txt_h);
  }

  // §3.8 single-stream blocks on the joint sequence, text first.
  Tensor x = ops::concat_rows(txt_h, img);  // [L, C]
  for (int i = 0; i < c.single_blocks; ++i) {
    single_block(x, weights_.single_blocks[size_t(i)], single_block_modulation(mods, i), rope, c);
    trace(block_name("single", i, "joint_visible"), x);
  }

  // §3.9 final layer on the image rows, then unpatchify.
  const Tensor out = final_layer(x.rows(Lt, L), weights_.final_linear, final_modulation(mods), c);  // [Li, 64]
  trace("final_out", out);
  return unpatchify(out, h, w, c.patch);
}

}  // namespace chroma::dit

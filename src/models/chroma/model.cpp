// The Chroma DiT forward pass (chroma-spec.md §3), mirroring flow `src/models/chroma/model.py`
// and `module/layers.py`. Size names as in model.h: C, H, D, M, Li, Lt, L, R.
#include "models/chroma/model.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "models/chroma/radiance.h"
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

// Runtime LoRA's A·x for one input x: a LoRA on a whole fused weight is split over its row blocks
// (qkv → q, k, v; linear1 → q, k, v, mlp_in) with one A, so A·x is computed once for all of them.
class LoraInputs {
 public:
  explicit LoraInputs(const Tensor& x) : x_(x) {}
  const Tensor& down_times_x(const TensorView& down) {
    for (const auto& [data, ax] : done_)
      if (data == down.data && down.data) return ax;
    return done_.emplace_back(down.data, ops::linear(x_, down)).second;
  }
  const Tensor& x() const { return x_; }

 private:
  const Tensor& x_;
  std::deque<std::pair<const void*, Tensor>> done_;  // A's data → A·x; a deque keeps references valid
};

// W·x + b, plus each runtime LoRA's B·(A·x) (B's view carries the scale), accumulated into the
// same output as the main product (ops::ExtraProduct).
Tensor linear(LoraInputs& in, const LinearWeights& l) {
  std::vector<ops::ExtraProduct> extra;
  for (const LowRankWeights& d : l.lora) extra.push_back({&in.down_times_x(d.down), d.up});
  return ops::linear(in.x(), l.weight, l.bias, extra);
}
Tensor linear(const Tensor& x, const LinearWeights& l) {
  LoraInputs in(x);
  return linear(in, l);
}
// linear of the column concatenation [a | b] (ops::linear_concat), A read as [A_a | A_b] likewise.
Tensor linear_concat(const Tensor& a, const Tensor& b, const LinearWeights& l) {
  std::vector<Tensor> down_times_x;
  down_times_x.reserve(l.lora.size());  // the products below point into it
  std::vector<ops::ExtraProduct> extra;
  for (const LowRankWeights& d : l.lora) {
    down_times_x.push_back(ops::linear_concat(a, b, d.down));
    extra.push_back({&down_times_x.back(), d.up});
  }
  return ops::linear_concat(a, b, l.weight, l.bias, extra);
}

// (1 + scale) ⊙ LayerNorm(x) + shift — LayerNorm without affine (spec §3.7), in one pass
Tensor norm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, const ChromaConfig& c) {
  return ops::layer_norm_modulate(x, shift, scale, c.eps);
}

// fc2(GELU_tanh(fc1(x))) — {img,txt}_mlp (spec §3.7 step 4)
Tensor mlp(const Tensor& x, const MlpWeights& w) { return linear(ops::gelu_tanh(linear(x, w.fc1)), w.fc2); }

struct Qkv {
  Tensor q, k, v;  // each [L, C] = [L, (H D)]
};

// Q, K, V of already modulated tokens x [L, C] (spec §3.7 step 1), Q and K with their QK-norm
// (flow `QKNorm`: RMSNorm over each head's D values) and RoPE (step 3, `apply_rope`) applied in
// one pass. rope: the tokens' rows of the RoPE table [L, D/2, 2]. RoPE acts on each token alone,
// so applying it per stream before the streams are joined gives what the flow's rope on the joint
// sequence gives.
// x is in.x(); linear1's mlp_in part can share `in` afterwards (single blocks).
Qkv project_qkv(LoraInputs& in, const QkvWeights& w, const Tensor& rope, const ChromaConfig& c) {
  Tensor q = linear(in, w.q), k = linear(in, w.k);
  ops::rms_norm_rope(q, w.query_norm, c.eps, c.heads, rope);
  ops::rms_norm_rope(k, w.key_norm, c.eps, c.heads, rope);
  return {std::move(q), std::move(k), linear(in, w.v)};
}
Qkv project_qkv(const Tensor& x, const QkvWeights& w, const Tensor& rope, const ChromaConfig& c) {
  LoraInputs in(x);
  return project_qkv(in, w, rope, c);
}

// ---- Packed sequences (model.h forward_packed) ------------------------------------------------
// S joint sequences [txt_s; img] on one latent share the Li image tokens' positions. Linear layers
// see all S sequences' rows at once; attention sees each sequence on its own.

struct Packing {
  std::vector<int64_t> txt_lens;  // Lt_s
  int64_t image_tokens = 0;       // Li

  int64_t sequences() const { return int64_t(txt_lens.size()); }
  int64_t seq_len(int64_t s) const { return txt_lens[size_t(s)] + image_tokens; }
  std::vector<int64_t> seq_lens() const {
    std::vector<int64_t> lens;
    for (int64_t s = 0; s < sequences(); ++s) lens.push_back(seq_len(s));
    return lens;
  }
  // First row of sequence s in the text stream [txt_0; txt_1; …] and in the joint layout.
  int64_t txt_begin(int64_t s) const {
    int64_t r = 0;
    for (int64_t i = 0; i < s; ++i) r += txt_lens[size_t(i)];
    return r;
  }
  int64_t joint_begin(int64_t s) const { return txt_begin(s) + s * image_tokens; }
};

void copy_rows(const Tensor& src, int64_t src_row, Tensor& dst, int64_t dst_row, int64_t n) {
  dst.copy_rows_from(src, src_row, dst_row, n);
}

// Stream layout → joint layout: txt [Σ Lt_s, W] and img [S·Li, W] → [txt_0; img_0; txt_1; …] [Σ L_s, W].
Tensor join_streams(const Tensor& txt, const Tensor& img, const Packing& p) {
  const int64_t Li = p.image_tokens;
  Tensor joint = ops::zeros({txt.dim(0) + img.dim(0), txt.dim(1)});
  for (int64_t s = 0; s < p.sequences(); ++s) {
    const int64_t Lt = p.txt_lens[size_t(s)], j = p.joint_begin(s);
    copy_rows(txt, p.txt_begin(s), joint, j, Lt);
    copy_rows(img, s * Li, joint, j + Lt, Li);
  }
  return joint;
}

// Joint layout → the text rows [Σ Lt_s, W] or the image rows [S·Li, W], in stream layout.
Tensor txt_rows(const Tensor& joint, const Packing& p) {
  Tensor txt = ops::zeros({p.txt_begin(p.sequences()), joint.dim(1)});
  for (int64_t s = 0; s < p.sequences(); ++s)
    copy_rows(joint, p.joint_begin(s), txt, p.txt_begin(s), p.txt_lens[size_t(s)]);
  return txt;
}
Tensor img_rows(const Tensor& joint, const Packing& p) {
  const int64_t Li = p.image_tokens;
  Tensor img = ops::zeros({p.sequences() * Li, joint.dim(1)});
  for (int64_t s = 0; s < p.sequences(); ++s)
    copy_rows(joint, p.joint_begin(s) + p.txt_lens[size_t(s)], img, s * Li, Li);
  return img;
}

// The RoPE tables of the S sequences, each token's row [D/2, 2] in the three layouts: the joint
// sequences (single blocks) and the two streams (double blocks project Q and K per stream).
struct RopeTables {
  Tensor joint;     // [Σ L_s, D/2, 2]
  Tensor txt, img;  // [Σ Lt_s, D/2, 2], [S·Li, D/2, 2]
};

RopeTables packed_rope_tables(const Packing& p, int64_t grid_h, int64_t grid_w, const ChromaConfig& c) {
  const int64_t D = c.head_dim;
  Tensor joint({p.txt_begin(p.sequences()) + p.sequences() * p.image_tokens, D});  // [Σ L_s, (D/2 2)]
  float* out = joint.ptr();  // built on the host, then moved to the backend
  for (int64_t s = 0; s < p.sequences(); ++s) {
    const Tensor t = rope_table(p.txt_lens[size_t(s)], grid_h, grid_w, c);  // [L_s, D/2, 2]
    out = std::copy_n(t.ptr(), t.numel(), out);
  }
  joint = ops::to_backend(std::move(joint));
  Tensor txt = txt_rows(joint, p), img = img_rows(joint, p);
  joint.reshape({joint.dim(0), D / 2, 2});
  txt.reshape({txt.dim(0), D / 2, 2});
  img.reshape({img.dim(0), D / 2, 2});
  return {std::move(joint), std::move(txt), std::move(img)};
}

// Unmasked softmax(QKᵀ/√D)·V within each joint sequence (spec §3.7 step 3), Q and K already rotated.
// qkv in joint layout [Σ L_s, C]. Returns [Σ L_s, C] with heads merged.
Tensor joint_attention(const Qkv& qkv, const Packing& p, const ChromaConfig& c) {
  return ops::attention(qkv.q, qkv.k, qkv.v, c.heads, p.seq_lens(), 1.0f / std::sqrt(float(c.head_dim)));
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

// chroma-spec.md §3.7 — flow `DoubleStreamBlock.forward`, on S packed sequences (streams layout):
// img [S·Li, C], txt [Σ Lt_s, C], updated in place. Each stream's weights multiply all S sequences'
// rows at once; the attention runs per joint sequence [txt_s; img_s], text first.
void double_block(Tensor& img, Tensor& txt, const DoubleBlockWeights& w, const DoubleBlockModulation& m,
                  const RopeTables& rope, const Packing& p, const ChromaConfig& c) {
  const Qkv img_qkv =
      project_qkv(norm_modulate(img, m.img_attn.shift, m.img_attn.scale, c), w.img_attn.qkv, rope.img, c);
  const Qkv txt_qkv =
      project_qkv(norm_modulate(txt, m.txt_attn.shift, m.txt_attn.scale, c), w.txt_attn.qkv, rope.txt, c);
  const Tensor attn = joint_attention({join_streams(txt_qkv.q, img_qkv.q, p), join_streams(txt_qkv.k, img_qkv.k, p),
                                       join_streams(txt_qkv.v, img_qkv.v, p)},
                                      p, c);  // [Σ L_s, C] joint layout

  ops::add_gated(img, m.img_attn.gate, linear(img_rows(attn, p), w.img_attn.proj));
  ops::add_gated(img, m.img_mlp.gate, mlp(norm_modulate(img, m.img_mlp.shift, m.img_mlp.scale, c), w.img_mlp));
  ops::add_gated(txt, m.txt_attn.gate, linear(txt_rows(attn, p), w.txt_attn.proj));
  ops::add_gated(txt, m.txt_mlp.gate, mlp(norm_modulate(txt, m.txt_mlp.shift, m.txt_mlp.scale, c), w.txt_mlp));
}

// chroma-spec.md §3.8 — flow `SingleStreamBlock.forward`. x [Σ L_s, C] in joint layout, updated in place.
void single_block(Tensor& x, const SingleBlockWeights& w, const Modulation& m, const RopeTables& rope,
                  const Packing& p, const ChromaConfig& c) {
  const Tensor x_mod = norm_modulate(x, m.shift, m.scale, c);
  LoraInputs in(x_mod);  // linear1's four parts share one input
  const Tensor attn = joint_attention(project_qkv(in, w.qkv, rope.joint, c), p, c);  // [Σ L_s, C]
  const Tensor hidden = ops::gelu_tanh(linear(in, w.mlp_in));                        // [Σ L_s, M]
  // linear2 on [attn | hidden]: [C + M] → [C], without building the concatenation
  ops::add_gated(x, m.gate, linear_concat(attn, hidden, w.linear2));
}

// chroma-spec.md §3.9 — flow `LastLayer`: linear((1 + scale) ⊙ LN(img) + shift).   img [Li, C] → [Li, 64]
Tensor final_layer(const Tensor& img, const LinearWeights& w, const FinalModulation& m, const ChromaConfig& c) {
  return linear(norm_modulate(img, m.shift, m.scale, c), w);
}

// Weight groups in run order, for the low-memory mode (ChromaModel::done_with): the approximator
// (once per step), the double blocks, the single blocks, then the next step's approximator.
std::string stack_group(const std::string& kind, int i) { return kind + "_blocks." + std::to_string(i) + "."; }
std::string group_after(const ChromaConfig& c, const std::string& kind, int i) {
  if (kind == "double") return i + 1 < c.double_blocks ? stack_group("double", i + 1) : stack_group("single", 0);
  if (kind == "single" && i + 1 < c.single_blocks) return stack_group("single", i + 1);
  if (kind == "single") return "distilled_guidance_layer.";
  return c.double_blocks ? stack_group("double", 0) : stack_group("single", 0);  // after the approximator
}

std::string block_name(const char* kind, int i, const char* what) {
  return std::string(kind) + "." + std::to_string(i) + "." + what;
}

// Traces each sequence's rows of x under its prefix (copies only while a tracer is installed).
enum class Layout { TxtStream, ImgStream, Joint, Image };
void trace_sequences(const std::string& name, const Tensor& x, Layout layout, const Packing& p,
                     const std::vector<ChromaModel::TextInput>& txts) {
  if (!tracing()) return;
  for (int64_t s = 0; s < p.sequences(); ++s) {
    const std::string& prefix = txts[size_t(s)].trace_prefix;
    switch (layout) {
      case Layout::TxtStream: trace(prefix + name, x.rows(p.txt_begin(s), p.txt_begin(s + 1))); break;
      case Layout::ImgStream: trace(prefix + name, x.rows(s * p.image_tokens, (s + 1) * p.image_tokens)); break;
      case Layout::Joint: trace(prefix + name, x.rows(p.joint_begin(s), p.joint_begin(s) + p.seq_len(s))); break;
      case Layout::Image: trace(prefix + name, x); break;  // shared by every sequence
    }
  }
}

}  // namespace

ChromaModel::ChromaModel(const io::WeightStore& weights, io::Residency residency)
    : store_(weights),
      config_(ChromaConfig::from_weights(store_)),
      base_weights_(load_weights(store_, config_)),
      weights_(base_weights_),
      index_table_(mod_index_table(config_.mod_rows, config_.index_dim())),
      residency_(residency),
      prefix_(weight_prefix(store_)) {}

void ChromaModel::done_with(const std::string& group, const std::string& next) const {
  if (residency_ != io::Residency::ReleaseAfterUse) return;
  io::release_pages(store_, prefix_ + group);
  io::prefetch_pages(store_, prefix_ + next);
}

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
    row = std::copy_n(t_emb.ptr(), t_emb.numel(), row);
    row = std::copy_n(g_emb.ptr(), g_emb.numel(), row);
    std::copy_n(index_table_.ptr() + int64_t(r) * c.index_dim(), c.index_dim(), row);
  }
  input = ops::to_backend(std::move(input));  // built on the host from exact integers (spec §6.1)
  trace("approx_input", input);

  Tensor mods = approximator(input, weights_.approximator, c);  // [R, C]
  done_with("distilled_guidance_layer.", group_after(c, "distilled_guidance_layer.", 0));
  trace("mod_vectors", mods);
  return mods;
}

Tensor ChromaModel::forward(const Tensor& latent, const Tensor& txt, const Tensor& mods, std::optional<float> t) const {
  return std::move(forward_packed(latent, {TextInput(txt)}, mods, nullptr, t)[0]);
}

// chroma-spec.md §3.1–§3.9 — flow `Chroma._forward` with the text already cut to its visible rows,
// for S text conditions at once (model.h).
namespace {

// mean|a − b| / mean|b|: how much the first block's residual moved (StepCache).
double relative_change(const Tensor& a, const Tensor& b) {
  const double base = ops::sum_abs(b);
  return base > 0 ? ops::sum_abs_diff(a, b) / base : INFINITY;
}

Tensor difference(const Tensor& a, const Tensor& b) { return ops::axpby(1.0f, a, -1.0f, b); }

}  // namespace

std::vector<Tensor> ChromaModel::forward_packed(const Tensor& latent, const std::vector<TextInput>& txts,
                                                const Tensor& mods, StepCache* cache, std::optional<float> t) const {
  const ChromaConfig& c = config_;
  const bool radiance = c.architecture == Architecture::Radiance;
  const int tp = c.token_patch();  // input pixels per token side
  if (latent.rank() != 4 || latent.dim(0) != 1 || latent.dim(1) != c.latent_channels() || latent.dim(2) % tp ||
      latent.dim(3) % tp || latent.dim(2) == 0 || latent.dim(3) == 0)
    throw Error(std::string(radiance ? "Chroma1-Radiance image" : "DiT latent") + " has shape " + shape_str(latent.shape) +
                ", expected [1, " + std::to_string(c.latent_channels()) + ", h, w] with h and w positive multiples of " +
                std::to_string(tp));
  if (txts.empty()) throw Error("DiT forward_packed: no text inputs");
  for (const TextInput& in : txts)
    if (in.txt.rank() != 2 || in.txt.dim(1) != c.context_dim || in.txt.dim(0) < 1)
      throw Error("DiT text features have shape " + shape_str(in.txt.shape) + ", expected [tokens >= 1, " +
                  std::to_string(c.context_dim) + "]");
  if (mods.shape != Shape{c.mod_rows, c.hidden})
    throw Error("DiT modulation vectors have shape " + shape_str(mods.shape) + ", expected " +
                shape_str({c.mod_rows, c.hidden}) + " (from ChromaModel::modulations)");
  if (radiance && c.radiance.x0 && !t)
    throw Error("Chroma1-Radiance (x0 prediction): forward_packed needs the flow time t for the velocity");

  const int64_t h = latent.dim(2), w = latent.dim(3), S = int64_t(txts.size());

  // §3.1, §3.6 embeddings and the RoPE tables (joint sequences and streams). Radiance: the patch
  // conv on the pixels (docs/radiance.md §3). The image embedding is the same for every sequence:
  // computed once, then repeated.
  Packing p{{}, (h / tp) * (w / tp)};
  for (const TextInput& in : txts) p.txt_lens.push_back(in.txt.dim(0));
  Tensor img_in;  // [Li, C]
  if (radiance) {
    img_in = radiance::embed_pixels(latent, weights_.radiance, c);
  } else {
    const Tensor packed = patchify(latent, c.patch);  // [Li, 64]
    trace_sequences("img_packed", packed, Layout::Image, p, txts);
    img_in = linear(packed, weights_.img_in);
  }
  const RopeTables rope = packed_rope_tables(p, h / tp, w / tp, c);
  trace_sequences("img_in", img_in, Layout::Image, p, txts);
  Tensor img = ops::zeros({S * p.image_tokens, c.hidden});  // [S·Li, C]
  for (int64_t s = 0; s < S; ++s) copy_rows(img_in, 0, img, s * p.image_tokens, p.image_tokens);
  Tensor txt_stream = ops::zeros({p.txt_begin(S), c.context_dim});  // [Σ Lt_s, T]
  for (int64_t s = 0; s < S; ++s) copy_rows(txts[size_t(s)].txt, 0, txt_stream, p.txt_begin(s), p.txt_lens[size_t(s)]);
  Tensor txt = linear(txt_stream, weights_.txt_in);  // [Σ Lt_s, C]
  trace_sequences("txt_in_visible", txt, Layout::TxtStream, p, txts);

  // §3.7 double-stream blocks. With a cache, the first block decides whether the others run.
  Tensor img_final, after_first;  // the image rows entering the final layer; img after block 0 (cache)
  for (int i = 0; i < c.double_blocks; ++i) {
    const Tensor before = cache && i == 0 ? img : Tensor();
    double_block(img, txt, weights_.double_blocks[size_t(i)], double_block_modulation(mods, c, i), rope, p, c);
    done_with(stack_group("double", i), group_after(c, "double", i));
    trace_sequences(block_name("double", i, "img"), img, Layout::ImgStream, p, txts);
    trace_sequences(block_name("double", i, "txt_visible"), txt, Layout::TxtStream, p, txts);
    if (cache && i == 0) {
      ++cache->evaluations;
      const Tensor residual = difference(img, before);
      if (cache->first_residual.shape == residual.shape &&
          relative_change(residual, cache->first_residual) < double(cache->threshold)) {
        ++cache->skipped;
        img_final = img;
        ops::add(img_final, cache->rest_residual);
        break;
      }
      cache->first_residual = residual;
      after_first = img;
    }
  }

  if (img_final.numel() == 0) {
    // §3.8 single-stream blocks on the joint sequences, text first.
    Tensor x = join_streams(txt, img, p);  // [Σ L_s, C]
    for (int i = 0; i < c.single_blocks; ++i) {
      single_block(x, weights_.single_blocks[size_t(i)], single_block_modulation(mods, i), rope, p, c);
      done_with(stack_group("single", i), group_after(c, "single", i));
      trace_sequences(block_name("single", i, "joint_visible"), x, Layout::Joint, p, txts);
    }
    img_final = img_rows(x, p);
    if (cache && after_first.numel()) cache->rest_residual = difference(img_final, after_first);
  }

  std::vector<Tensor> velocities;
  if (radiance) {
    // docs/radiance.md §4–§5: the per-patch decoder on each sequence's image rows (no final_layer),
    // then, for an x0 model, the velocity (x_t − x0)/t.
    for (int64_t s = 0; s < S; ++s) {
      const TracePrefix prefix(txts[size_t(s)].trace_prefix);
      Tensor out = radiance::decode(img_final.rows(s * p.image_tokens, (s + 1) * p.image_tokens), latent,
                                    weights_.radiance, c);
      trace("nerf_out", out);
      velocities.push_back(c.radiance.x0 ? radiance::velocity_from_x0(latent, out, *t) : std::move(out));
    }
    return velocities;
  }

  // §3.9 final layer on the image rows, then unpatchify each sequence's velocity.
  const Tensor out = final_layer(img_final, weights_.final_linear, final_modulation(mods), c);  // [S·Li, 64]
  trace_sequences("final_out", out, Layout::ImgStream, p, txts);
  for (int64_t s = 0; s < S; ++s)
    velocities.push_back(unpatchify(out.rows(s * p.image_tokens, (s + 1) * p.image_tokens), h, w, c.patch));
  return velocities;
}

}  // namespace chroma::dit

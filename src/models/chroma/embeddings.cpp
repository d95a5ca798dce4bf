// Weight-free input transforms of the Chroma DiT (chroma-spec.md §3.1–§3.4, §6.1–§6.3).
#include "models/chroma/embeddings.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/ops.h"

namespace chroma::dit {

// chroma-spec.md §3.1 — flow `vae_flatten`: "b c (h ph) (w pw) -> b (h w) (c ph pw)"
Tensor patchify(const Tensor& latent, int patch) {
  if (latent.rank() != 4 || latent.dim(0) != 1 || latent.dim(2) % patch != 0 || latent.dim(3) % patch != 0)
    throw Error("DiT input latent has shape " + shape_str(latent.shape) + ", expected [1, C, h, w] with h and w multiples of " +
                std::to_string(patch));
  return ops::image_to_patches(latent, patch);  // [Li, Cl·p·p]
}

// chroma-spec.md §3.9 — flow `vae_unflatten`: "b (h w) (c ph pw) -> b c (h ph) (w pw)"
Tensor unpatchify(const Tensor& tokens, int64_t h, int64_t w, int patch) {
  return ops::patches_to_image(tokens, patch, h, w);
}

// chroma-spec.md §3.2 — flow `EmbedND` / `math.py rope`, evaluated per token.
Tensor rope_table(int64_t text_tokens, int64_t grid_h, int64_t grid_w, const ChromaConfig& config) {
  // ω for every pair, axis by axis: 1 / theta^(2k/d), k < d/2. float64 like the reference, so
  // large row/column indices keep their phase.
  std::vector<int> pair_axis;
  std::vector<double> omega;
  for (int a = 0; a < 3; ++a) {
    const int d = config.axes_dim[size_t(a)];
    for (int k = 0; k < d / 2; ++k) {
      pair_axis.push_back(a);
      omega.push_back(1.0 / std::pow(config.theta, double(2 * k) / double(d)));
    }
  }
  const int64_t pairs = int64_t(omega.size());  // D/2

  const int64_t L = text_tokens + grid_h * grid_w;
  Tensor table({L, pairs, 2});  // [L, D/2, (cos, sin)]
  for (int64_t t = 0; t < L; ++t) {
    // Position ids (spec §3.1): text (0,0,0), image token i·gw + j → (0, i, j).
    double pos[3] = {0, 0, 0};
    if (t >= text_tokens) {
      pos[1] = double((t - text_tokens) / grid_w);
      pos[2] = double((t - text_tokens) % grid_w);
    }
    float* row = table.ptr() + t * pairs * 2;
    for (int64_t p = 0; p < pairs; ++p) {
      const double angle = pos[pair_axis[size_t(p)]] * omega[size_t(p)];
      row[2 * p] = float(std::cos(angle));
      row[2 * p + 1] = float(std::sin(angle));
    }
  }
  return table;
}

namespace {

// exp(x) for float32 as PyTorch's CPU kernels compute it (SLEEF `expf_u10`, the vectorised exp
// torch.exp runs on x86): x = q·ln2 + s with q = rint(x/ln2) and ln2 split in two parts
// (Cody–Waite), exp(s) ≈ 1 + s + s²·P(s) with a degree-5 P, then scaled by 2^q. Within 1 ulp,
// but not always the correctly rounded value std::exp returns: for 2 of the 16 frequencies of
// the modulation-index embedding (k = 7, 14) it is one ulp apart, and with arguments up to
// 3.4e5·freq that ulp moves the table by up to 1e-3 (reference case a `mod_index_table`).
float torch_expf(float x) {
  if (x < -104.0f) return 0.0f;
  if (x > 100.0f) return INFINITY;
  constexpr float kInvLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;
  const float q = std::nearbyint(x * kInvLn2);
  float s = std::fma(q, -kLn2Hi, x);
  s = std::fma(q, -kLn2Lo, s);
  float p = 0.000198527617612853646278381f;
  for (float c : {0.00139304355252534151077271f, 0.00833336077630519866943359f, 0.0416664853692054748535156f,
                  0.166666671633720397949219f, 0.5f})
    p = std::fma(p, s, c);
  return std::ldexp(1.0f + std::fma(s * s, p, s), int(q));
}

// emb for an already scaled time s = 1000·t (chroma-spec.md §3.3, flow `timestep_embedding`).
// Every step in float32 and in torch's order: freqs = exp(f32(−ln 10000) · k / half); args = s · freqs.
// The index arguments reach 3.4e5 rad, so even the exp must be torch's to reproduce the table.
Tensor embed_scaled_time(float scaled_t, int dim) {
  const int half = dim / 2;
  const float neg_log_period = float(-std::log(10000.0));
  Tensor emb({dim});  // an odd dim leaves the last entry 0, as the reference pads
  for (int k = 0; k < half; ++k) {
    const float freq = torch_expf(neg_log_period * float(k) / float(half));
    const float arg = scaled_t * freq;
    emb.values()[size_t(k)] = std::cos(arg);  // cos first, then sin
    emb.values()[size_t(half + k)] = std::sin(arg);
  }
  return emb;
}

}  // namespace

Tensor timestep_embedding(float t, int dim) { return embed_scaled_time(1000.0f * t, dim); }

Tensor timestep_embedding_bf16(float t, int dim) {
  // bf16 t times 1000 is exact in float32 (8 + 7 significant bits), then rounded once to bf16.
  const float scaled = round_bf16(1000.0f * round_bf16(t));
  Tensor emb = embed_scaled_time(scaled, dim);
  for (float& v : emb.values()) v = round_bf16(v);  // `.to(t.dtype)` in the reference
  return emb;
}

Tensor mod_index_table(int rows, int dim) {
  Tensor table({rows, dim});  // [rows, dim]
  for (int r = 0; r < rows; ++r) {
    // The index arrives as an integer and is scaled in float32: exact for r < 2^24 / 1000 (spec §6.1).
    const Tensor emb = embed_scaled_time(float(r) * 1000.0f, dim);
    std::copy(emb.values().begin(), emb.values().end(), table.values().begin() + int64_t(r) * dim);
  }
  return table;
}

}  // namespace chroma::dit

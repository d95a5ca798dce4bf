#include "pipeline/memory_plan.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "backend/backend.h"
#include "models/chroma/config.h"
#include "models/chroma/radiance.h"
#include "models/chroma/model.h"
#include "models/t5/t5.h"
#include "models/vae/vae.h"

namespace chroma::pipeline {
namespace {

constexpr size_t kF32 = sizeof(float);

// Sums the stored bytes of a store, and of its blocks: a block is either one index of a stack
// ("double_blocks.7.") or a whole group ("distilled_guidance_layer.").
struct BlockSums {
  size_t total = 0, streamed = 0, largest = 0;
};
BlockSums sum_blocks(const io::WeightStore& store, const std::vector<std::string>& stacks,
                     const std::vector<std::string>& groups) {
  std::map<std::string, size_t> blocks;  // block prefix → bytes
  BlockSums s;
  for (const auto& [name, view] : store.tensors()) {
    s.total += view.nbytes;
    for (const std::string& g : groups)
      if (name.starts_with(g)) blocks[g] += view.nbytes;
    for (const std::string& st : stacks) {
      if (!name.starts_with(st)) continue;
      size_t digits = st.size();
      while (digits < name.size() && std::isdigit(static_cast<unsigned char>(name[digits]))) ++digits;
      if (digits > st.size() && digits < name.size() && name[digits] == '.') blocks[name.substr(0, digits + 1)] += view.nbytes;
    }
  }
  for (const auto& [prefix, bytes] : blocks) {
    s.streamed += bytes;
    s.largest = std::max(s.largest, bytes);
  }
  return s;
}

PhaseEstimate weights_estimate(const std::string& phase, const BlockSums& s) {
  PhaseEstimate e;
  e.phase = phase;
  e.weight_bytes = s.total;
  e.streamed_bytes = s.streamed;
  e.largest_block_bytes = s.largest;
  return e;
}

// T5 (t5.h) on every prompt at once (encode_batch stacks their rows, n = Σ rows): the residual stream,
// its norm, q, k, v, the attention output and the projection (≤ 8 rows of C), the feed-forward's two
// [n, F] products and their product (3 of F), and the relative-position bias [H, m, m] for the longest
// prompt m twice (the table and a per-call copy, as an upper bound).
size_t t5_activations(const t5::T5Config& c, const std::vector<int64_t>& text_rows) {
  int64_t n = 0;
  for (int64_t rows : text_rows) n += rows;
  const int64_t m = *std::max_element(text_rows.begin(), text_rows.end());
  return kF32 * size_t(n) * size_t(8 * c.d_model + 3 * c.d_ff) + 2 * kF32 * size_t(c.heads) * size_t(m * m);
}

// The backend's scratch for the widest linear layer (K) on `rows` rows (on the CPU: widened weight
// panels, one per worker thread, and the copy of the input that bf16 / int8 compute make).
size_t gemm_scratch(int64_t rows, int64_t widest_k) { return active_backend().linear_workspace_bytes(rows, widest_k); }

// DiT on R = Σ_s (Li + Lt_s) packed rows. The largest live set is a double block's MLP: the
// streams (C), the Q, K, V kept for the block (3C), the attention output (C), the modulated input
// (C), fc1 and GELU outputs (2M) — 6C + 2M per row; a single block (x, x_mod, attention, fc1,
// GELU, the [C + M] concatenation) stays below it. Plus the RoPE table [R, D] and the approximator
// ([mod_rows, X], three alive at once). Attention itself is tiled (O(tile²) scratch).
size_t dit_activations(const dit::ChromaConfig& c, int64_t rows) {
  return kF32 * size_t(rows) * size_t(6 * c.hidden + 2 * c.mlp_hidden + c.head_dim) +
         kF32 * 3 * size_t(c.mod_rows) * size_t(c.approx_hidden);
}

// VAE decoder at H×W: at level l (l = 0 full size) a ResnetBlock holds its input (the upsampled
// output of level l + 1: C_in channels), its GroupNorm and SiLU outputs (2 · C_in) and conv1's
// output (C_l): 3·C_in + C_l floats per pixel of that level; the largest level wins. A 3×3 conv
// adds its Winograd scratch (backend/cpu/winograd.cpp): tiles of ≤ 64 MiB over all threads and the
// transformed kernel, 36 floats per input-output channel pair.
size_t vae_activations(const vae::VaeConfig& c, int width, int height) {
  constexpr size_t kWinogradTileScratch = size_t(64) << 20;
  size_t most = 0, widest = 0;
  for (int l = 0; l < c.levels(); ++l) {
    const size_t pixels = size_t(width >> l) * size_t(height >> l);
    const size_t c_in = size_t(c.level_channels(std::min(l + 1, c.levels() - 1)));
    most = std::max(most, kF32 * pixels * (3 * c_in + size_t(c.level_channels(l))));
    widest = std::max(widest, c_in * size_t(c.level_channels(l)));
  }
  return most + kWinogradTileScratch + kF32 * 36 * widest;
}

// Chroma1-Radiance's head (models/chroma/radiance.h) for `sequences` images of H×W: one tile of n
// patches at a time holds its generated weights (the param_generator output and its three
// normalised parts: 2·3·h·m per patch), its features (x, the normalised x and the DCT rows: 3·h per
// pixel, plus the Ci + F² embedder input) and the GLU products (3·m per pixel); the whole image holds
// the folded features [h, H, W], the pixel rows and the sequences' outputs.
size_t radiance_head_activations(const dit::ChromaConfig& c, int width, int height, size_t sequences) {
  const dit::RadianceConfig& r = c.radiance;
  const size_t h = size_t(r.nerf_hidden), m = size_t(r.mlp_hidden()), pp = size_t(r.pixel_patch()) * size_t(r.pixel_patch());
  const size_t pixels = size_t(width) * size_t(height);
  const size_t tile = std::min(size_t(dit::radiance::kTilePatches), std::max<size_t>(1, pixels / pp));
  const size_t per_tile = tile * (6 * h * m + pp * (3 * h + size_t(c.in_channels) + size_t(r.max_freqs * r.max_freqs) + 3 * m));
  const size_t image = pixels * (h + size_t(c.in_channels) * (2 + sequences));
  return kF32 * (per_tile + image);
}

// The VAE decoder's phase at the run's size, whole or tiled.
PhaseEstimate decode_estimate(const io::WeightStore& vae, const RunShape& run) {
  PhaseEstimate decode = weights_estimate("decoding", sum_blocks(vae, {}, {}));
  const vae::VaeConfig vaec = vae::VaeConfig::from_weights(vae);
  if (run.vae_tile > 0) {
    // One tile's activations, plus the blended image and its weights (vae/tiled.cpp).
    const int side = run.vae_tile * vaec.downscale();
    decode.activation_bytes = vae_activations(vaec, std::min(side, run.width), std::min(side, run.height)) +
                              kF32 * size_t(run.width) * size_t(run.height) * size_t(vaec.out_channels + 1);
  } else {
    decode.activation_bytes = vae_activations(vaec, run.width, run.height);
  }
  return decode;
}

}  // namespace

size_t PhaseEstimate::resident_weight_bytes(bool low_memory) const {
  return low_memory ? weight_bytes - streamed_bytes + largest_block_bytes : weight_bytes;
}

size_t PhaseEstimate::peak_bytes(bool low_memory) const {
  return kBaseBytes + held_bytes + resident_weight_bytes(low_memory) + activation_bytes;
}

const PhaseEstimate& MemoryPlan::largest_phase(bool low_memory) const {
  if (phases.empty()) throw Error("memory plan: no phases");
  return *std::max_element(phases.begin(), phases.end(), [&](const PhaseEstimate& a, const PhaseEstimate& b) {
    return a.peak_bytes(low_memory) < b.peak_bytes(low_memory);
  });
}

MemoryPlan plan_memory(const io::WeightStore& t5, const io::WeightStore& dit, const io::WeightStore& vae,
                       const RunShape& run, const LoraMemory& lora) {
  if (run.text_rows.empty()) throw Error("memory plan: no text sequences");
  MemoryPlan plan;
  if (lora.fused_bytes > 0) {
    PhaseEstimate fuse;
    fuse.phase = "LoRA fusing";
    fuse.weight_bytes = lora.fused_bytes;
    fuse.activation_bytes = lora.fuse_scratch_bytes;
    plan.phases.push_back(fuse);
  }

  const t5::T5Config t5c = t5::T5Config::from_weights(t5);
  PhaseEstimate text = weights_estimate("text encoding", sum_blocks(t5, {"encoder.block."}, {}));
  int64_t text_rows = 0;
  for (int64_t lt : run.text_rows) text_rows += lt;
  text.activation_bytes = t5_activations(t5c, run.text_rows) + gemm_scratch(text_rows, t5c.d_ff);
  plan.phases.push_back(text);

  const dit::ChromaConfig ditc = dit::ChromaConfig::from_weights(dit);
  const std::string p = dit::weight_prefix(dit);
  PhaseEstimate denoise = weights_estimate(
      "denoising", sum_blocks(dit, {p + "double_blocks.", p + "single_blocks."}, {p + "distilled_guidance_layer."}));
  const bool radiance = ditc.architecture == dit::Architecture::Radiance;
  const int64_t cell = radiance ? ditc.radiance.pixel_patch() : 16;  // image pixels per token side
  const int64_t image_tokens = int64_t(run.height / cell) * (run.width / cell);
  int64_t rows = 0;
  for (int64_t lt : run.text_rows) rows += image_tokens + lt;
  denoise.activation_bytes = dit_activations(ditc, rows) + gemm_scratch(rows, ditc.hidden + ditc.mlp_hidden);
  if (radiance)  // the head runs after the blocks: its activations replace theirs, the tokens stay
    denoise.activation_bytes = std::max(denoise.activation_bytes,
                                        kF32 * size_t(rows) * size_t(ditc.hidden) +
                                            radiance_head_activations(ditc, run.width, run.height, run.text_rows.size()) +
                                            gemm_scratch(int64_t(dit::radiance::kTilePatches), ditc.hidden));
  plan.phases.push_back(denoise);
  const size_t denoise_index = plan.phases.size() - 1;
  if (!radiance) plan.phases.push_back(decode_estimate(vae, run));  // Radiance: no VAE, the state is the image

  for (PhaseEstimate& e : plan.phases)
    if (e.phase != "LoRA fusing") e.held_bytes = lora.fused_bytes;
  // The fused copies stand for base weights that are then never read; the part in streamed blocks
  // is taken from the streamed bytes too (an upper bound on what --low-memory keeps).
  PhaseEstimate& d = plan.phases[denoise_index];
  const size_t replaced = std::min(lora.replaced_bytes, d.weight_bytes);
  d.weight_bytes += lora.adapter_bytes - replaced;
  d.streamed_bytes -= std::min(replaced, d.streamed_bytes);
  return plan;
}

LoraMemory lora_memory(const io::WeightStore& dit, const std::vector<const io::LoraDelta*>& deltas, bool fuse,
                       bool allocate) {
  LoraMemory m;
  const std::string p = dit::weight_prefix(dit);
  std::set<std::string> targets;
  for (const io::LoraDelta* d : deltas) {
    if (!fuse && d->kind == io::LoraDelta::Kind::LowRank) {
      m.adapter_bytes += d->down.nbytes + d->up.nbytes;
      continue;
    }
    // Merged into a copy of the weight: fuse mode, and LoHa / LoKr in either mode.
    const auto w = dit.tensors().find(p + d->target + ".weight");
    if (w == dit.tensors().end() || !targets.insert(d->target).second) continue;
    const TensorView& v = w->second;
    m.replaced_bytes += v.nbytes;
    if (!allocate) continue;
    m.fused_bytes += tensor_bytes(dit::fused_dtype(v.dtype), v.shape).value_or(0);
    m.fuse_scratch_bytes = std::max(m.fuse_scratch_bytes, size_t(2 * v.numel()) * sizeof(float));
  }
  return m;
}

size_t parse_mem_available(const std::string& meminfo) {
  std::istringstream in(meminfo);
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long kb = 0;
    if (std::sscanf(line.c_str(), "MemAvailable: %llu kB", &kb) == 1) return size_t(kb) * 1024;
  }
  return 0;
}

size_t available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  if (!f) return 0;
  std::stringstream s;
  s << f.rdbuf();
  return parse_mem_available(s.str());
}

std::string gib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(size_t(1) << 30));
  return buf;
}

void check_memory(const MemoryPlan& plan, bool low_memory, size_t available_bytes) {
  const size_t need = plan.peak_bytes(low_memory);
  if (available_bytes == 0 || need <= available_bytes) return;
  const PhaseEstimate& worst = plan.largest_phase(low_memory);
  std::string msg = "not enough memory: this run needs about " + gib(need) + " (" + worst.phase + ": " +
                    gib(worst.resident_weight_bytes(low_memory)) + " of weights + " + gib(worst.activation_bytes) +
                    " of activations) but " + gib(available_bytes) + " is available (MemAvailable)";
  const size_t low = plan.peak_bytes(true);
  if (!low_memory && low <= available_bytes)
    msg += "; --low-memory needs about " + gib(low) + " and would fit";
  else
    msg += "; try a smaller --width/--height" + std::string(low_memory ? "" : " with --low-memory (needs about " + gib(low) + ")");
  throw Error(msg + ", or pass --no-memory-check to run anyway");
}

}  // namespace chroma::pipeline

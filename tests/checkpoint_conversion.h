// Test fixtures: the reference mini checkpoints rewritten in the other layouts the engine reads.
//   diffusers    lodestones/Chroma1-HD layout: transformer/ and text_encoder/ sharded with an index,
//                vae/ one file, tokenizer/spiece.model; names per chroma-spec.md §1.2–§1.4. Written
//                here from the spec tables, independently of src/io/name_tables.cpp, so that a wrong
//                engine table fails the tests instead of round-tripping.
//   fp8 scaled   ComfyUI "scaled" files: every linear weight as float8_e4m3fn with a per-tensor
//                "<layer>.scale_weight" = max|w| / 448, plus the "scaled_fp8" marker.
// Weights are copied in their stored dtype (bf16), so the diffusers layout is lossless.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "testdata.h"

namespace chroma::test {

namespace fs = std::filesystem;

// One stored tensor to write: a name and a plain view (borrowed, or into `owned` storage).
struct Entry {
  std::string name;
  TensorView view;
};

// ---- names, original → diffusers (chroma-spec.md §1.2 and §1.4, read forwards) ---------------

// A diffusers DiT tensor: its name and the row block [begin, end) of the original it holds.
struct DiffusersPiece {
  std::string name;
  int64_t begin = 0, end = -1;  // end −1: all rows
};

// chroma-spec.md §1.2. C = hidden size (rows of img_in.weight).
inline std::vector<DiffusersPiece> dit_to_diffusers(const std::string& name, int64_t rows, int64_t C) {
  std::smatch m;
  static const std::regex qkv(R"(double_blocks\.(\d+)\.(img|txt)_attn\.qkv\.(weight|bias))");
  static const std::regex linear1(R"(single_blocks\.(\d+)\.linear1\.(weight|bias))");
  if (std::regex_match(name, m, qkv)) {
    const std::string b = "transformer_blocks." + m[1].str() + ".attn.", w = m[3].str();
    const bool img = m[2] == "img";
    return {{b + (img ? "to_q." : "add_q_proj.") + w, 0, C},
            {b + (img ? "to_k." : "add_k_proj.") + w, C, 2 * C},
            {b + (img ? "to_v." : "add_v_proj.") + w, 2 * C, 3 * C}};
  }
  if (std::regex_match(name, m, linear1)) {
    const std::string b = "single_transformer_blocks." + m[1].str() + ".", w = m[2].str();
    return {{b + "attn.to_q." + w, 0, C}, {b + "attn.to_k." + w, C, 2 * C}, {b + "attn.to_v." + w, 2 * C, 3 * C},
            {b + "proj_mlp." + w, 3 * C, rows}};
  }
  static const std::pair<std::regex, const char*> kRenames[] = {
      {std::regex(R"(^img_in\.)"), "x_embedder."},
      {std::regex(R"(^txt_in\.)"), "context_embedder."},
      {std::regex(R"(layers\.(\d+)\.in_layer\.)"), "layers.$1.linear_1."},
      {std::regex(R"(layers\.(\d+)\.out_layer\.)"), "layers.$1.linear_2."},
      {std::regex(R"(norms\.(\d+)\.scale$)"), "norms.$1.weight"},
      {std::regex(R"(^double_blocks\.(\d+)\.img_attn\.norm\.query_norm\.scale)"), "transformer_blocks.$1.attn.norm_q.weight"},
      {std::regex(R"(^double_blocks\.(\d+)\.img_attn\.norm\.key_norm\.scale)"), "transformer_blocks.$1.attn.norm_k.weight"},
      {std::regex(R"(^double_blocks\.(\d+)\.txt_attn\.norm\.query_norm\.scale)"), "transformer_blocks.$1.attn.norm_added_q.weight"},
      {std::regex(R"(^double_blocks\.(\d+)\.txt_attn\.norm\.key_norm\.scale)"), "transformer_blocks.$1.attn.norm_added_k.weight"},
      {std::regex(R"(^double_blocks\.(\d+)\.img_attn\.proj\.)"), "transformer_blocks.$1.attn.to_out.0."},
      {std::regex(R"(^double_blocks\.(\d+)\.txt_attn\.proj\.)"), "transformer_blocks.$1.attn.to_add_out."},
      {std::regex(R"(^double_blocks\.(\d+)\.img_mlp\.0\.)"), "transformer_blocks.$1.ff.net.0.proj."},
      {std::regex(R"(^double_blocks\.(\d+)\.img_mlp\.2\.)"), "transformer_blocks.$1.ff.net.2."},
      {std::regex(R"(^double_blocks\.(\d+)\.txt_mlp\.0\.)"), "transformer_blocks.$1.ff_context.net.0.proj."},
      {std::regex(R"(^double_blocks\.(\d+)\.txt_mlp\.2\.)"), "transformer_blocks.$1.ff_context.net.2."},
      {std::regex(R"(^single_blocks\.(\d+)\.norm\.query_norm\.scale)"), "single_transformer_blocks.$1.attn.norm_q.weight"},
      {std::regex(R"(^single_blocks\.(\d+)\.norm\.key_norm\.scale)"), "single_transformer_blocks.$1.attn.norm_k.weight"},
      {std::regex(R"(^single_blocks\.(\d+)\.linear2\.)"), "single_transformer_blocks.$1.proj_out."},
      {std::regex(R"(^final_layer\.linear\.)"), "proj_out."},
  };
  std::string out = name;
  for (const auto& [re, to] : kRenames) out = std::regex_replace(out, re, to);
  return {{out}};
}

// chroma-spec.md §1.4. `levels` = number of decoder up blocks (diffusers numbers them in reverse).
// Sets *squeeze for the mid-attention 1×1 conv weights diffusers stores as Linear [O, I].
inline std::string vae_to_diffusers(const std::string& name, int levels, bool* squeeze) {
  std::smatch m;
  std::string n = name;
  static const std::regex up(R"(^decoder\.up\.(\d+)\.(.*)$)");
  if (std::regex_match(name, m, up))
    n = "decoder.up_blocks." + std::to_string(levels - 1 - std::stoi(m[1].str())) + "." + m[2].str();
  static const std::pair<std::regex, const char*> kRenames[] = {
      {std::regex(R"(^encoder\.down\.(\d+)\.block\.)"), "encoder.down_blocks.$1.resnets."},
      {std::regex(R"(^encoder\.down\.(\d+)\.downsample\.)"), "encoder.down_blocks.$1.downsamplers.0."},
      {std::regex(R"(^decoder\.up_blocks\.(\d+)\.block\.)"), "decoder.up_blocks.$1.resnets."},
      {std::regex(R"(^decoder\.up_blocks\.(\d+)\.upsample\.)"), "decoder.up_blocks.$1.upsamplers.0."},
      {std::regex(R"(\.nin_shortcut\.)"), ".conv_shortcut."},
      {std::regex(R"(\.mid\.block_1\.)"), ".mid_block.resnets.0."},
      {std::regex(R"(\.mid\.block_2\.)"), ".mid_block.resnets.1."},
      {std::regex(R"(\.mid\.attn_1\.norm\.)"), ".mid_block.attentions.0.group_norm."},
      {std::regex(R"(\.mid\.attn_1\.q\.)"), ".mid_block.attentions.0.to_q."},
      {std::regex(R"(\.mid\.attn_1\.k\.)"), ".mid_block.attentions.0.to_k."},
      {std::regex(R"(\.mid\.attn_1\.v\.)"), ".mid_block.attentions.0.to_v."},
      {std::regex(R"(\.mid\.attn_1\.proj_out\.)"), ".mid_block.attentions.0.to_out.0."},
      {std::regex(R"(^(encoder|decoder)\.norm_out\.)"), "$1.conv_norm_out."},
  };
  for (const auto& [re, to] : kRenames) n = std::regex_replace(n, re, to);
  *squeeze = n.find(".attentions.0.to_") != std::string::npos && n.ends_with(".weight");
  return n;
}

// ---- writers --------------------------------------------------------------------------------

inline std::vector<TensorView> named_views(const std::vector<Entry>& entries) {
  std::vector<TensorView> views;
  for (const Entry& e : entries) {
    TensorView v = e.view;
    v.name = e.name;
    views.push_back(v);
  }
  return views;
}

// Writes `entries` as `shards` files "<stem>-0000i-of-0000n.safetensors" plus "<stem>.safetensors.index.json".
inline void write_sharded(const fs::path& dir, const std::string& stem, const std::vector<Entry>& entries, int shards) {
  fs::create_directories(dir);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  const size_t per = (entries.size() + size_t(shards) - 1) / size_t(shards);
  for (int s = 0; s < shards; ++s) {
    const std::string file = stem + "-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    std::vector<Entry> part(entries.begin() + ptrdiff_t(std::min(entries.size(), s * per)),
                            entries.begin() + ptrdiff_t(std::min(entries.size(), (s + 1) * per)));
    for (const Entry& e : part) index["weight_map"][e.name] = file;
    io::write_safetensors_views((dir / file).string(), named_views(part));
  }
  std::ofstream(dir / (stem + ".safetensors.index.json")) << index.dump(2);
}

// The reference mini checkpoints, kept open while their views are written.
struct MiniCheckpoints {
  std::unique_ptr<io::SafetensorsFile> dit = io::SafetensorsFile::open(reference_path("chroma-mini.safetensors"));
  std::unique_ptr<io::SafetensorsFile> t5 = io::SafetensorsFile::open(reference_path("t5-mini.safetensors"));
  std::unique_ptr<io::SafetensorsFile> vae = io::SafetensorsFile::open(reference_path("ae-mini.safetensors"));
};

inline bool mini_checkpoints_exist() {
  for (const char* f : {"chroma-mini.safetensors", "t5-mini.safetensors", "ae-mini.safetensors"})
    if (!fs::exists(reference_path(f))) return false;
  return fs::exists(tokenizer_path("spiece.model"));
}

inline std::vector<Entry> diffusers_dit(const io::SafetensorsFile& f) {
  const int64_t C = f.get("img_in.weight").dim(0);
  std::vector<Entry> out;
  for (const auto& [name, v] : f.tensors())
    for (const DiffusersPiece& p : dit_to_diffusers(name, v.dim(0), C))
      out.push_back({p.name, p.end < 0 ? v : v.rows(p.begin, p.end)});
  return out;
}

inline std::vector<Entry> diffusers_vae(const io::SafetensorsFile& f) {
  int levels = 0;
  for (const auto& [name, v] : f.tensors())
    if (name.starts_with("decoder.up.")) levels = std::max(levels, std::stoi(name.substr(11)) + 1);
  std::vector<Entry> out;
  for (const auto& [name, v] : f.tensors()) {
    bool squeeze = false;
    Entry e{vae_to_diffusers(name, levels, &squeeze), v};
    if (squeeze) e.view.shape = {v.dim(0), v.dim(1)};  // [O, I, 1, 1] → Linear [O, I]
    out.push_back(e);
  }
  return out;
}

// Writes the lodestones/Chroma1-HD folder layout of the mini checkpoints under `root`.
inline void write_diffusers_layout(const fs::path& root) {
  MiniCheckpoints mini;
  write_sharded(root / "transformer", "diffusion_pytorch_model", diffusers_dit(*mini.dit), 2);
  std::vector<Entry> t5;  // HF T5EncoderModel names are the original ones (spec §1.3)
  for (const auto& [name, v] : mini.t5->tensors()) t5.push_back({name, v});
  write_sharded(root / "text_encoder", "model", t5, 2);
  fs::create_directories(root / "vae");
  io::write_safetensors_views((root / "vae" / "diffusion_pytorch_model.safetensors").string(),
                              named_views(diffusers_vae(*mini.vae)));
  fs::create_directories(root / "tokenizer");
  fs::copy_file(tokenizer_path("spiece.model"), root / "tokenizer" / "spiece.model",
                fs::copy_options::overwrite_existing);
  std::ofstream(root / "model_index.json") << R"({"_class_name": "ChromaPipeline"})";
}

// ---- fp8 e4m3fn ------------------------------------------------------------------------------

// float → float8_e4m3fn, round to nearest, ties to even (PyTorch's cast), saturated at ±448.
inline uint8_t to_e4m3(float x) {
  static const std::vector<float> kValues = [] {  // codes 0..126 = the non-negative finite values, increasing
    std::vector<float> v;
    for (int c = 0; c < 127; ++c) v.push_back(f8e4m3_to_f32(uint8_t(c)));
    return v;
  }();
  const float a = std::fabs(x);
  const size_t hi = size_t(std::lower_bound(kValues.begin(), kValues.end(), a) - kValues.begin());
  uint8_t code;
  if (hi == kValues.size()) code = 126;  // beyond 448: saturate
  else if (hi == 0 || kValues[hi] == a) code = uint8_t(hi);
  else {
    const float up = kValues[hi] - a, down = a - kValues[hi - 1];
    code = uint8_t(up < down ? hi : down < up ? hi - 1 : (hi % 2 == 0 ? hi : hi - 1));
  }
  return uint8_t(code | (std::signbit(x) ? 0x80 : 0));
}

inline TensorView raw_view(DType dtype, Shape shape, const void* data, size_t nbytes) {
  TensorView v;
  v.dtype = dtype;
  v.shape = std::move(shape);
  v.data = data;
  v.nbytes = nbytes;
  return v;
}

// Storage for quantised tensors (the views written point into it).
struct Fp8Storage {
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<std::vector<float>> scales;
};

// `entries` with every 2-D "*.weight" not in `keep` quantised to fp8 with a per-tensor scale
// max|w| / 448 (ComfyUI's convention), and the "scaled_fp8" marker under `prefix`.
inline std::vector<Entry> quantize_fp8_scaled(const std::vector<Entry>& entries, const std::string& prefix,
                                              const std::vector<std::string>& keep, Fp8Storage& storage) {
  std::vector<Entry> out;
  storage.bytes.reserve(entries.size() + 1);
  storage.scales.reserve(entries.size());
  for (const Entry& e : entries) {
    const bool linear = e.name.ends_with(".weight") && e.view.shape.size() == 2 &&
                        std::find(keep.begin(), keep.end(), e.name) == keep.end();
    if (!linear) {
      out.push_back(e);
      continue;
    }
    const Tensor w = e.view.to_f32();
    float amax = 0;
    for (float x : w.values()) amax = std::max(amax, std::fabs(x));
    const float scale = amax > 0 ? amax / 448.0f : 1.0f;
    std::vector<uint8_t>& q = storage.bytes.emplace_back(w.values().size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = to_e4m3(w.values()[i] / scale);
    out.push_back({e.name, raw_view(DType::F8_E4M3, e.view.shape, q.data(), q.size())});
    std::vector<float>& s = storage.scales.emplace_back(1, scale);
    const std::string layer = e.name.substr(0, e.name.size() - std::string(".weight").size());
    out.push_back({layer + ".scale_weight", raw_view(DType::F32, {}, s.data(), 4)});
  }
  storage.bytes.emplace_back();  // the marker: an empty fp8 tensor
  out.push_back({prefix + "scaled_fp8",
                 raw_view(DType::F8_E4M3, {0}, storage.bytes.back().data(), 0)});
  return out;
}

// A folder of single files in ComfyUI's fp8 scaled format: the DiT (with the "model.diffusion_model."
// prefix ComfyUI saves) and T5 quantised; the VAE and tokenizer as they are. File names say nothing.
inline void write_fp8_scaled_folder(const fs::path& root) {
  MiniCheckpoints mini;
  fs::create_directories(root);
  Fp8Storage storage;
  std::vector<Entry> dit, t5;
  for (const auto& [name, v] : mini.dit->tensors()) dit.push_back({"model.diffusion_model." + name, v});
  for (const auto& [name, v] : mini.t5->tensors()) t5.push_back({name, v});
  // Embedding tables are not linear layers: ComfyUI leaves them unscaled.
  const std::vector<std::string> t5_keep = {"shared.weight", "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"};
  io::write_safetensors_views((root / "a.safetensors").string(),
                              named_views(quantize_fp8_scaled(dit, "model.diffusion_model.", {}, storage)));
  io::write_safetensors_views((root / "b.safetensors").string(), named_views(quantize_fp8_scaled(t5, "", t5_keep, storage)));
  fs::copy_file(reference_path("ae-mini.safetensors"), root / "c.safetensors", fs::copy_options::overwrite_existing);
  fs::copy_file(tokenizer_path("spiece.model"), root / "spiece.model", fs::copy_options::overwrite_existing);
}

}  // namespace chroma::test

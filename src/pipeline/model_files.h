// Finding the model files: explicit paths first, then a `--models DIR` folder (the diffusers layout of
// lodestones/Chroma1-HD — transformer/, text_encoder/, tokenizer/, vae/ — or a folder of single files),
// else $CHROMA_MODELS, ./models and the `chromacpp pull` cache. Weights are recognised by their tensor
// names (io/formats.h), not by file names, so any file name and any supported format (original,
// diffusers, fp8 scaled) works.
#pragma once
#include <string>
#include <vector>

namespace chroma::pipeline {

struct ModelFiles {
  std::string dit;        // Chroma DiT: safetensors file or folder, or GGUF (io/formats.h)
  std::string t5;         // T5-XXL: safetensors file, shard index or folder, or GGUF
  std::string vae;        // Flux VAE: ae.safetensors or a diffusers vae/ folder
  std::string tokenizer;  // T5 spiece.model
};

// The folders searched for files not given explicitly: `models_dir` alone when set (chroma::Error if it
// is not a folder), otherwise $CHROMA_MODELS (when set), ./models, and the cache folder of
// lodestones/Chroma1-HD when `chromacpp pull` completed it (net/cache.h).
std::vector<std::string> model_search_dirs(const std::string& models_dir);

// What one folder holds, by content: each *.safetensors file and each sub-folder holding a shard index
// or one .safetensors file is classified as DiT, T5 or VAE; the tokenizer is spiece.model in the folder
// or in a sub-folder. Unset fields: not found. Two weight sets of one kind throw chroma::Error naming both.
ModelFiles find_model_files(const std::string& dir);

// Fills the unset paths of `files` from `dirs` (the first folder holding a component wins). Returns ""
// when all four are known, else a message (several lines) naming each missing component, its flag and
// where it is published.
// A Chroma1-Radiance DiT needs no VAE: its absence is then not reported.
std::string resolve_model_files(ModelFiles& files, const std::vector<std::string>& dirs);

}  // namespace chroma::pipeline

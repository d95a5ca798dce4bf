#include "pipeline/model_files.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "io/safetensors.h"
#include "models/chroma/config.h"
#include "net/cache.h"

namespace chroma::pipeline {
namespace {

namespace fs = std::filesystem;

// Where the weights are published, for the message shown when files are missing.
struct ModelSource {
  const char* flag;
  const char* what;
  const char* where;
};
const ModelSource kDit{"--dit", "Chroma DiT (safetensors file, or diffusers transformer/ folder)",
                       "https://huggingface.co/lodestones/Chroma1-HD (Chroma1-HD.safetensors or transformer/, Apache-2.0)"};
const ModelSource kT5{"--t5", "T5-XXL encoder (safetensors file, or folder with model.safetensors.index.json)",
                      "https://huggingface.co/comfyanonymous/flux_text_encoders (t5xxl_fp16.safetensors) or "
                      "text_encoder/ of lodestones/Chroma1-HD"};
const ModelSource kVae{"--vae", "Flux VAE (ae.safetensors, or diffusers vae/ folder)",
                       "https://huggingface.co/black-forest-labs/FLUX.1-schnell (ae.safetensors, Apache-2.0) or vae/ "
                       "of lodestones/Chroma1-HD"};
const ModelSource kTokenizer{"--tokenizer", "T5 SentencePiece model (spiece.model)",
                             "https://huggingface.co/black-forest-labs/FLUX.1-schnell (tokenizer_2/spiece.model) or "
                             "tokenizer/ of lodestones/Chroma1-HD"};

std::vector<fs::path> sorted_entries(const fs::path& dir) {
  std::vector<fs::path> entries;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e.path());
  std::sort(entries.begin(), entries.end());
  return entries;
}

// A sub-folder WeightStore::open can read: a shard index, or exactly one .safetensors file.
bool is_weight_folder(const fs::path& dir) {
  int files = 0;
  for (const fs::path& p : sorted_entries(dir)) {
    if (p.string().ends_with(".safetensors.index.json")) return true;
    files += p.extension() == ".safetensors";
  }
  return files == 1;
}

// Puts `path` into the slot of its kind; two weight sets of one kind are ambiguous.
void assign(ModelFiles& found, io::ModelKind kind, const std::string& path, const fs::path& dir) {
  std::string* slot = kind == io::ModelKind::DiT ? &found.dit
                      : kind == io::ModelKind::T5 ? &found.t5
                      : kind == io::ModelKind::VAE ? &found.vae
                                                   : nullptr;
  if (!slot) return;  // not a model this engine runs (e.g. a CLIP text encoder)
  if (!slot->empty()) {
    const ModelSource& s = kind == io::ModelKind::DiT ? kDit : kind == io::ModelKind::T5 ? kT5 : kVae;
    throw Error(dir.string() + ": two candidates for " + s.flag + ", " + *slot + " and " + path +
                "; choose one with " + s.flag);
  }
  *slot = path;
}

}  // namespace

std::vector<std::string> model_search_dirs(const std::string& models_dir) {
  if (!models_dir.empty()) {
    std::error_code ec;
    if (!fs::is_directory(models_dir, ec)) throw Error("--models " + models_dir + ": not a folder");
    return {models_dir};
  }
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("CHROMA_MODELS"); env && *env) dirs.emplace_back(env);
  dirs.emplace_back("models");
  // Last, what `chromacpp pull` downloaded, once the pull finished (net/cache.h): an interrupted pull's
  // folder is never taken for a complete model.
  try {
    const std::string pulled = net::repo_cache_dir(net::default_cache_dir(), net::kDefaultRepo);
    if (net::is_complete_pull(pulled)) dirs.push_back(pulled);
  } catch (const Error&) {
    // no cache folder configured (no $HOME): nothing pulled to use
  }
  return dirs;
}

ModelFiles find_model_files(const std::string& dir) {
  ModelFiles found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  // The tokenizer: the folder's own spiece.model first, then a sub-folder's (tokenizer/, tokenizer_2/).
  if (fs::is_regular_file(fs::path(dir) / "spiece.model", ec)) found.tokenizer = (fs::path(dir) / "spiece.model").string();
  for (const fs::path& p : sorted_entries(dir)) {
    if (fs::is_directory(p, ec)) {
      if (found.tokenizer.empty() && fs::is_regular_file(p / "spiece.model", ec)) found.tokenizer = (p / "spiece.model").string();
      if (is_weight_folder(p)) assign(found, io::WeightStore::open(p.string()).format().kind, p.string(), dir);
    } else if (p.extension() == ".safetensors") {
      // Only the header is parsed (the data is mapped, not read).
      assign(found, io::detect_format(io::SafetensorsFile::open(p.string())->tensors()).kind, p.string(), dir);
    }
  }
  return found;
}

std::string resolve_model_files(ModelFiles& files, const std::vector<std::string>& dirs) {
  std::string* slots[] = {&files.dit, &files.t5, &files.vae, &files.tokenizer};
  const ModelSource* sources[] = {&kDit, &kT5, &kVae, &kTokenizer};
  for (const std::string& dir : dirs) {
    if (std::all_of(std::begin(slots), std::end(slots), [](const std::string* s) { return !s->empty(); })) break;
    const ModelFiles found = find_model_files(dir);
    const std::string* from[] = {&found.dit, &found.t5, &found.vae, &found.tokenizer};
    for (size_t i = 0; i < 4; ++i)
      if (slots[i]->empty()) *slots[i] = *from[i];
  }
  // Chroma1-Radiance decodes its own pixels: no VAE needed (docs/radiance.md).
  bool vae_needed = true;
  if (files.vae.empty() && !files.dit.empty()) {
    try {
      vae_needed = !dit::is_radiance(io::WeightStore::open(files.dit));
    } catch (const Error&) {
      // an unreadable DiT is reported when the pipeline opens it
    }
  }
  std::string missing;
  for (size_t i = 0; i < 4; ++i)
    if (slots[i]->empty() && (slots[i] != &files.vae || vae_needed))
      missing += std::string("  ") + sources[i]->flag + "  " + sources[i]->what + "\n      from " + sources[i]->where + "\n";
  if (missing.empty()) return "";
  std::string searched;
  for (const std::string& d : dirs) searched += (searched.empty() ? "" : ", ") + d;
  return "model files not found in " + searched +
         " (searched by content: a diffusers folder like lodestones/Chroma1-HD, or a folder of single files). "
         "Download them with `chromacpp pull`, or pass them with --models DIR or the flags below ($CHROMA_MODELS, "
         "./models and the `chromacpp pull` cache are searched by default):\n" +
         missing;
}

}  // namespace chroma::pipeline

// LoRA adapters on the Chroma DiT (model.h set_loras, io/lora.h): each delta is attached to the row
// blocks the model multiplies with (weights.h linear_layers), then either kept beside the weights
// (runtime) or merged into copies of them stored in the base weight's own type (fuse).
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "models/chroma/model.h"
#include "tensor/quant.h"

namespace chroma::dit {

namespace {

using Layers = std::map<std::string, std::vector<LinearWeights*>>;

std::string quoted(const std::string& s) { return "'" + s + "'"; }

// A's columns must be the layer's inputs and B's rows its outputs.
void check_fits(const std::string& file, const io::LoraDelta& d, const TensorView& up, const LinearWeights& block,
                const std::string& what) {
  const TensorView& w = block.weight;
  if (d.down.dim(1) != w.dim(1))
    throw Error(file + ": LoRA tensor " + quoted(d.down.name) + " has shape " + shape_str(d.down.shape) + ", expected [" +
                std::to_string(d.down.dim(0)) + ", " + std::to_string(w.dim(1)) + "] to adapt " + what + " " +
                shape_str(w.shape));
  if (up.dim(0) != w.dim(0))
    throw Error(file + ": LoRA tensor " + quoted(d.up.name) + " has " + std::to_string(up.dim(0)) + " rows, expected " +
                std::to_string(w.dim(0)) + " to adapt " + what + " " + shape_str(w.shape));
}

// a [m, r] · b [r, n] in float32 (linear(a, bᵀ)), on the host: merged updates become stored weights.
Tensor matmul(const TensorView& a, const TensorView& b) {
  const Tensor bt = to_host(ops::transpose(ops::to_backend(b.to_f32())));
  return to_host(ops::linear(ops::to_backend(a.to_f32()), view_of(bt)));
}

// A LoHa / LoKr update as a dense float32 matrix [N_part, K] (io/lora.h gives the formulas), times scale.
Tensor dense_update(const io::LoraDelta& d, float scale) {
  Tensor out;
  if (d.kind == io::LoraDelta::Kind::LoHa) {
    out = matmul(d.w1a, d.w1b);
    const Tensor m2 = matmul(d.w2a, d.w2b);
    float* o = out.ptr();
    const float* m = m2.ptr();
    for (int64_t i = 0; i < out.numel(); ++i) o[i] *= m[i] * scale;
    return out;
  }
  const Tensor w1 = d.w1 ? d.w1.to_f32() : matmul(d.w1a, d.w1b), w2 = d.w2 ? d.w2.to_f32() : matmul(d.w2a, d.w2b);
  const int64_t a = w1.dim(0), b = w1.dim(1), c = w2.dim(0), e = w2.dim(1);
  out = Tensor({a * c, b * e});
  for (int64_t i = 0; i < a; ++i)
    for (int64_t k = 0; k < c; ++k)
      for (int64_t j = 0; j < b; ++j) {
        const float s = w1.ptr()[i * b + j] * scale;
        float* row = out.ptr() + (i * c + k) * (b * e) + j * e;
        const float* w2_row = w2.ptr() + k * e;
        for (int64_t l = 0; l < e; ++l) row[l] = s * w2_row[l];
      }
  return out;
}

// Adds `d` at `scale` to the row blocks of its target. A delta on the whole target (parts 1) splits
// its rows (B's, or the dense update's) over the blocks; a delta on one part (diffusers' to_q of qkv,
// proj_mlp of linear1) goes to that block.
void attach(const std::string& file, const io::LoraDelta& d, float scale, const std::vector<LinearWeights*>& blocks) {
  const bool low_rank = d.kind == io::LoraDelta::Kind::LowRank;
  const Shape shape = d.shape();
  int64_t rows = 0;  // of the whole target, or of the part the delta adapts
  if (d.parts == 1)
    for (const LinearWeights* b : blocks) rows += b->weight.dim(0);
  else if (d.part < int(blocks.size()))
    rows = blocks[size_t(d.part)]->weight.dim(0);
  std::shared_ptr<const Tensor> dense;
  if (!low_rank) {
    // The update's shape must be the layer's (or its part's) before it is computed: a LoKr's
    // Kronecker product can be far larger than its factors.
    const Shape want = {rows, blocks.front()->weight.dim(1)};
    if (shape != want)
      throw Error(file + ": LoRA update of " + d.target + (d.parts > 1 ? " part " + std::to_string(d.part) : "") + " (" +
                  quoted(d.keys.front()) + ") is " + shape_str(shape) + ", expected " + shape_str(want));
    if (scale != 0.0f) dense = std::make_shared<const Tensor>(dense_update(d, scale));
  }
  // Rows [at, at + n) of the update go to `block`.
  auto add = [&](LinearWeights& block, int64_t at, int64_t n, const std::string& what) {
    if (low_rank) {
      TensorView up = d.up.rows(at, at + n);
      check_fits(file, d, up, block, what);
      up.scale *= scale;
      if (scale != 0.0f) block.lora.push_back({d.down, up});  // scale 0 leaves the layer exactly as it was
    } else if (dense) {
      block.dense_lora.push_back(std::make_shared<const Tensor>(dense->rows(at, at + n)));
    }
  };
  if (d.parts == 1) {
    if (shape[0] != rows)  // (low-rank: a dense update was checked above)
      throw Error(file + ": LoRA tensor " + quoted(d.up.name) + " has " + std::to_string(shape[0]) + " rows, expected " +
                  std::to_string(rows) + " to adapt " + d.target);
    int64_t at = 0;
    for (LinearWeights* b : blocks) {
      const int64_t n = b->weight.dim(0);
      add(*b, at, n, d.target);
      at += n;
    }
  } else if (d.parts == int(blocks.size())) {
    add(*blocks[size_t(d.part)], 0, shape[0], d.target + " part " + std::to_string(d.part));
  } else {
    throw Error(file + ": LoRA tensor " + quoted(d.keys.front()) + " adapts part " + std::to_string(d.part) + " of " +
                std::to_string(d.parts) + " of " + d.target + ", which has " + std::to_string(blocks.size()) + " parts");
  }
}

// Attaches every delta of one LoRA whose target this model has; the rest are reported.
LoraReport attach_all(const LoraSetting& lora, Layers& layers) {
  const io::LoraFile& f = lora.file;
  if (!std::isfinite(lora.strength)) throw Error(f.path() + ": LoRA strength is not finite");
  LoraReport report{.path = f.path(), .applied_keys = 0, .unmatched_keys = f.unmatched()};
  for (const io::LoraDelta& d : f.deltas()) {
    const auto target = layers.find(d.target);
    if (target == layers.end()) {  // e.g. block 30 of a LoRA for a deeper model
      report.unmatched_keys.insert(report.unmatched_keys.end(), d.keys.begin(), d.keys.end());
      continue;
    }
    attach(f.path(), d, d.scale * lora.strength, target->second);
    report.applied_keys += d.keys.size();
  }
  if (report.applied_keys == 0)
    throw Error(f.path() + ": LoRA adapts no layer of this model (" + std::to_string(f.key_count()) + " tensors" +
                (report.unmatched_keys.empty() ? "" : ", e.g. " + quoted(report.unmatched_keys.front())) + ")");
  return report;
}

// W + Σ s·B·A, computed in float32 ([N, r] · [r, K] as linear(B, Aᵀ); the scale is on B's view),
// then stored in the base weight's type, so a fused model takes the memory of the base: bf16 stays
// bf16 (rounded to nearest even) and a GGUF block type is quantized again (one more rounding of the
// same kind as the base's). Types we do not encode (fp8 scaled) are stored as bf16.
std::shared_ptr<const FusedWeight> fuse(const LinearWeights& l) {
  Tensor w = l.weight.to_f32();  // [N, K], dequantized or widened
  for (const LowRankWeights& d : l.lora) ops::add(w, matmul(d.up, d.down));
  for (const auto& dense : l.dense_lora) ops::add(w, *dense);
  const quant::TypeTraits* type = quant::traits(fused_dtype(l.weight.dtype));
  auto fused = std::make_shared<FusedWeight>();
  fused->bytes.resize(*tensor_bytes(type->dtype, w.shape));
  type->quantize(w.ptr(), fused->bytes.data(), w.numel());
  TensorView& v = fused->view;
  v.name = l.weight.name + " (LoRA fused)";
  v.file = l.weight.file;
  v.dtype = type->dtype;
  v.shape = w.shape;
  v.data = fused->bytes.data();
  v.nbytes = fused->bytes.size();
  return fused;
}

}  // namespace

DType fused_dtype(DType base) {
  const quant::TypeTraits* type = quant::traits(base);
  return type && type->quantize ? base : DType::BF16;
}

std::vector<LoraReport> ChromaModel::set_loras(std::span<const LoraSetting> loras, LoraMode mode) {
  // Built aside and swapped in at the end, so an error leaves the current adapters in place.
  ChromaWeights weights = base_weights_;
  Layers layers = linear_layers(weights);
  std::vector<LoraReport> reports;
  std::vector<io::LoraFile> files;
  for (const LoraSetting& lora : loras) {
    reports.push_back(attach_all(lora, layers));
    files.push_back(lora.file);  // keeps the mapping the views point into
  }

  // Fuse mode merges every adapter; LoHa / LoKr updates are merged in either mode.
  std::vector<std::shared_ptr<const FusedWeight>> fused;
  for (auto& [name, blocks] : layers)
    for (LinearWeights* b : blocks) {
      if (b->dense_lora.empty() && (mode != LoraMode::Fuse || b->lora.empty())) continue;
      fused.push_back(fuse(*b));
      b->weight = fused.back()->view;
      b->lora.clear();
      b->dense_lora.clear();
    }
  if (mode == LoraMode::Fuse) files.clear();  // the fused weights no longer read the LoRA files

  weights_ = std::move(weights);
  lora_files_ = std::move(files);
  fused_ = std::move(fused);
  return reports;
}

}  // namespace chroma::dit

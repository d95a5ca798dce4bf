// `chromacpp quantize` and `chromacpp info`: converting a Chroma DiT or T5 encoder checkpoint to a GGUF
// file stable-diffusion.cpp and ComfyUI-GGUF read, and summarising any weight file.
//
// Written like theirs (ComfyUI-GGUF tools/convert.py, loader.py): DiT tensors under the BFL names
// without a prefix and general.architecture "flux"; T5 under llama.cpp names (io/gguf.h) and
// "t5encoder"; both with general.quantization_version 2 and general.file_type (llama.cpp's
// LLAMA_FTYPE). Only 2-D matrices of the transformer blocks are quantized; the approximator
// (distilled_guidance_layer), the embeddings (img_in, txt_in; T5 shared and relative_attention_bias),
// the final layer, and every norm and bias keep their stored precision (F32/F16/BF16; F8 widened
// to BF16 exactly, scaled or split weights to F32).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "io/formats.h"
#include "io/safetensors.h"

namespace chroma::io {

// "q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "bf16", "f16", "f32" (any case) → the dtype; throws naming
// the choices. The float choices convert the quantizable matrices (the rest keep their precision).
DType parse_quantize_type(const std::string& name);

// Whether the tensor `name` (original naming) of a `kind` model is quantized to a block type. A matrix
// whose rows are not whole blocks (K not a multiple of 32 for Q8_0/Q4_0, 256 for the K types) keeps its
// precision: ggml has no partial blocks. Full-size Chroma and T5-XXL have none (K = 3072, 12288, 15360;
// 4096, 10240); the reference minis do (t5-mini's K = 128 under the K types).
bool is_quantizable(ModelKind kind, const std::string& name, const TensorView& v, DType type);

struct QuantizeReport {
  ModelKind kind = ModelKind::Unknown;
  int quantized = 0, kept = 0;  // tensors converted to `type` / written in their own precision
  size_t bytes_in = 0, bytes_out = 0;
};

// Reads `in` (anything WeightStore::open reads) and writes `out` as GGUF, atomically.
// Throws chroma::Error for a model that is neither a Chroma DiT nor a T5 encoder, and when `out` is
// any file `in` resolves to — the file, the shard index or one of its shards (the atomic rename
// would replace the checkpoint).
QuantizeReport quantize_model(const std::string& in, const std::string& out, DType type);

struct WeightSummary {
  Format format;
  std::map<std::string, int> type_counts;     // dtype name → tensors
  std::map<std::string, size_t> type_bytes;   // dtype name → bytes
  int64_t parameters = 0;
  size_t bytes = 0;
};
WeightSummary summarize(const WeightStore& store);

}  // namespace chroma::io

// The memory plan of a text-to-image run: an estimate of the peak resident memory, made from the
// weight files' headers and the image size before anything is loaded, so a run that cannot fit is
// refused with a clear message instead of being killed by the OOM killer halfway through.
//
// Phases run one after another and each model is resident only during its own phase
// (pipeline.h), so the peak is the largest phase:
//   phase peak = process base + resident weights + activations
// Resident weights are the model's whole stored bytes by default (weights are mapped and every page
// gets touched), and with --low-memory the weights outside the streamed blocks plus the largest
// block: T5 encoder.block.N, the DiT's double_blocks.N / single_blocks.N and its approximator are
// released after use (io/residency.h); the VAE (~170 MB) is never streamed.
// Activations are upper bounds from the sizes of the run (memory_plan.cpp gives the formulas).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/lora.h"
#include "io/safetensors.h"

namespace chroma::pipeline {

// What the estimate needs to know about the run besides the weights.
struct RunShape {
  int width = 0, height = 0;       // pixels
  std::vector<int64_t> text_rows;  // T5 output rows of each DiT sequence: {pos} or {pos, neg} (CFG)
  int vae_tile = 0;                // tiled decoding: tile side in latent pixels (vae/tiled.h); 0 = whole image
};

struct PhaseEstimate {
  std::string phase;              // "LoRA fusing", "text encoding", "denoising", "decoding"
  size_t weight_bytes = 0;        // Σ stored bytes of every tensor of the model
  size_t streamed_bytes = 0;      // the part of weight_bytes in blocks --low-memory releases after use
  size_t largest_block_bytes = 0; // the largest such block: what --low-memory keeps resident at once
  size_t activation_bytes = 0;    // upper bound of the live activations and scratch
  size_t held_bytes = 0;          // memory an earlier phase of the run allocated and keeps (fused LoRA weights)

  size_t resident_weight_bytes(bool low_memory) const;
  size_t peak_bytes(bool low_memory) const;  // kBaseBytes + held + resident weights + activations
};

// The LoRAs of a run, as far as memory goes (lora_memory()).
struct LoraMemory {
  size_t fused_bytes = 0;         // fuse mode: the merged copies this run allocates, held from then on
  size_t fuse_scratch_bytes = 0;  // while fusing: float32 W and s·B·A of the largest adapted layer
  size_t replaced_bytes = 0;      // fuse mode: the base weights the (new or earlier) copies stand for, not read
  size_t adapter_bytes = 0;       // runtime mode: the LoRA tensors, read at every step
};

// Resident memory of the process before any model: code, libraries, thread stacks, allocator slack.
inline constexpr size_t kBaseBytes = size_t(256) << 20;

struct MemoryPlan {
  std::vector<PhaseEstimate> phases;  // in run order: text encoding, denoising, decoding

  const PhaseEstimate& largest_phase(bool low_memory) const;
  size_t peak_bytes(bool low_memory) const { return largest_phase(low_memory).peak_bytes(low_memory); }
};

// The plan from the three opened stores (prefixes already stripped, as the pipeline opens them).
// Only headers are read: the weights' pages are not touched.
// With LoRAs, a first "LoRA fusing" phase when lora.fused_bytes > 0, those bytes held in every later
// phase, and the denoising weights less lora.replaced_bytes plus lora.adapter_bytes.
MemoryPlan plan_memory(const io::WeightStore& t5, const io::WeightStore& dit, const io::WeightStore& vae,
                       const RunShape& run, const LoraMemory& lora = {});

// What the LoRA deltas `deltas` (of every file, strength ≠ 0) cost on the DiT `dit`: in fuse mode, and
// for LoHa / LoKr in either, the adapted weights' bytes stored as dit::fused_dtype (fused_bytes only
// when `allocate`: a LoRA set not fused yet), else the deltas' own bytes. Deltas naming no weight of
// `dit` count nothing.
LoraMemory lora_memory(const io::WeightStore& dit, const std::vector<const io::LoraDelta*>& deltas, bool fuse,
                       bool allocate);

// "MemAvailable:" of /proc/meminfo in bytes (the kernel's estimate of memory a new workload can
// use without swapping, page cache included); 0 when the text has no such line.
size_t parse_mem_available(const std::string& meminfo);
// parse_mem_available() of this machine's /proc/meminfo; 0 when unreadable.
size_t available_memory_bytes();

// Throws chroma::Error (one line: the estimate and its largest phase, the memory available, and the
// flag that would fit or --no-memory-check) when plan.peak_bytes(low_memory) exceeds
// available_bytes. available_bytes == 0 means unknown: no check.
void check_memory(const MemoryPlan& plan, bool low_memory, size_t available_bytes);

// "17.3 GiB" (one decimal).
std::string gib(size_t bytes);

}  // namespace chroma::pipeline

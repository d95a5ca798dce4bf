// Residency of memory-mapped weights (the `--low-memory` mode, pipeline/memory_plan.h).
//
// Weights are mapped, never copied (safetensors.h), so a model's resident memory is the pages of
// its file that it has touched. By default they stay mapped for the whole phase: the next step
// finds them in place. In low-memory mode a model hands a block's pages back as soon as the block
// has run (madvise MADV_DONTNEED): they leave this process's resident set but stay in the page
// cache while memory allows, so the next step maps them again without a copy, and at most one
// block's weights are resident at a time. The values read are the same either way.
#pragma once
#include <string>

#include "io/safetensors.h"
#include "tensor/tensor.h"

namespace chroma::io {

// What a model does with a block's mapped weight pages after the block has run.
enum class Residency {
  Keep,             // leave them mapped (default: fastest when the whole model fits)
  ReleaseAfterUse,  // drop them from this process (--low-memory)
};

// Drops this process's pages lying wholly inside the stored bytes of `view` (of each part, for a
// joined view). Only views of a mapped file are touched (view.file set); a view of a float32
// activation (view_of) is left alone, since dropping anonymous pages would zero them.
void release_pages(const TensorView& view);

// release_pages() of every tensor of `store` whose name starts with `prefix` (e.g.
// "double_blocks.3."); no-op for a prefix matching nothing.
void release_pages(const WeightStore& store, const std::string& prefix);

// Asks the kernel to start reading the mapped pages of the tensors under `prefix` from disk in the
// background (madvise MADV_WILLNEED): in low-memory mode the next block's weights then arrive while
// the current block computes. Into the page cache only; the resident set grows when they are used.
void prefetch_pages(const WeightStore& store, const std::string& prefix);

}  // namespace chroma::io

#include "pipeline/heap.h"

#include <malloc.h>

namespace chroma::pipeline {

void reuse_freed_activations() {
  // 1 GiB covers the largest activation of a 1024² run; larger blocks still get their own mapping.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  // Never trim the top of the heap by itself; release_free_heap() does it at phase ends.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

void release_free_heap() { malloc_trim(0); }

}  // namespace chroma::pipeline

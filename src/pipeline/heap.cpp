#include "pipeline/heap.h"

#include <malloc.h>

namespace chroma::pipeline {

void reuse_freed_activations() {
  // 1 GiB covers the largest activation of a 1024² run; larger blocks still get their own mapping.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  // Never trim the top of the heap by itself; release_free_heap() does it at phase ends.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  // One arena for every thread: a thread's own arena grows in 64 MiB heaps, so there a larger block
  // gets a fresh mapping whatever the threshold, and a run on another thread than main (the server's
  // worker) would page-fault its activations at every step again.
  mallopt(M_ARENA_MAX, 1);
}

void release_free_heap() { malloc_trim(0); }

}  // namespace chroma::pipeline

// Heap policy for a run. The denoising loop allocates and frees the same activation sizes every
// step ([L, 12288] floats is 100+ MB at 512²). glibc serves blocks above 32 MiB with a fresh mmap
// each time, which the kernel page-faults and zeroes again on every use: 11 M page faults and ~30 s
// of system time in a 2-step 512² run. Keeping large blocks in the heap lets step 2 onwards reuse
// step 1's memory (the heap acts as the step loop's arena); each phase hands its free memory back
// to the system when it ends, so one phase's scratch does not count against the next.
#pragma once

namespace chroma::pipeline {

// Serve every block below 1 GiB from the heap and keep freed memory there, on every thread
// (process-wide: one malloc arena; idempotent).
void reuse_freed_activations();
// Return the heap's free pages to the system (malloc_trim); called between phases.
void release_free_heap();

}  // namespace chroma::pipeline

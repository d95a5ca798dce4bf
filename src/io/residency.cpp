#include "io/residency.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>

namespace chroma::io {
namespace {

// Calls fn(first byte, byte count) for each stored range of a view of a mapped file: the view
// itself, or each part of a joined view. Views without a file (view_of an activation) are skipped.
template <typename Fn>
void for_each_mapped_range(const TensorView& view, const Fn& fn) {
  if (view.parts) {
    for (const TensorView& part : *view.parts) for_each_mapped_range(part, fn);
    return;
  }
  if (!view.file.empty() && view.data && view.nbytes) fn(reinterpret_cast<uintptr_t>(view.data), uintptr_t(view.nbytes));
}

template <typename Fn>
void for_each_mapped_range(const WeightStore& store, const std::string& prefix, const Fn& fn) {
  const auto& tensors = store.tensors();
  for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.starts_with(prefix); ++it)
    for_each_mapped_range(it->second, fn);
}

const uintptr_t kPage = uintptr_t(sysconf(_SC_PAGESIZE));

// Whole pages only: the pages at either end may hold a neighbour that is still in use.
// A failure only means the pages stay resident (a memory cost, not a wrong result): ignored.
void release_range(uintptr_t data, uintptr_t n) {
  const uintptr_t begin = (data + kPage - 1) / kPage * kPage, end = (data + n) / kPage * kPage;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// Advice only (the start must be page-aligned, so it is rounded down); failure is harmless.
void prefetch_range(uintptr_t data, uintptr_t n) {
  const uintptr_t begin = data / kPage * kPage;
  madvise(reinterpret_cast<void*>(begin), data + n - begin, MADV_WILLNEED);
}

}  // namespace

void release_pages(const TensorView& view) { for_each_mapped_range(view, release_range); }

void release_pages(const WeightStore& store, const std::string& prefix) {
  for_each_mapped_range(store, prefix, release_range);
}

void prefetch_pages(const WeightStore& store, const std::string& prefix) {
  for_each_mapped_range(store, prefix, prefetch_range);
}

}  // namespace chroma::io

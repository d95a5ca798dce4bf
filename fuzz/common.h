// Shared by the libFuzzer harnesses (fuzz/*.cpp).
//
// A harness defines LLVMFuzzerTestOneInput and one seed function, registered with
// CHROMA_FUZZ_SEEDS(fn): run with CHROMA_FUZZ_SEEDS=DIR, the harness writes its seed corpus to DIR
// and exits (scripts/fuzz.sh does this before each run). Seeds are made from the reference files
// in $CHROMA_TESTDATA (default ../shared/testdata) at run time, never committed.
// Only chroma::Error is an expected outcome: any other exception, crash, sanitizer report or hang
// is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace chroma::fuzz {

std::string testdata_dir();
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);

// A folder private to this process (under $TMPDIR), created on first use.
const std::string& scratch_dir();
// Writes the input to scratch_dir()/name and returns that path (the readers take paths).
std::string scratch_file(const std::string& name, const uint8_t* data, size_t size);

// Adds `bytes` to the seed folder as file `name`.
void add_seed(const std::string& dir, const std::string& name, const std::string& bytes);
// `bytes` cut to its first `n` bytes, for seeds of truncated files.
std::string prefix(const std::string& bytes, size_t n);

// Installed by CHROMA_FUZZ_SEEDS: writes the seeds and exits when CHROMA_FUZZ_SEEDS is set.
void seeds_if_asked(void (*make_seeds)(const std::string& dir));

}  // namespace chroma::fuzz

#define CHROMA_FUZZ_SEEDS(fn)                                   \
  extern "C" int LLVMFuzzerInitialize(int*, char***) {          \
    chroma::fuzz::seeds_if_asked(fn);                           \
    return 0;                                                   \
  }

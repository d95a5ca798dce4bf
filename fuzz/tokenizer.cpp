// Fuzzes the T5 tokenizer loader (text/tokenizer.cpp: a SentencePiece model, checked to be the
// T5 vocabulary) and, when a mutated model loads, encoding a prompt with special tokens.
#include "common.h"
#include "tensor/error.h"
#include "text/tokenizer.h"

using namespace chroma;

namespace {

void make_seeds(const std::string& dir) {
  const std::string model = fuzz::read_file(fuzz::testdata_dir() + "/tokenizer/spiece.model");
  fuzz::add_seed(dir, "spiece.model", model);
  for (size_t n : {size_t(64), size_t(1000), size_t(10000), model.size() / 2})
    fuzz::add_seed(dir, "spiece.model." + std::to_string(n), fuzz::prefix(model, n));
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch_file("spiece.model", data, size);
  try {
    const text::T5Tokenizer tok(path);
    tok.encode("a photo of a cat <extra_id_3> </s>  with   spaces");
  } catch (const Error&) {
  }
  return 0;
}

// Fuzzes an uploaded image through io::decode_image (the server's path: PNG with transparency, JPEG,
// WebP, from memory) and, for the same bytes as a file, io::read_image (the CLI's path).
#include "common.h"
#include "io/image.h"
#include "tensor/error.h"

using namespace chroma;

namespace {

// Small images of each format and kind, encoded by our writers, plus cut copies.
void make_seeds(const std::string& dir) {
  io::Image img;
  img.width = 7;
  img.height = 5;
  for (int i = 0; i < 7 * 5 * 3; ++i) img.rgb.push_back(uint8_t(i * 37));
  img.text = {{"parameters", "a fox\nSteps: 2"}, {"chroma.cpp", "{\"seed\": 1}"}};
  for (io::ImageFormat f : {io::ImageFormat::Png, io::ImageFormat::Jpeg, io::ImageFormat::Webp}) {
    const std::vector<uint8_t> b = io::encode_image(img, f, 90);
    const std::string bytes(b.begin(), b.end()), name = io::image_format_name(f);
    fuzz::add_seed(dir, name, bytes);
    fuzz::add_seed(dir, name + ".half", fuzz::prefix(bytes, bytes.size() / 2));
  }
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  try {
    const io::Image img = io::decode_image(bytes, "upload");
    if (img.rgb.size() != size_t(img.width) * size_t(img.height) * 3) __builtin_trap();
    if (!img.alpha.empty() && img.alpha.size() != size_t(img.width) * size_t(img.height)) __builtin_trap();
  } catch (const Error&) {
  }
  try {
    io::read_image(fuzz::scratch_file("input.img", data, size));
  } catch (const Error&) {
  }
  return 0;
}

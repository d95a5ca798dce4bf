// Image files for tests: a PNG whose header claims another size (bad input), and an RGBA PNG (our
// writer makes RGB only; OpenAI's edit masks carry alpha).
#pragma once
#include <png.h>
#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

namespace chroma::test {

// Rewrites the IHDR size of PNG bytes and fixes the chunk's CRC (zlib's crc32, the PNG definition).
inline std::string png_with_size(std::string png, uint32_t w, uint32_t h) {
  const size_t ihdr = 8 + 4;  // signature, chunk length
  for (int i = 0; i < 4; ++i) {
    png[ihdr + 4 + size_t(i)] = char(w >> (24 - 8 * i));
    png[ihdr + 8 + size_t(i)] = char(h >> (24 - 8 * i));
  }
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(png.data() + ihdr), 4 + 13);
  for (int i = 0; i < 4; ++i) png[ihdr + 17 + size_t(i)] = char(crc >> (24 - 8 * i));
  return png;
}

// w × h RGBA pixels as PNG bytes, through libpng's simplified writer.
inline std::vector<uint8_t> rgba_png(int w, int h, const std::vector<uint8_t>& rgba) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(w);
  image.height = png_uint_32(h);
  image.format = PNG_FORMAT_RGBA;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, rgba.data(), 0, nullptr)) return {};
  std::vector<uint8_t> bytes(size);
  if (!png_image_write_to_memory(&image, bytes.data(), &size, 0, rgba.data(), 0, nullptr)) return {};
  bytes.resize(size);
  return bytes;
}

}  // namespace chroma::test

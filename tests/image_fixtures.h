// Image files for tests of bad input: a PNG whose header claims another size.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <string>

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

}  // namespace chroma::test

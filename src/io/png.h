// PNG output (libpng): 8-bit RGB with tEXt chunks (e.g. the generation parameters).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace chroma::io {

// rgb: height × width × 3 bytes, row-major. Written atomically (temp file + rename).
void write_png(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text = {});

// Reads an 8-bit RGB or RGBA PNG (alpha dropped) — for tests and, later, image-to-image.
std::vector<uint8_t> read_png(const std::string& path, int* width, int* height,
                              std::vector<std::pair<std::string, std::string>>* text = nullptr);

}  // namespace chroma::io

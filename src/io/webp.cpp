// The WebP codec of io/image.h (libwebp's simple API).
#include <webp/decode.h>
#include <webp/encode.h>

#include <cstdio>
#include <fstream>
#include <iterator>

#include "io/image.h"
#include "tensor/error.h"

namespace chroma::io {

Image decode_webp(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open");
  const std::streamoff size = in.tellg();
  // A WebP of the largest accepted image is far below this; a bigger file is not one we read.
  if (size <= 0 || size > (std::streamoff(256) << 20)) throw Error(path + ": not a readable WebP (size)");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  if (!in) throw Error(path + ": read failed");
  return decode_webp(bytes, path);
}

Image decode_webp(const std::vector<uint8_t>& bytes, const std::string& path) {
  if (bytes.size() > (size_t(256) << 20)) throw Error(path + ": not a readable WebP (size)");
  int w = 0, h = 0;
  if (!WebPGetInfo(bytes.data(), bytes.size(), &w, &h)) throw Error(path + ": not a readable WebP");
  check_image_size(path, w, h);
  uint8_t* rgb = WebPDecodeRGB(bytes.data(), bytes.size(), &w, &h);
  if (!rgb) throw Error(path + ": not a readable WebP (corrupt or truncated)");
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.assign(rgb, rgb + size_t(w) * size_t(h) * 3);
  WebPFree(rgb);
  return img;
}

void encode_webp(std::FILE* f, const Image& image, int quality) {
  uint8_t* out = nullptr;
  const size_t n = WebPEncodeRGB(image.rgb.data(), image.width, image.height, image.width * 3, float(quality), &out);
  if (n == 0) {
    WebPFree(out);
    throw Error("WebP encoding failed (the largest WebP side is 16383 px)");
  }
  const bool ok = std::fwrite(out, 1, n, f) == n;
  WebPFree(out);
  if (!ok) throw Error("write failed (disk full?)");
}

}  // namespace chroma::io

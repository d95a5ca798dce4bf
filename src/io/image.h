// 8-bit RGB images in and out: PNG (libpng), JPEG (libjpeg-turbo) and WebP (libwebp), recognised by
// content when read. Readers check the dimensions in the header before decoding anything, so a
// small file that claims 50000×50000 pixels is refused instead of allocating gigabytes. Writes are
// atomic (temp file + rename, io/atomic_file.h).
#pragma once
#include <cstdio>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace chroma::io {

using TextChunks = std::vector<std::pair<std::string, std::string>>;

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height × width × 3, row-major
  TextChunks text;           // PNG tEXt/iTXt chunks; JPEG COM markers (ours "key\0value", others {"comment", …})
  std::vector<uint8_t> alpha{};  // height × width when a PNG read had transparency; empty otherwise (never written)
};

// The largest image read: a side of 16384 px and 64 Mpx (192 MiB of RGB), far above any size the
// pipeline generates (8192²) so that any init image of a valid run fits after resizing.
inline constexpr int kMaxImageSide = 16384;
inline constexpr int64_t kMaxImagePixels = int64_t(64) << 20;

enum class ImageFormat { Png, Jpeg, Webp };
// "png", "jpeg"/"jpg", "webp"; throws chroma::Error naming the value otherwise.
ImageFormat parse_image_format(const std::string& name);
const char* image_format_name(ImageFormat format);
// The format a file name's extension implies (".jpg" → Jpeg), or Png for any other name.
ImageFormat image_format_of_path(const std::string& path);

// Whether the file starts like a PNG, JPEG or WebP (false for a missing file).
bool is_image_file(const std::string& path);

// Reads a PNG, JPEG or WebP file (grey, palette and alpha converted to RGB; alpha dropped).
// Throws chroma::Error naming the file: missing, not an image, corrupt or truncated, 0×0, or larger
// than the limits above.
Image read_image(const std::string& path);

// Writes the image atomically. Text chunks: PNG tEXt (iTXt for non-ASCII text); JPEG: one COM
// marker "key\0value" each, read back as the same chunks; WebP: none (libwebp's simple encoder has
// no metadata).
// quality: JPEG/WebP 1..100 (ignored for PNG).
void write_image(const std::string& path, const Image& image, ImageFormat format, int quality = 90);
// The same file's bytes, in memory (a server's response).
std::vector<uint8_t> encode_image(const Image& image, ImageFormat format, int quality = 90);

// An image from its file's bytes (a server's upload), recognised by content like read_image; `what`
// names it in errors ("image", "mask").
Image decode_image(const std::vector<uint8_t>& bytes, const std::string& what);

// Codecs, used by the functions above (image.cpp dispatches; png.cpp, jpeg.cpp, webp.cpp); `path`
// names the source in errors.
Image decode_png(std::FILE* f, const std::string& path);
Image decode_jpeg(std::FILE* f, const std::string& path);
Image decode_webp(const std::string& path);
Image decode_webp(const std::vector<uint8_t>& bytes, const std::string& path);
void encode_png(std::FILE* f, const Image& image);
void encode_jpeg(std::FILE* f, const Image& image, int quality);
void encode_webp(std::FILE* f, const Image& image, int quality);

// Throws chroma::Error naming `path` when width × height is 0 or beyond the limits above.
void check_image_size(const std::string& path, int64_t width, int64_t height);

}  // namespace chroma::io

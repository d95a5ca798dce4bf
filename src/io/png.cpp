// The PNG codec of io/image.h (libpng).
#include <png.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "io/image.h"
#include "tensor/error.h"

namespace chroma::io {
namespace {

// libpng reports errors through longjmp; the message goes into the caller's buffer.
struct ErrorBuffer {
  char message[256] = "";
};
void on_png_error(png_structp png, png_const_charp msg) {
  auto* err = static_cast<ErrorBuffer*>(png_get_error_ptr(png));
  std::snprintf(err->message, sizeof err->message, "%s", msg);
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

// libpng allocates (and zeroes) a text chunk's declared length before reading it, and its chunk size
// limit does not cover tEXt: a 150-byte upload claiming a 1.8 GB chunk took 5 s and 1.8 GB (found by
// fuzz/image). Its allocations go through here and a large one is an error. Pixel rows are ours
// (malloc'ed in decode_frame after the size check), so nothing legitimate comes near the bound.
constexpr size_t kMaxPngAllocation = size_t(64) << 20;
png_voidp bounded_malloc(png_structp png, png_alloc_size_t bytes) {
  if (bytes > kMaxPngAllocation) {
    char message[96];
    std::snprintf(message, sizeof message, "a chunk of %zu bytes, more than the %zu MiB allowed", size_t(bytes),
                  kMaxPngAllocation >> 20);
    png_error(png, message);
  }
  return std::malloc(bytes);
}
void bounded_free(png_structp, png_voidp p) { std::free(p); }

// What the C frame below hands back: malloc'ed buffers the caller frees, so that a longjmp out of
// libpng never skips a destructor.
struct Decoded {
  png_uint_32 width = 0, height = 0;
  bool has_alpha = false;       // rgb then holds RGBA
  unsigned char* rgb = nullptr;
  png_bytep* rows = nullptr;
  int n_text = 0;
  char** keys = nullptr;
  char** values = nullptr;
  bool too_large = false;
};

char* copy_string(const char* s) {
  const size_t n = std::strlen(s) + 1;
  char* c = static_cast<char*>(std::malloc(n));
  if (c) std::memcpy(c, s, n);
  return c;
}

// The libpng calls, kept apart from every C++ object with a destructor: libpng reports errors by
// longjmp back into this frame, which must hold nothing a jump could leave half-built.
bool decode_frame(FILE* f, Decoded* d, ErrorBuffer* err) {
  png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, err, on_png_error, on_png_warning, nullptr,
                                             bounded_malloc, bounded_free);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(err->message, sizeof err->message, "libpng initialisation failed");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_init_io(png, f);
  png_set_chunk_cache_max(png, 1000);  // at most this many text/unknown chunks
  png_read_info(png, info);
  d->width = png_get_image_width(png, info);
  d->height = png_get_image_height(png, info);
  if (d->width > png_uint_32(kMaxImageSide) || d->height > png_uint_32(kMaxImageSide) ||
      int64_t(d->width) * int64_t(d->height) > kMaxImagePixels) {  // refused before any pixel is allocated
    d->too_large = true;
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  // Any PNG to 8-bit RGB, or RGBA when it has transparency (an alpha channel or tRNS): palette and
  // grey expanded, 16-bit stripped.
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  d->has_alpha = png_get_channels(png, info) == 4;
  const size_t stride = size_t(d->width) * (d->has_alpha ? 4 : 3);
  d->rgb = static_cast<unsigned char*>(std::malloc(stride * d->height));
  d->rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * d->height));
  if (!d->rgb || !d->rows) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::snprintf(err->message, sizeof err->message, "out of memory");
    return false;
  }
  for (png_uint_32 y = 0; y < d->height; ++y) d->rows[y] = d->rgb + y * stride;
  png_read_image(png, d->rows);
  png_read_end(png, info);
  png_textp chunks = nullptr;
  const int n = png_get_text(png, info, &chunks, nullptr);
  d->keys = static_cast<char**>(std::calloc(size_t(n) + 1, sizeof(char*)));
  d->values = static_cast<char**>(std::calloc(size_t(n) + 1, sizeof(char*)));
  for (int i = 0; d->keys && d->values && i < n; ++i) {
    d->keys[i] = copy_string(chunks[i].key);
    d->values[i] = copy_string(chunks[i].text ? chunks[i].text : "");
    d->n_text = i + 1;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

void free_decoded(Decoded& d) {
  for (int i = 0; i < d.n_text; ++i) {
    std::free(d.keys[i]);
    std::free(d.values[i]);
  }
  std::free(d.keys);
  std::free(d.values);
  std::free(d.rows);
  std::free(d.rgb);
}

bool encode_frame(FILE* f, const uint8_t* rgb, int width, int height, png_text* chunks, int n_chunks, ErrorBuffer* err) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(err->message, sizeof err->message, "libpng initialisation failed");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (n_chunks > 0) png_set_text(png, info, chunks, n_chunks);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) png_write_row(png, const_cast<png_bytep>(rgb + size_t(y) * size_t(width) * 3));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

Image decode_png(std::FILE* f, const std::string& path) {
  Decoded d;
  ErrorBuffer err;
  const bool ok = decode_frame(f, &d, &err);
  Image img;
  if (ok) {
    img.width = int(d.width);
    img.height = int(d.height);
    const size_t pixels = size_t(d.width) * d.height;
    if (d.has_alpha) {
      img.rgb.resize(pixels * 3);
      img.alpha.resize(pixels);
      for (size_t i = 0; i < pixels; ++i) {
        for (int c = 0; c < 3; ++c) img.rgb[i * 3 + size_t(c)] = d.rgb[i * 4 + size_t(c)];
        img.alpha[i] = d.rgb[i * 4 + 3];
      }
    } else {
      img.rgb.assign(d.rgb, d.rgb + pixels * 3);
    }
    for (int i = 0; i < d.n_text; ++i) img.text.emplace_back(d.keys[i], d.values[i]);
  }
  free_decoded(d);
  if (d.too_large) check_image_size(path, d.width, d.height);
  if (!ok) throw Error(path + ": not a readable PNG: " + err.message);
  check_image_size(path, img.width, img.height);
  return img;
}

void encode_png(std::FILE* f, const Image& image) {
  // tEXt holds Latin-1; text with other characters (a UTF-8 prompt) goes into an iTXt chunk.
  std::vector<png_text> chunks(image.text.size());
  for (size_t i = 0; i < image.text.size(); ++i) {
    const auto& [key, value] = image.text[i];
    chunks[i] = png_text{};
    chunks[i].compression = is_ascii(value) ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(key.c_str());
    chunks[i].text = const_cast<char*>(value.c_str());
    if (is_ascii(value)) chunks[i].text_length = value.size();
    else chunks[i].itxt_length = value.size();
  }
  ErrorBuffer err;
  const bool ok = encode_frame(f, image.rgb.data(), image.width, image.height, chunks.data(), int(chunks.size()), &err);
  if (!ok) throw Error(std::string("PNG write failed: ") + err.message);
}

}  // namespace chroma::io

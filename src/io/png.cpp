#include "io/png.h"

#include <png.h>

#include <cstdio>
#include <memory>

#include "io/atomic_file.h"
#include "tensor/error.h"

namespace chroma::io {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

// libpng reports errors through longjmp; route them into a message we turn into chroma::Error.
void on_png_error(png_structp png, png_const_charp msg) {
  auto* out = static_cast<std::string*>(png_get_error_ptr(png));
  *out = msg;
  png_longjmp(png, 1);
}
void on_png_warning(png_structp, png_const_charp) {}

// The libpng calls, kept apart from every C++ object with a destructor: libpng reports errors by
// longjmp back into this frame, which must hold nothing a jump could leave half-built.
bool encode_png(FILE* f, const uint8_t* rgb, int width, int height, png_text* chunks, int n_chunks, std::string* err) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    *err = "libpng initialisation failed";
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

}  // namespace

void write_png(const std::string& path, const std::vector<uint8_t>& rgb, int width, int height,
               const std::vector<std::pair<std::string, std::string>>& text) {
  if (width <= 0 || height <= 0 || rgb.size() != size_t(width) * size_t(height) * 3)
    throw Error(path + ": image buffer does not match " + std::to_string(width) + "×" + std::to_string(height) + " RGB");
  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(text[i].first.c_str());
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
  }
  write_atomically(path, [&](const std::string& tmp) {
    File f(std::fopen(tmp.c_str(), "wb"));
    if (!f) throw Error(path + ": cannot create the output file");
    std::string err;
    if (!encode_png(f.get(), rgb.data(), width, height, chunks.data(), int(chunks.size()), &err))
      throw Error(path + ": PNG write failed: " + err);
    if (std::fflush(f.get()) != 0 || std::ferror(f.get())) throw Error(path + ": write failed (disk full?)");
  });
}

std::vector<uint8_t> read_png(const std::string& path, int* width, int* height,
                              std::vector<std::pair<std::string, std::string>>* text) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw Error(path + ": cannot open");
  std::string err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, on_png_error, on_png_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw Error(path + ": libpng initialisation failed");
  }
  std::vector<uint8_t> rgb;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(path + ": not a readable PNG: " + err);
  }
  png_init_io(png, f.get());
  png_read_png(png, info, PNG_TRANSFORM_STRIP_16 | PNG_TRANSFORM_PACKING | PNG_TRANSFORM_EXPAND | PNG_TRANSFORM_STRIP_ALPHA,
               nullptr);
  const int w = int(png_get_image_width(png, info)), h = int(png_get_image_height(png, info));
  const int channels = png_get_channels(png, info);
  png_bytepp rows = png_get_rows(png, info);
  rgb.resize(size_t(w) * size_t(h) * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[(size_t(y) * size_t(w) + size_t(x)) * 3 + size_t(c)] = rows[y][x * channels + (channels >= 3 ? c : 0)];
  if (text) {
    png_textp chunks = nullptr;
    int n = png_get_text(png, info, &chunks, nullptr);
    for (int i = 0; i < n; ++i) text->emplace_back(chunks[i].key, std::string(chunks[i].text, chunks[i].text_length));
  }
  png_destroy_read_struct(&png, &info, nullptr);
  *width = w;
  *height = h;
  return rgb;
}

}  // namespace chroma::io

// The JPEG codec of io/image.h (libjpeg-turbo).
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>  // after <cstdio>: it uses FILE and size_t without including them

#include "io/image.h"
#include "tensor/error.h"

namespace chroma::io {
namespace {

// libjpeg's error_exit must not return: it longjmps back into the C frame with the message.
struct ErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = "";
};
void on_jpeg_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

constexpr int kMaxComments = 16;

struct Decoded {
  JDIMENSION width = 0, height = 0;
  unsigned char* rgb = nullptr;  // malloc'ed, freed by the caller
  char* comments[kMaxComments] = {};  // malloc'ed COM marker bytes
  unsigned comment_lengths[kMaxComments] = {};
  int n_comments = 0;
  bool too_large = false;
};

// The libjpeg calls, in a frame without C++ objects (longjmp-safe).
bool decode_frame(FILE* f, Decoded* d, ErrorManager* err) {
  jpeg_decompress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->base);
  err->base.error_exit = on_jpeg_error;
  if (setjmp(err->jump)) {
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_save_markers(&cinfo, JPEG_COM, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  d->width = cinfo.image_width;
  d->height = cinfo.image_height;
  if (d->width > JDIMENSION(kMaxImageSide) || d->height > JDIMENSION(kMaxImageSide) ||
      int64_t(d->width) * int64_t(d->height) > kMaxImagePixels || d->width == 0 || d->height == 0) {
    d->too_large = true;
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m && d->n_comments < kMaxComments; m = m->next) {
    if (m->marker != JPEG_COM) continue;
    char* c = static_cast<char*>(std::malloc(m->data_length + 1));
    if (!c) break;
    std::memcpy(c, m->data, m->data_length);
    d->comments[d->n_comments] = c;
    d->comment_lengths[d->n_comments++] = m->data_length;
  }
  cinfo.out_color_space = JCS_RGB;  // grey converted; CMYK is refused by libjpeg with a message
  jpeg_start_decompress(&cinfo);
  const size_t stride = size_t(cinfo.output_width) * 3;
  d->rgb = static_cast<unsigned char*>(std::malloc(stride * cinfo.output_height));
  if (!d->rgb || cinfo.output_components != 3) {
    std::snprintf(err->message, sizeof err->message, "cannot decode to RGB");
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = d->rgb + cinfo.output_scanline * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

bool encode_frame(FILE* f, const unsigned char* rgb, int width, int height, int quality, const char* const* comments,
                  const unsigned* lengths, int n_comments, ErrorManager* err) {
  jpeg_compress_struct cinfo;
  cinfo.err = jpeg_std_error(&err->base);
  err->base.error_exit = on_jpeg_error;
  if (setjmp(err->jump)) {
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = JDIMENSION(width);
  cinfo.image_height = JDIMENSION(height);
  cinfo.input_components = 3;
  cinfo.in_color_space = JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  for (int i = 0; i < n_comments; ++i)
    jpeg_write_marker(&cinfo, JPEG_COM, reinterpret_cast<const JOCTET*>(comments[i]), lengths[i]);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb + size_t(cinfo.next_scanline) * size_t(width) * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

}  // namespace

Image decode_jpeg(std::FILE* f, const std::string& path) {
  Decoded d;
  ErrorManager err;
  const bool ok = decode_frame(f, &d, &err);
  Image img;
  if (ok) {
    img.width = int(d.width);
    img.height = int(d.height);
    img.rgb.assign(d.rgb, d.rgb + size_t(d.width) * d.height * 3);
    // "key\0value" is a text chunk this writer stored; any other comment is {"comment", text}.
    for (int i = 0; i < d.n_comments; ++i) {
      const std::string c(d.comments[i], d.comment_lengths[i]);
      const size_t nul = c.find('\0');
      if (nul == std::string::npos) img.text.emplace_back("comment", c);
      else img.text.emplace_back(c.substr(0, nul), c.substr(nul + 1));
    }
  }
  std::free(d.rgb);
  for (int i = 0; i < d.n_comments; ++i) std::free(d.comments[i]);
  if (d.too_large) check_image_size(path, d.width, d.height);
  if (!ok) throw Error(path + ": not a readable JPEG: " + err.message);
  return img;
}

void encode_jpeg(std::FILE* f, const Image& image, int quality) {
  // A JPEG has no text chunks: each goes into a COM marker as "key\0value" (65533 bytes at most each).
  std::vector<std::string> comments;
  for (const auto& [key, value] : image.text) {
    comments.push_back(key + '\0' + value);
    if (comments.back().size() > 65533 || comments.size() > size_t(kMaxComments))
      throw Error("JPEG write failed: text chunk '" + key + "' does not fit a JPEG comment");
  }
  std::vector<const char*> ptrs;
  std::vector<unsigned> lengths;
  for (const std::string& c : comments) {
    ptrs.push_back(c.data());
    lengths.push_back(unsigned(c.size()));
  }
  ErrorManager err;
  const bool ok = encode_frame(f, image.rgb.data(), image.width, image.height, quality, ptrs.data(), lengths.data(),
                               int(ptrs.size()), &err);
  if (!ok) throw Error(std::string("JPEG write failed: ") + err.message);
}

}  // namespace chroma::io

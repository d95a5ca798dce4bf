// The JPEG codec of io/image.h (libjpeg-turbo).
#include <csetjmp>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

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

struct Decoded {
  JDIMENSION width = 0, height = 0;
  unsigned char* rgb = nullptr;  // malloc'ed, freed by the caller
  char* comment = nullptr;       // malloc'ed COM marker text, or null
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
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
    if (m->marker == JPEG_COM && !d->comment && (d->comment = static_cast<char*>(std::malloc(m->data_length + 1)))) {
      std::memcpy(d->comment, m->data, m->data_length);
      d->comment[m->data_length] = 0;
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

bool encode_frame(FILE* f, const unsigned char* rgb, int width, int height, int quality, const char* comment,
                  size_t comment_len, ErrorManager* err) {
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
  if (comment) jpeg_write_marker(&cinfo, JPEG_COM, reinterpret_cast<const JOCTET*>(comment), unsigned(comment_len));
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(rgb + size_t(cinfo.next_scanline) * size_t(width) * 3);
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

}  // namespace

Image decode_jpeg(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  Decoded d;
  ErrorManager err;
  const bool ok = decode_frame(f, &d, &err);
  std::fclose(f);
  Image img;
  if (ok) {
    img.width = int(d.width);
    img.height = int(d.height);
    img.rgb.assign(d.rgb, d.rgb + size_t(d.width) * d.height * 3);
    if (d.comment) img.text.emplace_back("comment", d.comment);
  }
  std::free(d.rgb);
  std::free(d.comment);
  if (d.too_large) check_image_size(path, d.width, d.height);
  if (!ok) throw Error(path + ": not a readable JPEG: " + err.message);
  return img;
}

void encode_jpeg_file(const std::string& tmp_path, const Image& image, int quality) {
  // The generation parameters as a COM marker (a JPEG has no text chunks); 65533 bytes at most.
  const std::string* comment = nullptr;
  for (const auto& [key, value] : image.text)
    if (key == "parameters" && value.size() <= 65533) comment = &value;
  std::FILE* f = std::fopen(tmp_path.c_str(), "wb");
  if (!f) throw Error("cannot create the output file");
  ErrorManager err;
  const bool ok = encode_frame(f, image.rgb.data(), image.width, image.height, quality,
                               comment ? comment->c_str() : nullptr, comment ? comment->size() : 0, &err);
  const bool flushed = std::fflush(f) == 0 && !std::ferror(f);
  std::fclose(f);
  if (!ok) throw Error(std::string("JPEG write failed: ") + err.message);
  if (!flushed) throw Error("write failed (disk full?)");
}

}  // namespace chroma::io

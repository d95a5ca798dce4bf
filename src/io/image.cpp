#include "io/image.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include <unistd.h>

#include "io/atomic_file.h"
#include "io/untrusted.h"
#include "tensor/error.h"

namespace chroma::io {

ImageFormat parse_image_format(const std::string& name) {
  if (name == "png") return ImageFormat::Png;
  if (name == "jpeg" || name == "jpg") return ImageFormat::Jpeg;
  if (name == "webp") return ImageFormat::Webp;
  throw Error("image format '" + name + "': must be png, jpeg or webp");
}

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::Png: return "png";
    case ImageFormat::Jpeg: return "jpeg";
    case ImageFormat::Webp: return "webp";
  }
  return "?";
}

ImageFormat image_format_of_path(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (ext == ".jpg" || ext == ".jpeg") return ImageFormat::Jpeg;
  if (ext == ".webp") return ImageFormat::Webp;
  return ImageFormat::Png;
}

void check_image_size(const std::string& path, int64_t width, int64_t height) {
  if (width <= 0 || height <= 0)
    throw Error(path + ": image is " + std::to_string(width) + "×" + std::to_string(height) + ": empty");
  if (width > kMaxImageSide || height > kMaxImageSide || width * height > kMaxImagePixels)
    throw Error(path + ": image is " + std::to_string(width) + "×" + std::to_string(height) +
                ", larger than the " + std::to_string(kMaxImageSide) + " px side / " +
                std::to_string(kMaxImagePixels >> 20) + " Mpx this reader accepts");
}

namespace {
// The format the first bytes announce, or nothing.
// Only a regular file is opened (untrusted.h InputFile): a FIFO given as an image must not block.
std::optional<ImageFormat> sniff_bytes(const unsigned char* magic, size_t n) {
  if (n >= 8 && std::memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::Png;
  if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 12 && std::memcmp(magic, "RIFF", 4) == 0 && std::memcmp(magic + 8, "WEBP", 4) == 0) return ImageFormat::Webp;
  return std::nullopt;
}

std::optional<ImageFormat> sniff(const std::string& path, bool must_open) {
  std::optional<InputFile> file;
  try {
    file.emplace(path);
  } catch (const Error&) {
    if (must_open) throw;
    return std::nullopt;
  }
  unsigned char magic[12] = {};
  const ssize_t got = ::pread(file->fd(), magic, sizeof magic, 0);
  return sniff_bytes(magic, got > 0 ? size_t(got) : 0);
}

// Runs a FILE*-reading codec on `f` (null: `what` could not be opened), closing it whatever happens.
Image decode_stream(std::FILE* f, const std::string& what, Image (*decode)(std::FILE*, const std::string&)) {
  if (!f) throw Error(what + ": cannot open");
  try {
    Image img = decode(f, what);
    std::fclose(f);
    return img;
  } catch (...) {
    std::fclose(f);
    throw;
  }
}

// A file, or bytes in memory (fmemopen: a read-only FILE* over the buffer).
Image decode_file(const std::string& path, Image (*decode)(std::FILE*, const std::string&)) {
  return decode_stream(std::fopen(path.c_str(), "rb"), path, decode);
}
Image decode_buffer(const std::vector<uint8_t>& bytes, const std::string& what,
                    Image (*decode)(std::FILE*, const std::string&)) {
  return decode_stream(fmemopen(const_cast<uint8_t*>(bytes.data()), bytes.size(), "rb"), what, decode);
}
}  // namespace

Image decode_image(const std::vector<uint8_t>& bytes, const std::string& what) {
  const std::optional<ImageFormat> format = sniff_bytes(bytes.data(), bytes.size());
  if (!format) throw Error(what + ": not a PNG, JPEG or WebP image");
  switch (*format) {
    case ImageFormat::Png: return decode_buffer(bytes, what, decode_png);
    case ImageFormat::Jpeg: return decode_buffer(bytes, what, decode_jpeg);
    case ImageFormat::Webp: return decode_webp(bytes, what);
  }
  return {};
}

bool is_image_file(const std::string& path) { return sniff(path, false).has_value(); }

Image read_image(const std::string& path) {
  const std::optional<ImageFormat> format = sniff(path, true);
  if (!format) throw Error(path + ": not a PNG, JPEG or WebP image");
  switch (*format) {
    case ImageFormat::Png: return decode_file(path, decode_png);
    case ImageFormat::Jpeg: return decode_file(path, decode_jpeg);
    case ImageFormat::Webp: return decode_webp(path);
  }
  return {};
}

namespace {

void check_encodable(const std::string& what, const Image& image, int quality) {
  if (image.width <= 0 || image.height <= 0 || image.rgb.size() != size_t(image.width) * size_t(image.height) * 3)
    throw Error(what + ": image buffer does not match " + std::to_string(image.width) + "×" +
                std::to_string(image.height) + " RGB");
  if (quality < 1 || quality > 100) throw Error(what + ": quality " + std::to_string(quality) + ": must be 1 to 100");
}

void encode_to(std::FILE* f, const Image& image, ImageFormat format, int quality) {
  switch (format) {
    case ImageFormat::Png: return encode_png(f, image);
    case ImageFormat::Jpeg: return encode_jpeg(f, image, quality);
    case ImageFormat::Webp: return encode_webp(f, image, quality);
  }
}

}  // namespace

void write_image(const std::string& path, const Image& image, ImageFormat format, int quality) {
  check_encodable(path, image, quality);
  write_atomically(path, [&](const std::string& tmp) {
    try {
      std::FILE* f = std::fopen(tmp.c_str(), "wb");
      if (!f) throw Error("cannot create the output file");
      try {
        encode_to(f, image, format, quality);
      } catch (...) {
        std::fclose(f);
        throw;
      }
      const bool flushed = std::fflush(f) == 0 && !std::ferror(f);
      if (std::fclose(f) != 0 || !flushed) throw Error("write failed (disk full?)");
    } catch (const Error& e) {
      throw Error(path + ": " + e.what());  // the codecs only know the temporary name
    }
  });
}

std::vector<uint8_t> encode_image(const Image& image, ImageFormat format, int quality) {
  check_encodable("image", image, quality);
  char* data = nullptr;
  size_t size = 0;
  std::FILE* f = open_memstream(&data, &size);  // POSIX: a FILE* onto a growing buffer
  if (!f) throw Error("image: out of memory for the encoded image");
  bool ok = true;
  std::string why;
  try {
    encode_to(f, image, format, quality);
  } catch (const Error& e) {
    ok = false;
    why = e.what();
  }
  ok = std::fclose(f) == 0 && ok;  // fclose publishes data/size
  std::vector<uint8_t> bytes;
  if (ok) bytes.assign(reinterpret_cast<uint8_t*>(data), reinterpret_cast<uint8_t*>(data) + size);
  std::free(data);
  if (!ok) throw Error("image: " + (why.empty() ? std::string("encoding failed") : why));
  return bytes;
}

}  // namespace chroma::io

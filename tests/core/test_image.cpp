// Image codecs (io/image.h): exact PNG round trip with text (UTF-8 in iTXt), JPEG and WebP close to
// the original (lossy), grey/alpha PNGs as RGB, and the refusals: not an image, truncated, 0×0,
// and a small file whose header claims a huge image (refused before any pixel is allocated).
#include <cmath>
#include <fstream>

#include <sys/resource.h>

#include "image_fixtures.h"
#include "io/image.h"
#include "testdata.h"

namespace chroma::io {
namespace {

namespace fs = std::filesystem;

Image gradient(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(size_t(w * h * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.rgb[size_t((y * w + x) * 3 + c)] = uint8_t((x * 7 + y * 3 + c * 50) % 256);
  return img;
}

// No wrap-around: smooth in every channel (lossy codecs are judged on content they are made for).
Image smooth(int w, int h) {
  Image img = gradient(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) img.rgb[size_t((y * w + x) * 3 + c)] = uint8_t(x * 2 + y + c * 20);
  return img;
}

double psnr(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  double se = 0;
  for (size_t i = 0; i < a.size(); ++i) se += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
  return se == 0 ? 99.0 : 10 * std::log10(255.0 * 255.0 * double(a.size()) / se);
}

std::string bytes_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void put_bytes(const fs::path& p, const std::string& b) { std::ofstream(p, std::ios::binary) << b; }

using test::error_of;

TEST(Image, PngRoundTripKeepsPixelsAndText) {
  Image img = gradient(5, 3);
  img.text = {{"parameters", "{\"seed\":42}"}, {"prompt", "un renard — 狐"}};
  const fs::path path = test::temp_path("roundtrip.png");
  write_image(path, img, ImageFormat::Png);
  const Image back = read_image(path);
  EXPECT_EQ(back.rgb, img.rgb);
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.text, img.text);
}

TEST(Image, JpegAndWebpStayCloseAndKeepTheJpegComment) {
  // A smooth 64×64 gradient: lossy codecs at quality 95 stay far above 30 dB.
  Image img = smooth(64, 64);
  img.text = {{"parameters", "{\"seed\":7}"}};
  for (ImageFormat f : {ImageFormat::Jpeg, ImageFormat::Webp}) {
    const fs::path path = test::temp_path(std::string("lossy.") + image_format_name(f));
    write_image(path, img, f, 95);
    const Image back = read_image(path);
    ASSERT_EQ(back.width * back.height, 64 * 64) << image_format_name(f);
    EXPECT_GT(psnr(back.rgb, img.rgb), 30.0) << image_format_name(f);
    if (f == ImageFormat::Jpeg) EXPECT_EQ(back.text, img.text) << "text chunks round-trip through COM markers";
  }
}

// encode_image gives in memory exactly the bytes write_image puts in the file (a server's response is
// the file a CLI run would write).
TEST(Image, EncodedBytesAreTheFilesBytes) {
  Image img = smooth(16, 8);
  img.text = {{"parameters", "a fox"}};
  for (ImageFormat f : {ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp}) {
    const fs::path path = test::temp_path(std::string("bytes.") + image_format_name(f));
    write_image(path, img, f, 90);
    const std::vector<uint8_t> bytes = encode_image(img, f, 90);
    EXPECT_EQ(std::string(bytes.begin(), bytes.end()), bytes_of(path)) << image_format_name(f);
  }
  Image bad = img;
  bad.rgb.pop_back();
  EXPECT_NE(error_of([&] { encode_image(bad, ImageFormat::Png); }).find("does not match"), std::string::npos);
  EXPECT_NE(error_of([&] { encode_image(img, ImageFormat::Jpeg, 0); }).find("quality"), std::string::npos);
}

// decode_image reads from memory what read_image reads from the file; a PNG's transparency comes
// back as alpha (OpenAI's edit masks mark with it), an opaque image has none.
TEST(Image, DecodesFromMemoryWithAlpha) {
  Image img = smooth(16, 8);
  img.text = {{"parameters", "a fox"}};
  for (ImageFormat f : {ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp}) {
    const fs::path path = test::temp_path(std::string("mem.") + image_format_name(f));
    write_image(path, img, f, 90);
    const Image from_file = read_image(path), from_memory = decode_image(encode_image(img, f, 90), "upload");
    EXPECT_EQ(from_memory.rgb, from_file.rgb) << image_format_name(f);
    EXPECT_EQ(from_memory.text, from_file.text) << image_format_name(f);
    EXPECT_TRUE(from_memory.alpha.empty());
  }
  std::vector<uint8_t> rgba;
  for (int i = 0; i < 6; ++i) rgba.insert(rgba.end(), {uint8_t(10 * i), 20, 30, uint8_t(i % 2 ? 0 : 255)});
  const Image a = decode_image(test::rgba_png(3, 2, rgba), "mask");
  ASSERT_EQ(a.alpha.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(a.alpha[size_t(i)], i % 2 ? 0 : 255) << i;
    EXPECT_EQ(a.rgb[size_t(i) * 3], 10 * i) << i;
  }
  EXPECT_NE(error_of([] { decode_image({'n', 'o', 'p', 'e'}, "upload"); }).find("upload: not a PNG"), std::string::npos);
  std::vector<uint8_t> cut = encode_image(img, ImageFormat::Png);
  cut.resize(cut.size() / 2);
  EXPECT_NE(error_of([&] { decode_image(cut, "upload"); }).find("upload"), std::string::npos);
}

TEST(Image, FormatsByNameAndExtension) {
  EXPECT_EQ(parse_image_format("jpg"), ImageFormat::Jpeg);
  EXPECT_EQ(image_format_of_path("a/b.WEBP"), ImageFormat::Webp);
  EXPECT_EQ(image_format_of_path("out.jpeg"), ImageFormat::Jpeg);
  EXPECT_EQ(image_format_of_path("out"), ImageFormat::Png);
  EXPECT_NE(error_of([] { parse_image_format("gif"); }).find("gif"), std::string::npos);
}

using test::png_with_size;

TEST(Image, HugeHeadersAreRefusedBeforeDecoding) {
  const fs::path small = test::temp_path("small.png"), huge = test::temp_path("huge.png");
  write_image(small, gradient(16, 16), ImageFormat::Png);
  put_bytes(huge, png_with_size(bytes_of(small), 50000, 50000));
  EXPECT_NE(error_of([&] { read_image(huge); }).find("50000×50000"), std::string::npos) << error_of([&] { read_image(huge); });

  // JPEG: the SOF0 marker's height and width (big-endian, after length and precision).
  const fs::path jpg = test::temp_path("small.jpg"), huge_jpg = test::temp_path("huge.jpg");
  write_image(jpg, gradient(16, 16), ImageFormat::Jpeg);
  std::string b = bytes_of(jpg);
  const size_t sof = b.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t i : {sof + 5, sof + 7}) b[i] = char(0xC3), b[i + 1] = char(0x50);  // 50000
  put_bytes(huge_jpg, b);
  EXPECT_NE(error_of([&] { read_image(huge_jpg); }).find("50000×50000"), std::string::npos) << error_of([&] { read_image(huge_jpg); });
}

// Found by fuzz/image: a PNG whose text chunk claims 1.8 GB, in a 150-byte file. libpng allocated and
// zeroed the claimed length before finding the file cut (5 s and 1.8 GB per upload); now that
// allocation is refused.
TEST(Image, AChunkClaimingGigabytesIsRefusedWithoutAllocatingThem) {
  std::string png = bytes_of([] {
    const fs::path p = test::temp_path("text-chunk.png");
    write_image(p, gradient(7, 5), ImageFormat::Png);
    return p;
  }());
  const std::string chunk = std::string("\x6D\x00\x00\x16", 4) + "tEXt" + "chroma.cpp";  // length 0x6D000016
  png.insert(33, chunk + std::string(12, 'x'));  // after the signature and IHDR; no CRC, then the pixels
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  const std::string e = error_of([&] { decode_image(std::vector<uint8_t>(png.begin(), png.end()), "upload"); });
  getrusage(RUSAGE_SELF, &after);
  EXPECT_NE(e.find("upload: not a readable PNG"), std::string::npos) << e;
  EXPECT_NE(e.find("a chunk of 1828716567 bytes"), std::string::npos) << e;
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 256 << 10) << "peak RSS grew by this many KiB";
}

TEST(Image, BadFilesNameTheProblem) {
  const fs::path dir = test::temp_path("bad-images");
  fs::create_directories(dir);
  put_bytes(dir / "text.png", "this is not an image");
  EXPECT_NE(error_of([&] { read_image(dir / "text.png"); }).find("not a PNG, JPEG or WebP"), std::string::npos);
  EXPECT_NE(error_of([&] { read_image(dir / "missing.png"); }).find("cannot open"), std::string::npos);
  write_image(dir / "ok.png", gradient(32, 32), ImageFormat::Png);
  write_image(dir / "ok.jpg", gradient(32, 32), ImageFormat::Jpeg);
  write_image(dir / "ok.webp", gradient(32, 32), ImageFormat::Webp);
  for (const char* name : {"ok.png", "ok.jpg", "ok.webp"}) {
    const std::string b = bytes_of(dir / name);
    put_bytes(dir / "cut", b.substr(0, b.size() / 2));
    const std::string e = error_of([&] { read_image(dir / "cut"); });
    EXPECT_NE(e.find("not a readable"), std::string::npos) << name << ": " << e;
  }
  put_bytes(dir / "zero.png", png_with_size(bytes_of(dir / "ok.png"), 0, 0));
  EXPECT_NE(error_of([&] { read_image(dir / "zero.png"); }), "") << "a 0×0 PNG was accepted";
  EXPECT_THROW(write_image(dir / "bad.png", Image{4, 4, std::vector<uint8_t>(10), {}}, ImageFormat::Png), Error);
  EXPECT_FALSE(fs::exists(dir / "bad.png"));
}

}  // namespace
}  // namespace chroma::io

// PNG writer: exact pixel round trip, text chunks, and refusal of a mismatched buffer.
#include "io/png.h"
#include "testdata.h"

namespace chroma::io {
namespace {

TEST(Png, RoundTripKeepsPixelsAndText) {
  const int w = 5, h = 3;
  std::vector<uint8_t> rgb(size_t(w * h * 3));
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = uint8_t(i * 37 % 256);
  const std::string path = test::temp_path("roundtrip.png").string();
  write_png(path, rgb, w, h, {{"parameters", "{\"seed\":42}"}});
  int rw = 0, rh = 0;
  std::vector<std::pair<std::string, std::string>> text;
  EXPECT_EQ(read_png(path, &rw, &rh, &text), rgb);
  EXPECT_EQ(rw, w);
  EXPECT_EQ(rh, h);
  ASSERT_EQ(text.size(), 1u);
  EXPECT_EQ(text[0].second, "{\"seed\":42}");
  std::remove(path.c_str());
}

TEST(Png, MismatchedBufferIsAnErrorAndWritesNothing) {
  const std::string path = test::temp_path("bad.png").string();
  EXPECT_THROW(write_png(path, std::vector<uint8_t>(10), 4, 4), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace chroma::io

// Variant naming (models/chroma/variant.h): the published file and folder names of each variant, as
// lodestones and the community's quantizations spell them, and the parse of --variant.
#include <gtest/gtest.h>

#include "models/chroma/variant.h"
#include "tensor/error.h"

namespace chroma::dit {
namespace {

TEST(Variant, PublishedNamesAreRecognised) {
  const struct {
    const char* path;
    Variant expected;
  } cases[] = {
      {"Chroma1-HD.safetensors", Variant::HD},
      {"/models/chroma1-hd-Q8_0.gguf", Variant::HD},
      {"/models/Chroma1-HD/transformer", Variant::HD},  // diffusers folder: the model folder above
      {"/models/Chroma1-HD/transformer/", Variant::HD},
      {"/c/lodestones/Chroma1-Base/main/Chroma1-Base.safetensors", Variant::Base},
      {"chroma-unlocked-v48.safetensors", Variant::Base},  // Chroma1-Base is v48 (community guide)
      {"chroma-unlocked-v48-detail-calibrated.safetensors", Variant::Chroma},
      {"Chroma1-HD-Flash.safetensors", Variant::Flash},  // Flash before HD
      {"chroma-unlocked-v47-flash-heun-8-steps-cfg-1.safetensors", Variant::Flash},
      {"/q/silveroxides/Chroma1-Flash-GGUF/Chroma1-Flash-Q4_K_M.gguf", Variant::Flash},
      {"Chroma-DC-2K.safetensors", Variant::DC2k},
      {"chroma-unlocked-v50-annealed.safetensors", Variant::Chroma},
      {"model.safetensors", Variant::Chroma},
  };
  for (const auto& c : cases) EXPECT_EQ(variant_from_path(c.path), c.expected) << c.path;
}

// Only names that mention Chroma count, and the innermost one decides: folders the user named for
// other reasons do not change what a file is.
TEST(Variant, UnrelatedFolderNamesDoNotCount) {
  EXPECT_EQ(variant_from_path("/media/flash-drive/Chroma1-HD.safetensors"), Variant::HD);
  EXPECT_EQ(variant_from_path("/media/flash-drive/model.safetensors"), Variant::Chroma);
  EXPECT_EQ(variant_from_path("/m/Chroma1-Flash/chroma-unlocked-v48.safetensors"), Variant::Base);
  EXPECT_EQ(variant_from_path("/m/Chroma1-Flash/sub/dir/model.safetensors"), Variant::Chroma)
      << "three levels up is beyond the two folders looked at";
}

TEST(Variant, ParseTakesKeysAndPublishedNames) {
  EXPECT_EQ(parse_variant("flash"), Variant::Flash);
  EXPECT_EQ(parse_variant("Chroma1-HD"), Variant::HD);
  EXPECT_EQ(parse_variant("DC-2K"), Variant::DC2k);
  EXPECT_EQ(parse_variant("radiance"), Variant::Radiance);
  for (Variant v : {Variant::Chroma, Variant::HD, Variant::Base, Variant::DC2k, Variant::Flash, Variant::Radiance})
    EXPECT_EQ(parse_variant(variant_name(v)), v) << variant_name(v);
  try {
    parse_variant("schnell");
    FAIL() << "an unknown variant was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--variant 'schnell'"), std::string::npos) << m;
    EXPECT_NE(m.find(variant_choices()), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace chroma::dit

// GenerationRequest and its option table (pipeline/request.h): strict parsing, one validation for
// every front end, and the JSON round trip the PNG metadata and the server rely on.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "pipeline/request.h"
#include "tensor/error.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {

using nlohmann::json;

using test::error_of;

TEST(RequestOptions, KeysAndFlagsAreUnique) {
  std::set<std::string> keys, flags;
  for (const RequestOption& o : request_options()) {
    EXPECT_TRUE(keys.insert(o.key).second) << o.key;
    EXPECT_TRUE(flags.insert(o.flags).second) << o.flags;
  }
  EXPECT_EQ(keys.size(), json(request_to_json({})).size());
}

TEST(RequestOptions, ParseWholeValuesInRange) {
  GenerationRequest r;
  set_option(r, "width", "512");
  set_option(r, "cfg", "3.5");
  set_option(r, "skip_cfg_steps", "-1");
  set_option(r, "shift", "false");
  set_option(r, "sampler_dtype", "bf16");
  set_option(r, "sampler", "dpm++2m");
  set_option(r, "scheduler", "beta");
  set_option(r, "beta_alpha", "0.5");
  set_option(r, "beta_beta", "100");
  EXPECT_EQ(r.sampler, "dpm++2m");
  EXPECT_EQ(r.scheduler, "beta");
  EXPECT_EQ(r.beta_alpha, 0.5);
  EXPECT_EQ(r.beta_beta, 100.0);
  EXPECT_EQ(r.width, 512);
  EXPECT_EQ(r.cfg, 3.5f);
  EXPECT_EQ(r.skip_cfg_steps, -1);
  EXPECT_FALSE(r.shift);
  EXPECT_EQ(r.sampler_dtype, SamplerDtype::BF16);
  for (const auto& [key, text] : std::vector<std::pair<std::string, std::string>>{
           {"width", "64.5"}, {"width", "64px"}, {"width", " 64"}, {"width", "+64"}, {"width", "99999999999"},
           {"steps", "0"}, {"cfg", "nan"}, {"cfg", "inf"}, {"skip_cfg_steps", "-2"}, {"shift", "maybe"},
           {"sampler", "nope"}, {"sampler_dtype", "f16"}, {"scheduler", "Beta"}, {"scheduler", ""},
           {"beta_alpha", "0"}, {"beta_alpha", "-1"}, {"beta_beta", "100.5"}, {"beta_beta", "nan"}})
    EXPECT_NE(error_of([&] { set_option(r, key, text); }).find(key), std::string::npos) << key << " = " << text;
  EXPECT_NE(error_of([&] { set_option(r, "no_such_option", "1"); }).find("no_such_option"), std::string::npos);
}

TEST(RequestOptions, SeedMinusOneIsRandomAndOutOfRangeIsAnError) {
  GenerationRequest r;
  set_option(r, "seed", "18446744073709551615");  // 2^64 − 1: the largest seed
  EXPECT_EQ(r.seed, std::optional<uint64_t>(18446744073709551615ull));
  set_option(r, "seed", "-1");
  EXPECT_FALSE(r.seed.has_value()) << "-1 means random, as in A1111 and ComfyUI";
  for (const char* bad : {"18446744073709551616", "-2", "1e3", "0x10", ""})
    EXPECT_NE(error_of([&] { set_option(r, "seed", bad); }).find("seed"), std::string::npos) << bad;
}

TEST(Validate, RejectsTextThatIsNotUtf8) {
  EXPECT_TRUE(is_utf8("a red fox — 狐 🦊"));
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf" /* overlong '/' */, "\xed\xa0\x80" /* surrogate */,
                          "\xf4\x90\x80\x80" /* above U+10FFFF */, "\x80"})
    EXPECT_FALSE(is_utf8(bad)) << bad;
  GenerationRequest r;
  r.prompt = "a fox \xff";
  EXPECT_NE(error_of([&] { validate(r); }).find("prompt"), std::string::npos);
  r.prompt = "a fox";
  r.negative_prompt = "blurry \xc3";
  EXPECT_NE(error_of([&] { validate(r); }).find("negative_prompt"), std::string::npos);
}

TEST(RequestJson, RoundTripsEveryOption) {
  GenerationRequest r;
  r.prompt = "a fox \"in\" snow";
  r.negative_prompt = "blurry";
  r.width = 320;
  r.height = 192;
  r.steps = 7;
  r.cfg = 3.7f;  // not exact in binary: must come back as the same float
  r.skip_cfg_steps = 2;
  r.seed = 18446744073709551615ull;
  r.shift = false;
  r.sampler_dtype = SamplerDtype::BF16;
  r.sampler = "heun";
  r.scheduler = "karras";
  r.beta_alpha = 0.3;  // not exact in binary either
  r.init_noise = "noise.safetensors";
  const GenerationRequest back = request_from_json(json::parse(request_to_json(r).dump()));
  EXPECT_EQ(request_to_json(back), request_to_json(r));
  EXPECT_EQ(back.cfg, r.cfg);
  EXPECT_EQ(back.seed, r.seed);
  EXPECT_EQ(back.beta_alpha, r.beta_alpha);
}

TEST(RequestJson, RejectsUnknownKeysWrongTypesAndBadValues) {
  EXPECT_NE(error_of([] { request_from_json(json{{"prompt", "x"}, {"widht", 64}}); }).find("widht"), std::string::npos);
  EXPECT_NE(error_of([] { request_from_json(json{{"width", "64"}}); }).find("width"), std::string::npos);
  EXPECT_NE(error_of([] { request_from_json(json{{"prompt", 5}}); }).find("prompt"), std::string::npos);
  EXPECT_NE(error_of([] { request_from_json(json{{"width", 100}}); }).find("multiple of 16"), std::string::npos);
  EXPECT_NE(error_of([] { request_from_json(json::array()); }).find("object"), std::string::npos);
  const GenerationRequest random = request_from_json(json{{"seed", nullptr}});
  EXPECT_FALSE(random.seed.has_value());
  GenerationRequest defaults;
  defaults.steps = 2;
  EXPECT_EQ(request_from_json(json{{"prompt", "x"}}, defaults).steps, 2) << "absent keys keep the defaults";
}

TEST(Lora, FlagTextsAndPromptTags) {
  EXPECT_EQ(parse_lora("style.safetensors:0.8"), (LoraRequest{"style.safetensors", 0.8f}));
  EXPECT_EQ(parse_lora("style.safetensors"), (LoraRequest{"style.safetensors", 1.0f}));
  EXPECT_EQ(parse_lora("dir:with:colons/x.safetensors:-0.5"), (LoraRequest{"dir:with:colons/x.safetensors", -0.5f}));
  EXPECT_EQ(parse_lora(lora_text({"a.safetensors", 0.7f})), (LoraRequest{"a.safetensors", 0.7f})) << "float round trip";
  EXPECT_NE(error_of([] { parse_lora(":0.5"); }).find("lora"), std::string::npos);

  std::string prompt = "a fox <lora:snow_style:0.6> in the snow, <lora:detail> sharp";
  EXPECT_EQ(take_lora_tags(prompt), (std::vector<LoraRequest>{{"snow_style", 0.6f}, {"detail", 1.0f}}));
  EXPECT_EQ(prompt, "a fox  in the snow,  sharp") << "the tags are stripped from what T5 sees";
  std::string plain = "a <lora:unclosed fox";
  EXPECT_TRUE(take_lora_tags(plain).empty());
  EXPECT_EQ(plain, "a <lora:unclosed fox");
  for (std::string bad : {"<lora:>", "<lora:x:big>", "<lora::1>"})
    EXPECT_NE(error_of([&] { take_lora_tags(bad); }).find("lora"), std::string::npos) << bad;

  GenerationRequest r;
  set_option(r, "lora", "a.safetensors:0.5");
  set_option(r, "lora", "b.safetensors");
  const json j = request_to_json(r);
  EXPECT_EQ(j.at("lora"), json::array({"a.safetensors:0.5", "b.safetensors:1"}));
  EXPECT_EQ(request_from_json(j).loras, r.loras);
  GenerationRequest defaults;
  defaults.loras = {{"old.safetensors", 1.0f}};
  EXPECT_EQ(request_from_json(json{{"lora", json::array({"new.safetensors:2"})}}, defaults).loras,
            (std::vector<LoraRequest>{{"new.safetensors", 2.0f}})) << "an array replaces the list";
  EXPECT_NE(error_of([] { request_from_json(json{{"lora", json::array({1})}}); }).find("lora"), std::string::npos);
}

}  // namespace
}  // namespace chroma::pipeline

// GenerationRequest and its option table (pipeline/request.h): strict parsing, one validation for
// every front end, and the JSON round trip the PNG metadata and the server rely on.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "pipeline/pipeline.h"
#include "pipeline/request.h"
#include "sampling/schedule.h"
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
  r.text_padding = "sdcpp";
  r.shift_rule = "sdcpp";
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

// Each preset sets what spec §2.2 (padding), §4.2 (schedule) and §4.5 (defaults) say its front end does,
// and only that: the prompt, size and seed stay.
TEST(Presets, SetTheirFrontEndsSettingsAndNothingElse) {
  GenerationRequest base;
  base.prompt = "a fox";
  base.width = 512;
  base.seed = 7;
  GenerationRequest r = base;
  apply_preset(r, "comfyui");  // the official Chroma1-HD template
  EXPECT_EQ(r.text_padding, "comfyui");
  EXPECT_FALSE(r.shift);
  EXPECT_EQ(r.scheduler, "beta");
  EXPECT_EQ(r.beta_alpha, 0.6);
  EXPECT_EQ(r.steps, 26);
  EXPECT_EQ(r.cfg, 3.5f);
  EXPECT_EQ(r.sampler, "euler");
  EXPECT_EQ(r.prompt_weighting, "comfyui");
  EXPECT_EQ(r.prompt, "a fox");
  EXPECT_EQ(r.width, 512);
  EXPECT_EQ(r.seed, std::optional<uint64_t>(7));
  r = base;
  apply_preset(r, "diffusers");  // ChromaPipeline with Chroma1-HD's scheduler config
  EXPECT_EQ(r.text_padding, "diffusers");
  EXPECT_FALSE(r.shift);
  EXPECT_EQ(r.scheduler, "author");
  EXPECT_EQ(r.steps, 35);
  EXPECT_EQ(r.cfg, 5.0f);
  EXPECT_EQ(r.sampler_dtype, SamplerDtype::BF16);
  r = base;
  apply_preset(r, "sdcpp");
  EXPECT_EQ(r.text_padding, "sdcpp");
  EXPECT_TRUE(r.shift);
  EXPECT_EQ(r.shift_rule, "sdcpp");
  EXPECT_EQ(r.steps, 20);
  EXPECT_EQ(r.cfg, 7.0f);
  EXPECT_EQ(r.prompt_weighting, "sdcpp");
  r = base;
  apply_preset(r, "author");
  EXPECT_EQ(r.text_padding, "author");
  EXPECT_EQ(r.sampler_dtype, SamplerDtype::BF16);
  EXPECT_EQ(r.scheduler, "author");
  EXPECT_TRUE(r.shift);
  EXPECT_EQ(preset_names(), "author, comfyui, diffusers, sdcpp");
  EXPECT_NE(error_of([&] { apply_preset(r, "a1111"); }).find("unknown preset"), std::string::npos);
  for (const auto& [key, text] : std::vector<std::pair<std::string, std::string>>{
           {"text_padding", "hf"}, {"text_padding", ""}, {"shift_rule", "comfyui"}})
    EXPECT_NE(error_of([&] { set_option(r, key, text); }).find(key), std::string::npos) << key << " = " << text;
}

// sd.cpp's mu counts (H/8)·(W/8) latent pixels: at 512² that is 4096, the author's count at 1024²
// (spec §4.2: mu(512²) = 1.15 in sd.cpp).
TEST(Presets, SdcppShiftRuleCountsLatentPixels) {
  GenerationRequest r;
  r.width = r.height = 512;
  r.steps = 6;
  EXPECT_EQ(request_schedule(r), sampling::flow_schedule(6, 1024, true));
  r.shift_rule = "sdcpp";
  EXPECT_EQ(request_schedule(r), sampling::flow_schedule(6, 4096, true));
  EXPECT_NEAR(sampling::schedule_mu(4096), 1.15, 1e-12);
}

TEST(RequestOptions, CacheIsOffOrAPositiveFbcacheThreshold) {
  GenerationRequest r;
  EXPECT_EQ(cache_threshold(r), 0.0f);
  set_option(r, "cache", "fbcache:0.08");
  EXPECT_EQ(cache_threshold(r), 0.08f);
  set_option(r, "cache", "off");
  EXPECT_EQ(cache_threshold(r), 0.0f);
  set_option(r, "cache", "fbcache");  // the default threshold
  EXPECT_EQ(cache_threshold(r), 0.08f);
  EXPECT_EQ(request_to_json(r).at("cache"), "fbcache") << "kept as given, so the metadata says what was asked";
  for (const char* bad : {"fbcache:0", "fbcache:-0.1", "fbcache:", "fbcache:abc", "fbcache:inf", "teacache:0.1", "0.1", "fbcache0.1", "FBCACHE"})
    EXPECT_NE(error_of([&] { set_option(r, "cache", bad); }).find("cache"), std::string::npos) << bad;
  r.cache = "fbcache:0";
  EXPECT_NE(error_of([&] { validate(r); }).find("> 0"), std::string::npos);
}

// A JSON request's preset comes first, whatever the key order: its other fields override it.
TEST(Presets, JsonPresetIsAppliedBeforeTheOtherFields) {
  const GenerationRequest r = request_from_json(json{{"steps", 9}, {"preset", "comfyui"}, {"text_padding", "author"}});
  EXPECT_EQ(r.steps, 9);
  EXPECT_EQ(r.text_padding, "author");
  EXPECT_EQ(r.scheduler, "beta");
  EXPECT_NE(error_of([] { request_from_json(json{{"preset", "nope"}}); }).find("nope"), std::string::npos);
  EXPECT_NE(error_of([] { request_from_json(json{{"preset", 3}}); }).find("preset"), std::string::npos);
  EXPECT_FALSE(request_to_json(r).contains("preset")) << "a request stores the settings, not the preset's name";
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

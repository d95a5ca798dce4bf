#include "pipeline/output.h"

#include "pipeline/pipeline.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "models/vae/preview.h"
#include "tensor/error.h"

namespace chroma::pipeline {
namespace {

// Where the one integer conversion of a pattern sits: [begin, end) of e.g. "%03d", and its width/zero flag.
struct Conversion {
  size_t begin = std::string::npos, end = 0;
  int width = 0;
  bool zero_pad = false;
};

Conversion find_conversion(const std::string& pattern) {
  Conversion c;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '%') continue;
    if (i + 1 < pattern.size() && pattern[i + 1] == '%') {
      ++i;
      continue;
    }
    size_t j = i + 1;
    const bool zero = j < pattern.size() && pattern[j] == '0';
    int width = 0;
    while (j < pattern.size() && std::isdigit(static_cast<unsigned char>(pattern[j])) && width < 100)
      width = width * 10 + (pattern[j++] - '0');
    if (j >= pattern.size() || pattern[j] != 'd')
      throw Error("-o " + pattern + ": only %d, %0Nd and %% are understood in an output name");
    if (c.begin != std::string::npos) throw Error("-o " + pattern + ": more than one %d in the output name");
    c = {i, j + 1, width, zero};
    i = j;
  }
  return c;
}

// The pattern with its conversion replaced by `insert` and %% made %.
std::string expand(const std::string& pattern, const Conversion& c, const std::string& insert) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (i == c.begin) {
      out += insert;
      i = c.end - 1;
    } else if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == '%') {
      out += '%';
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

std::string with_suffix(const std::string& path, const std::string& suffix) {
  const std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + suffix + p.extension().string())).string();
}

std::string number(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

}  // namespace

std::vector<std::string> output_paths(const std::string& pattern, int count) {
  if (count < 1) throw Error("output_paths: count " + std::to_string(count) + " must be at least 1");
  const Conversion c = find_conversion(pattern);
  std::vector<std::string> paths;
  for (int i = 1; i <= count; ++i) {
    if (c.begin != std::string::npos) {
      char n[128];
      std::snprintf(n, sizeof n, c.zero_pad ? "%0*d" : "%*d", c.width, i);
      paths.push_back(expand(pattern, c, n));
    } else {
      const std::string plain = expand(pattern, c, "");
      paths.push_back(count == 1 ? plain : with_suffix(plain, "_" + std::to_string(i)));
    }
  }
  if (std::set<std::string>(paths.begin(), paths.end()).size() != paths.size())
    throw Error("-o " + pattern + ": the " + std::to_string(count) + " images would get the same file name");
  return paths;
}

std::string grid_path(const std::string& pattern) {
  // "fox_%03d.png" → "fox_" → "fox" (separators left before the number go too) → "fox_grid.png"
  const std::filesystem::path p(expand(pattern, find_conversion(pattern), ""));
  std::string stem = p.stem().string();
  while (!stem.empty() && std::string("_-. ").find(stem.back()) != std::string::npos) stem.pop_back();
  return (p.parent_path() / (stem + "_grid" + p.extension().string())).string();
}

io::Image contact_sheet(const std::vector<io::Image>& images) {
  if (images.empty()) throw Error("contact_sheet: no images");
  const int w = images[0].width, h = images[0].height, n = int(images.size());
  for (const io::Image& img : images)
    if (img.width != w || img.height != h) throw Error("contact_sheet: the images differ in size");
  const int cols = int(std::ceil(std::sqrt(double(n)))), rows = (n + cols - 1) / cols;
  io::Image sheet;
  sheet.width = cols * w;
  sheet.height = rows * h;
  sheet.rgb.assign(size_t(sheet.width) * size_t(sheet.height) * 3, 0);
  for (int k = 0; k < n; ++k) {
    const int x0 = (k % cols) * w, y0 = (k / cols) * h;
    for (int y = 0; y < h; ++y)
      std::copy_n(&images[size_t(k)].rgb[size_t(y) * size_t(w) * 3], size_t(w) * 3,
                  &sheet.rgb[(size_t(y0 + y) * size_t(sheet.width) + size_t(x0)) * 3]);
  }
  return sheet;
}

io::Image preview_image(const Tensor& latent) {
  // Chroma1-Radiance's state is already the image [1, 3, H, W].
  if (latent.rank() == 4 && latent.dim(1) == 3) return {int(latent.dim(3)), int(latent.dim(2)), to_rgb8(latent), {}};
  return vae::latent_preview(latent);
}

std::string infotext(const nlohmann::json& p) {
  auto text = [&](const char* key) { return p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : ""; };
  std::string s = text("prompt");
  if (!text("negative_prompt").empty()) s += "\nNegative prompt: " + text("negative_prompt");
  std::string sampler = text("sampler");
  if (!sampler.empty()) sampler[0] = char(std::toupper(static_cast<unsigned char>(sampler[0])));
  s += "\nSteps: " + p.value("steps", nlohmann::json(0)).dump() + ", Sampler: " + sampler +
       ", CFG scale: " + number(p.value("cfg", 0.0)) + ", Seed: " + p.value("seed", nlohmann::json(nullptr)).dump() +
       ", Size: " + p.value("width", nlohmann::json(0)).dump() + "x" + p.value("height", nlohmann::json(0)).dump();
  if (p.contains("models") && p["models"].contains("dit"))
    s += ", Model: " + std::filesystem::path(p["models"]["dit"].get<std::string>()).stem().string();
  if (!text("scheduler").empty() && text("scheduler") != "author") {
    std::string scheduler = text("scheduler");
    scheduler[0] = char(std::toupper(static_cast<unsigned char>(scheduler[0])));
    s += ", Schedule type: " + scheduler;  // A1111's name for it
  }
  if (!text("init_image").empty()) s += ", Denoising strength: " + number(p.value("strength", 0.0));
  s += ", Version: chroma.cpp";
  return s;
}

io::TextChunks metadata_chunks(const nlohmann::json& parameters) {
  return {{"parameters", infotext(parameters)}, {kMetadataKey, parameters.dump()}, {"Software", "chroma.cpp"}};
}

nlohmann::json read_metadata(const io::Image& image, const std::string& path) {
  for (const auto& [key, value] : image.text)
    if (key == kMetadataKey) {
      nlohmann::json j = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object()) throw Error(path + ": its chroma.cpp metadata is not a JSON object");
      return j;
    }
  throw Error(path + ": has no chroma.cpp generation metadata (a \"" + std::string(kMetadataKey) + "\" text chunk)");
}

GenerationRequest request_from_metadata(const nlohmann::json& parameters) {
  nlohmann::json request = parameters;
  // What made it besides the request (the files, the variant they were taken for, the arithmetic):
  // reported, not part of the request.
  for (const char* key : {"models", "variant", "compute"}) request.erase(key);
  return request_from_json(request);
}

}  // namespace chroma::pipeline

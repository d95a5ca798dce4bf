// What a run leaves behind, for every front end: the file names of a batch, the contact sheet, and
// the metadata written into each image (and read back by `generate --from-png` and `info`).
//
// Metadata: two text chunks. "parameters" holds the A1111-style infotext other tools read
// ("prompt\nNegative prompt: …\nSteps: 28, Sampler: Euler, CFG scale: 4, Seed: 42, Size: 1024x1024,
// …"); "chroma.cpp" holds the JSON of everything that made the image (request_to_json with the seed
// used and batch_count 1, plus "models", "variant" and "compute"), enough to make the same image again.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/image.h"
#include "pipeline/request.h"
#include "tensor/tensor.h"

namespace chroma::pipeline {

inline constexpr const char* kMetadataKey = "chroma.cpp";  // the JSON chunk

// The file of each image of a batch of `count`: a pattern with one integer conversion (%d, %03d, …;
// %% is a literal %) is formatted with 1..count; a plain name is used as it is for one image, and
// gets _1 … _count before its extension otherwise. Throws chroma::Error for another % conversion,
// two conversions, or names that would repeat.
std::vector<std::string> output_paths(const std::string& pattern, int count);

// The contact sheet's file beside a batch: the pattern with its conversion dropped, "_grid" before
// the extension ("out_%03d.png" → "out_grid.png").
std::string grid_path(const std::string& pattern);

// All images side by side on ceil(√n) columns, row by row, black where the last row ends early.
// The images must have one size (a batch's); throws chroma::Error otherwise.
io::Image contact_sheet(const std::vector<io::Image>& images);

// A cheap RGB preview of a latent [1, 16, h, w] at its own size (no VAE; models/vae/preview.h), e.g. of
// Progress::denoised; Chroma1-Radiance's [1, 3, H, W] is the image itself (to_rgb8).
io::Image preview_image(const Tensor& latent);

// The A1111-style "parameters" text of an image's JSON parameters.
std::string infotext(const nlohmann::json& parameters);

// The text chunks to store with an image whose parameters are `parameters`.
io::TextChunks metadata_chunks(const nlohmann::json& parameters);

// The JSON parameters stored in an image (its "chroma.cpp" chunk); throws chroma::Error naming
// `path` when there is none or it is not valid.
nlohmann::json read_metadata(const io::Image& image, const std::string& path);

// The request the parameters describe (their non-request keys, e.g. "models", set aside).
GenerationRequest request_from_metadata(const nlohmann::json& parameters);

}  // namespace chroma::pipeline

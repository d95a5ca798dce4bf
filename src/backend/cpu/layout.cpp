// Data movement on host tensors: layout changes, concatenation, slicing, embedding lookups.
#include <algorithm>
#include <string>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {
void require_rank2(const char* op, const Tensor& x, const char* what) {
  if (x.rank() != 2) throw Error(std::string(op) + ": " + what + " must be 2-D, got " + shape_str(x.shape));
}
}  // namespace

Tensor transpose(const Tensor& x) {
  require_rank2("transpose", x, "input");
  const int64_t A = x.dim(0), B = x.dim(1);
  Tensor y({B, A});
  float* yp = y.ptr();
  const float* xp = x.ptr();
  // Blocked so both sides stay in cache for large matrices.
  constexpr int64_t kBlock = 32;
  for (int64_t a0 = 0; a0 < A; a0 += kBlock)
    for (int64_t b0 = 0; b0 < B; b0 += kBlock)
      for (int64_t a = a0; a < std::min(A, a0 + kBlock); ++a)
        for (int64_t b = b0; b < std::min(B, b0 + kBlock); ++b) yp[b * A + a] = xp[a * B + b];
  return y;
}

Tensor concat_rows(const Tensor& a, const Tensor& b) {
  require_rank2("concat_rows", a, "first input");
  require_rank2("concat_rows", b, "second input");
  if (a.dim(1) != b.dim(1))
    throw Error("concat_rows: widths differ: " + shape_str(a.shape) + " vs " + shape_str(b.shape));
  Tensor y({a.dim(0) + b.dim(0), a.dim(1)});
  std::copy_n(a.ptr(), a.numel(), y.ptr());
  std::copy_n(b.ptr(), b.numel(), y.ptr() + a.numel());
  return y;
}

Tensor concat_cols(const Tensor& a, const Tensor& b) {
  require_rank2("concat_cols", a, "first input");
  require_rank2("concat_cols", b, "second input");
  if (a.dim(0) != b.dim(0))
    throw Error("concat_cols: row counts differ: " + shape_str(a.shape) + " vs " + shape_str(b.shape));
  const int64_t L = a.dim(0), Ca = a.dim(1), Cb = b.dim(1);
  Tensor y({L, Ca + Cb});
  for (int64_t i = 0; i < L; ++i) {
    std::copy_n(a.ptr() + i * Ca, Ca, y.ptr() + i * (Ca + Cb));
    std::copy_n(b.ptr() + i * Cb, Cb, y.ptr() + i * (Ca + Cb) + Ca);
  }
  return y;
}

Tensor slice_cols(const Tensor& x, int64_t begin, int64_t end) {
  require_rank2("slice_cols", x, "input");
  const int64_t L = x.dim(0), C = x.dim(1);
  if (begin < 0 || end < begin || end > C)
    throw Error("slice_cols: columns [" + std::to_string(begin) + ", " + std::to_string(end) + ") out of range for " +
                shape_str(x.shape));
  const int64_t W = end - begin;
  Tensor y({L, W});
  for (int64_t i = 0; i < L; ++i) std::copy_n(x.ptr() + i * C + begin, W, y.ptr() + i * W);
  return y;
}

Tensor image_to_patch_pixels(const Tensor& x, int patch) {
  const int64_t p = patch;
  if (x.rank() != 3 || p < 1 || x.dim(1) < p || x.dim(2) < p || x.dim(1) % p || x.dim(2) % p)
    throw Error("image_to_patch_pixels: input " + shape_str(x.shape) + " is not an image [C, H, W] with H and W "
                "positive multiples of the patch size " + std::to_string(patch));
  const int64_t C = x.dim(0), H = x.dim(1), W = x.dim(2), gw = W / p;
  Tensor y({H * W, C});
  float* yp = y.ptr();
  const float* xp = x.ptr();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t yy = 0; yy < H; ++yy)
      for (int64_t xx = 0; xx < W; ++xx) {
        const int64_t patch_index = (yy / p) * gw + xx / p, pixel = (yy % p) * p + xx % p;
        yp[(patch_index * p * p + pixel) * C + c] = xp[(c * H + yy) * W + xx];
      }
  return y;
}

void patch_pixels_to_image(const Tensor& rows, int64_t first_patch, int patch, Tensor& image) {
  const int64_t p = patch;
  if (image.rank() != 3 || p < 1 || image.dim(1) % p || image.dim(2) % p)
    throw Error("patch_pixels_to_image: image " + shape_str(image.shape) + " is not [C, H, W] with H and W multiples of " +
                std::to_string(patch));
  const int64_t C = image.dim(0), H = image.dim(1), W = image.dim(2), gw = W / p, patches = (H / p) * gw;
  if (rows.rank() != 2 || rows.dim(1) != C || rows.dim(0) % (p * p) || first_patch < 0 ||
      first_patch + rows.dim(0) / (p * p) > patches)
    throw Error("patch_pixels_to_image: rows " + shape_str(rows.shape) + " from patch " + std::to_string(first_patch) +
                " do not fit image " + shape_str(image.shape) + " in " + std::to_string(patch) + "-pixel patches");
  const int64_t n = rows.dim(0) / (p * p);
  float* out = image.ptr();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t patch_index = first_patch + k, y0 = (patch_index / gw) * p, x0 = (patch_index % gw) * p;
    for (int64_t pixel = 0; pixel < p * p; ++pixel) {
      const float* src = rows.ptr() + (k * p * p + pixel) * C;
      const int64_t yy = y0 + pixel / p, xx = x0 + pixel % p;
      for (int64_t c = 0; c < C; ++c) out[(c * H + yy) * W + xx] = src[c];
    }
  }
}


// chroma-spec.md §3.1 (flow `vae_flatten`): "c (h ph) (w pw) -> (h w) (c ph pw)"
Tensor image_to_patches(const Tensor& x, int patch) {
  const bool batched = x.rank() == 4 && x.dim(0) == 1;
  const int64_t p = patch;
  if ((x.rank() != 3 && !batched) || p < 1 || x.dim(-2) < p || x.dim(-1) < p || x.dim(-2) % p || x.dim(-1) % p)
    throw Error("image_to_patches: input " + shape_str(x.shape) + " is not an image [1, C, H, W] with H and W "
                "positive multiples of the patch size " + std::to_string(patch));
  const int64_t C = x.dim(-3), H = x.dim(-2), W = x.dim(-1), gh = H / p, gw = W / p, F = C * p * p;
  Tensor tokens({gh * gw, F});
  float* out = tokens.ptr();
  const float* in = x.ptr();
  for (int64_t i = 0; i < gh; ++i)
    for (int64_t j = 0; j < gw; ++j)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t dy = 0; dy < p; ++dy)
          for (int64_t dx = 0; dx < p; ++dx)
            out[(i * gw + j) * F + (c * p + dy) * p + dx] = in[(c * H + p * i + dy) * W + p * j + dx];
  return tokens;
}

// flow `vae_unflatten`: "(h w) (c ph pw) -> 1 c (h ph) (w pw)"
Tensor patches_to_image(const Tensor& tokens, int patch, int64_t height, int64_t width) {
  const int64_t p = patch;
  if (p < 1 || height < p || width < p || height % p || width % p || tokens.rank() != 2 ||
      tokens.dim(0) != (height / p) * (width / p) || tokens.dim(1) % (p * p) != 0)
    throw Error("patches_to_image: tokens " + shape_str(tokens.shape) + " do not fit a " + std::to_string(height) + "x" +
                std::to_string(width) + " image in " + std::to_string(patch) + "-pixel patches");
  const int64_t F = tokens.dim(1), C = F / (p * p), gh = height / p, gw = width / p;
  Tensor image({1, C, height, width});
  float* out = image.ptr();
  const float* in = tokens.ptr();
  for (int64_t i = 0; i < gh; ++i)
    for (int64_t j = 0; j < gw; ++j)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t dy = 0; dy < p; ++dy)
          for (int64_t dx = 0; dx < p; ++dx)
            out[(c * height + p * i + dy) * width + p * j + dx] = in[(i * gw + j) * F + (c * p + dy) * p + dx];
  return image;
}

Tensor gather_rows(const TensorView& table, std::span<const int64_t> ids) {
  if (table.shape.size() != 2) throw Error("gather_rows: table " + describe(table) + " is not 2-D");
  check_float_view("gather_rows", table);
  const int64_t V = table.dim(0), C = table.dim(1);
  Tensor out({int64_t(ids.size()), C});
  for (size_t r = 0; r < ids.size(); ++r) {
    if (ids[r] < 0 || ids[r] >= V)
      throw Error("gather_rows: row " + std::to_string(ids[r]) + " is outside " + describe(table) + " (" +
                  std::to_string(V) + " rows)");
    widen_rows(table, ids[r], 1, out.ptr() + int64_t(r) * C);
  }
  return out;
}

}  // namespace chroma::cpu

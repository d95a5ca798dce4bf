#include "models/vae/tiled.h"

#include <algorithm>
#include <string>

#include "backend/ops.h"
#include "tensor/error.h"

namespace chroma::vae {
namespace {

// latent[:, :, y0:y0+th, x0:x0+tw], of a host latent
Tensor crop(const Tensor& latent, int y0, int x0, int th, int tw) {
  const int64_t c = latent.dim(1), h = latent.dim(2), w = latent.dim(3);
  Tensor out({1, c, th, tw});
  for (int64_t ch = 0; ch < c; ++ch)
    for (int y = 0; y < th; ++y)
      std::copy_n(latent.ptr() + (ch * h + y0 + y) * w + x0, tw, out.ptr() + (ch * th + y) * tw);
  return out;
}

// The blend weight of pixel p (0-based) of a tile `length` pixels long: a linear ramp over the first
// `ramp` pixels when the tile has a neighbour before it, over the last `ramp` when it has one after,
// 1 elsewhere. Ramps of neighbouring tiles cross in their shared pixels; the division by the
// summed weights (decode_tiled) makes them a partition of unity.
float ramp_weight(int p, int length, int ramp, bool before, bool after) {
  float w = 1.0f;
  if (before) w = std::min(w, (float(p) + 0.5f) / float(ramp));
  if (after) w = std::min(w, (float(length - p) - 0.5f) / float(ramp));
  return w;
}

}  // namespace

std::vector<int> tile_starts(int size, const Tiling& t) {
  if (size <= t.tile) return {0};
  std::vector<int> starts;
  for (int s = 0;; s += t.tile - t.overlap) {
    if (s + t.tile >= size) {
      starts.push_back(size - t.tile);
      break;
    }
    starts.push_back(s);
  }
  return starts;
}

Tensor decode_tiled(const std::function<Tensor(const Tensor&)>& decode, const Tensor& latent, const Tiling& t,
                    const std::function<void(int, int)>& after_tile) {
  if (t.tile < 1 || t.overlap < 0 || 2 * t.overlap >= t.tile)
    throw Error("VAE tiling: tile " + std::to_string(t.tile) + " with overlap " + std::to_string(t.overlap) +
                " (latent pixels): the tile must be at least 1 and the overlap under half of it");
  if (latent.rank() != 4 || latent.dim(0) != 1) throw Error("VAE tiling: latent must be [1, z, h, w], got " + shape_str(latent.shape));
  const int h = int(latent.dim(2)), w = int(latent.dim(3));
  const std::vector<int> ys = tile_starts(h, t), xs = tile_starts(w, t);
  const int th = std::min(h, t.tile), tw = std::min(w, t.tile);
  const int total = int(ys.size() * xs.size());
  if (total == 1) {
    Tensor latent_copy;
    Tensor image = decode(ops::backend_readable(latent, latent_copy));
    if (after_tile) after_tile(1, 1);
    return image;
  }

  // The tiles are cut from and blended into host tensors: the image is headed for the host, and only
  // one tile at a time is in the backend's memory.
  Tensor latent_copy;
  const Tensor& host_latent = host_readable(latent, latent_copy);
  Tensor image, weight;
  int scale = 0, done = 0;
  for (size_t iy = 0; iy < ys.size(); ++iy)
    for (size_t ix = 0; ix < xs.size(); ++ix) {
      const Tensor tile = to_host(decode(ops::to_backend(crop(host_latent, ys[iy], xs[ix], th, tw))));
      if (scale == 0) {
        scale = int(tile.dim(2) / th);
        image = Tensor({1, tile.dim(1), int64_t(h) * scale, int64_t(w) * scale});
        weight = Tensor({int64_t(h) * scale, int64_t(w) * scale});
      }
      if (tile.rank() != 4 || tile.dim(1) != image.dim(1) || tile.dim(2) != int64_t(th) * scale ||
          tile.dim(3) != int64_t(tw) * scale)
        throw Error("VAE tiling: a tile decoded to " + shape_str(tile.shape) + ", expected ×" + std::to_string(scale));
      const int ph = th * scale, pw = tw * scale, ramp = std::max(1, t.overlap * scale);
      const int64_t y0 = int64_t(ys[iy]) * scale, x0 = int64_t(xs[ix]) * scale, W = image.dim(3);
      std::vector<float> wy(static_cast<size_t>(ph)), wx(static_cast<size_t>(pw));
      for (int p = 0; p < ph; ++p) wy[size_t(p)] = ramp_weight(p, ph, ramp, iy > 0, iy + 1 < ys.size());
      for (int p = 0; p < pw; ++p) wx[size_t(p)] = ramp_weight(p, pw, ramp, ix > 0, ix + 1 < xs.size());
      for (int y = 0; y < ph; ++y)
        for (int x = 0; x < pw; ++x) weight.ptr()[(y0 + y) * W + x0 + x] += wy[size_t(y)] * wx[size_t(x)];
      for (int64_t c = 0; c < image.dim(1); ++c)
        for (int y = 0; y < ph; ++y) {
          float* row = image.ptr() + (c * image.dim(2) + y0 + y) * W + x0;
          const float* src = tile.ptr() + (c * ph + y) * pw;
          for (int x = 0; x < pw; ++x) row[x] += wy[size_t(y)] * wx[size_t(x)] * src[x];
        }
      if (after_tile) after_tile(++done, total);
    }
  const int64_t plane = weight.numel();
  float* out = image.ptr();
  const float* sum = weight.ptr();
  for (int64_t c = 0; c < image.dim(1); ++c)
    for (int64_t i = 0; i < plane; ++i) out[c * plane + i] /= sum[i];
  return image;
}

}  // namespace chroma::vae

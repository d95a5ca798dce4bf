// Chroma1-Radiance (docs/radiance.md) on a mini checkpoint the test writes (radiance_checkpoint.h):
// every piece of the pixel path — DCT features, patch conv (and the __32x32__ downsample), the
// embedder, the generated and L2-normalised MLP weights, the gated blocks, the final RMSNorm, fold
// and 3×3 conv, x0 → velocity — against the formulas of flow `model_dct.py` / `module/layers.py`
// evaluated here in double precision with plain loops; the whole forward against that head on the
// last block's tokens; the errors for missing or misshaped tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "models/chroma/model.h"
#include "models/chroma/radiance.h"
#include "radiance_checkpoint.h"
#include "tensor/trace.h"
#include "testdata.h"

namespace chroma::dit {
namespace {

using test::MiniRadiance;

constexpr double kPi = std::numbers::pi;

// ---- Exact math (double precision, straight loops after the author's code) ----------------------

using Vec = std::vector<double>;

Vec to_double(const Tensor& t) { return Vec(t.values().begin(), t.values().end()); }
Vec weights_of(const io::WeightStore& s, const std::string& name) { return to_double(s.require(name).to_f32()); }

// flow NerfEmbedder.fetch_pos: [p², F²], row dy·p + dx, column fx·F + fy.
Vec ref_dct(int p, int F) {
  Vec d(static_cast<size_t>(p * p * F * F));
  for (int dy = 0; dy < p; ++dy)
    for (int dx = 0; dx < p; ++dx)
      for (int fx = 0; fx < F; ++fx)
        for (int fy = 0; fy < F; ++fy) {
          const double ux = p > 1 ? double(dx) / (p - 1) : 0.0, uy = p > 1 ? double(dy) / (p - 1) : 0.0;
          d[size_t((dy * p + dx) * F * F + fx * F + fy)] =
              std::cos(kPi * fx * ux) * std::cos(kPi * fy * uy) / (1.0 + double(fx) * fy);
        }
  return d;
}

// A smooth image [1, 3, H, W] in about [−1, 1].
Tensor test_image(int64_t H, int64_t W, float phase = 0.0f) {
  Tensor x({1, 3, H, W});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = 0.9f * std::sin(0.37f * float(i) + phase);
  return x;
}
Tensor test_text(int64_t rows, int64_t width) {
  Tensor x({rows, width});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = std::sin(0.51f * float(i));
  return x;
}

// flow Chroma._forward up to the blocks: F.interpolate(nearest, H/2) with __32x32__, then the p×p
// stride-p conv img_in_patch, flattened to tokens [L, C].
Vec ref_tokens_in(const io::WeightStore& s, const Tensor& image, int k, bool patch32, int64_t C, int64_t* L_out) {
  int64_t H = image.dim(2), W = image.dim(3);
  Vec x = to_double(image);
  if (patch32) {
    Vec d(size_t(3 * (H / 2) * (W / 2)));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < H / 2; ++i)
        for (int64_t j = 0; j < W / 2; ++j) d[size_t((c * (H / 2) + i) * (W / 2) + j)] = x[size_t((c * H + 2 * i) * W + 2 * j)];
    x = d;
    H /= 2;
    W /= 2;
  }
  const Vec w = weights_of(s, "img_in_patch.weight"), b = weights_of(s, "img_in_patch.bias");
  const int64_t gh = H / k, gw = W / k, L = gh * gw;
  Vec out(static_cast<size_t>(L * C));
  for (int64_t t = 0; t < L; ++t)
    for (int64_t o = 0; o < C; ++o) {
      double acc = b[size_t(o)];
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ky = 0; ky < k; ++ky)
          for (int64_t kx = 0; kx < k; ++kx)
            acc += w[size_t(((o * 3 + c) * k + ky) * k + kx)] *
                   x[size_t((c * H + (t / gw) * k + ky) * W + (t % gw) * k + kx)];
      out[size_t(t * C + o)] = acc;
    }
  *L_out = L;
  return out;
}

// RMSNorm over n values with scale (F.rms_norm, eps 1e-6).
void ref_rms_norm(const double* x, const Vec& scale, double* y, int64_t n) {
  double ms = 0;
  for (int64_t i = 0; i < n; ++i) ms += x[i] * x[i];
  const double r = 1.0 / std::sqrt(ms / double(n) + 1e-6);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * r * scale[size_t(i)];
}

struct RefMlp {
  Vec gate, value, out;  // [h, m], [h, m], [m, h] for one patch
};

// NerfGLUBlock's generated weights for one token: param_generator, chunk(3), view, F.normalize(dim=-2).
RefMlp ref_mlp(const io::WeightStore& s, int block, const double* token, int64_t C, int64_t h, int64_t m) {
  const std::string b = "nerf_blocks." + std::to_string(block) + ".param_generator.";
  const Vec w = weights_of(s, b + "weight"), bias = weights_of(s, b + "bias");
  const int64_t N = 3 * h * m;
  Vec params(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) {
    double acc = bias[size_t(r)];
    for (int64_t c = 0; c < C; ++c) acc += w[size_t(r * C + c)] * token[c];
    params[size_t(r)] = acc;
  }
  RefMlp mlp{Vec(params.begin(), params.begin() + h * m), Vec(params.begin() + h * m, params.begin() + 2 * h * m),
             Vec(params.begin() + 2 * h * m, params.end())};
  auto normalise = [](Vec& a, int64_t rows, int64_t cols) {  // each column to unit L2 norm (max(‖·‖, 1e-12))
    for (int64_t j = 0; j < cols; ++j) {
      double n2 = 0;
      for (int64_t i = 0; i < rows; ++i) n2 += a[size_t(i * cols + j)] * a[size_t(i * cols + j)];
      const double n = std::max(std::sqrt(n2), 1e-12);
      for (int64_t i = 0; i < rows; ++i) a[size_t(i * cols + j)] /= n;
    }
  };
  normalise(mlp.gate, h, m);
  normalise(mlp.value, h, m);
  normalise(mlp.out, m, h);
  return mlp;
}

// One pixel's features through NerfGLUBlock.forward, in place: x += bmm(silu(xn·gate) ⊙ (xn·value), out).
void ref_glu(double* x, const RefMlp& mlp, const Vec& scale, int64_t h, int64_t m) {
  Vec xn(static_cast<size_t>(h)), g(static_cast<size_t>(m));
  ref_rms_norm(x, scale, xn.data(), h);
  for (int64_t j = 0; j < m; ++j) {
    double a = 0, v = 0;
    for (int64_t k = 0; k < h; ++k) {
      a += xn[size_t(k)] * mlp.gate[size_t(k * m + j)];
      v += xn[size_t(k)] * mlp.value[size_t(k * m + j)];
    }
    g[size_t(j)] = a / (1.0 + std::exp(-a)) * v;
  }
  for (int64_t k = 0; k < h; ++k) {
    double o = 0;
    for (int64_t j = 0; j < m; ++j) o += g[size_t(j)] * mlp.out[size_t(j * h + k)];
    x[k] += o;
  }
}

// The head (flow Chroma._forward after the blocks): tokens [L, C], image [1, 3, H, W] → [1, 3, H, W].
Vec ref_head(const io::WeightStore& s, const Vec& tokens, const Tensor& image, const ChromaConfig& c) {
  const RadianceConfig& r = c.radiance;
  const int64_t C = c.hidden, h = r.nerf_hidden, m = r.mlp_hidden(), p = r.pixel_patch(), F2 = r.max_freqs * r.max_freqs;
  const int64_t H = image.dim(2), W = image.dim(3), gw = W / p, L = (H / p) * gw;
  const Vec dct = ref_dct(int(p), r.max_freqs);
  const Vec ew = weights_of(s, "nerf_image_embedder.embedder.0.weight"), eb = weights_of(s, "nerf_image_embedder.embedder.0.bias");
  const Vec final_scale = weights_of(s, "nerf_final_layer_conv.norm.scale");
  Vec feat(static_cast<size_t>(h * H * W));  // folded [h, H, W]
  for (int64_t t = 0; t < L; ++t) {
    std::vector<RefMlp> mlps;
    std::vector<Vec> scales;
    for (int i = 0; i < r.nerf_depth; ++i) {
      mlps.push_back(ref_mlp(s, i, tokens.data() + t * C, C, h, m));
      scales.push_back(weights_of(s, "nerf_blocks." + std::to_string(i) + ".norm.scale"));
    }
    for (int64_t px = 0; px < p * p; ++px) {
      const int64_t y = (t / gw) * p + px / p, x = (t % gw) * p + px % p;
      Vec in(static_cast<size_t>(3 + F2));  // [pixel channels | DCT features]
      for (int64_t ch = 0; ch < 3; ++ch) in[size_t(ch)] = image.values()[size_t((ch * H + y) * W + x)];
      for (int64_t f = 0; f < F2; ++f) in[size_t(3 + f)] = dct[size_t(px * F2 + f)];
      Vec v(static_cast<size_t>(h));
      for (int64_t o = 0; o < h; ++o) {
        double acc = eb[size_t(o)];
        for (int64_t i = 0; i < 3 + F2; ++i) acc += ew[size_t(o * (3 + F2) + i)] * in[size_t(i)];
        v[size_t(o)] = acc;
      }
      for (int i = 0; i < r.nerf_depth; ++i) ref_glu(v.data(), mlps[size_t(i)], scales[size_t(i)], h, m);
      Vec n(static_cast<size_t>(h));
      ref_rms_norm(v.data(), final_scale, n.data(), h);
      for (int64_t k = 0; k < h; ++k) feat[size_t((k * H + y) * W + x)] = n[size_t(k)];
    }
  }
  const Vec cw = weights_of(s, "nerf_final_layer_conv.conv.weight"), cb = weights_of(s, "nerf_final_layer_conv.conv.bias");
  Vec out(static_cast<size_t>(3 * H * W));
  for (int64_t o = 0; o < 3; ++o)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) {
        double acc = cb[size_t(o)];
        for (int64_t k = 0; k < h; ++k)
          for (int64_t dy = 0; dy < 3; ++dy)
            for (int64_t dx = 0; dx < 3; ++dx) {
              const int64_t yy = y + dy - 1, xx = x + dx - 1;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;  // zero padding 1
              acc += cw[size_t(((o * h + k) * 3 + dy) * 3 + dx)] * feat[size_t((k * H + yy) * W + xx)];
            }
        out[size_t((o * H + y) * W + x)] = acc;
      }
  return out;
}

// max |got − want| ≤ tol · max(1, max |want|)
void expect_near_all(const std::string& what, const Tensor& got, const Vec& want, double tol) {
  ASSERT_EQ(size_t(got.numel()), want.size()) << what;
  double worst = 0, scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    worst = std::max(worst, std::fabs(double(got.values()[i]) - want[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  std::printf("  %-34s max abs err %.3g (max |ref| %.3g)\n", what.c_str(), worst, scale);
  EXPECT_LE(worst, tol * scale) << what;
  for (float v : got.values()) ASSERT_TRUE(std::isfinite(v)) << what;
}

constexpr double kTol = 2e-5;  // float32 against double, sums of a few hundred terms

struct Mini {
  explicit Mini(const MiniRadiance& o, const std::string& name)
      : store(io::WeightStore::open(test::write_radiance(test::mini_radiance_tensors(o), name))), model(store) {}
  io::WeightStore store;
  ChromaModel model;
};

// ---- Config ---------------------------------------------------------------------------------------

TEST(RadianceConfig, InferredFromShapesAndFlags) {
  MiniRadiance o;
  Mini mini(o, "radiance_config.safetensors");
  const ChromaConfig& c = mini.model.config();
  EXPECT_EQ(c.architecture, Architecture::Radiance);
  EXPECT_EQ(c.architecture_name(), "Chroma1-Radiance");
  EXPECT_EQ(c.hidden, 128);
  EXPECT_EQ(c.in_channels, 3);
  EXPECT_EQ(c.latent_channels(), 3);
  EXPECT_EQ(c.radiance.conv_patch, 4);
  EXPECT_EQ(c.radiance.pixel_patch(), 4);
  EXPECT_EQ(c.token_patch(), 4);
  EXPECT_EQ(c.radiance.nerf_hidden, 8);
  EXPECT_EQ(c.radiance.max_freqs, 3);
  EXPECT_EQ(c.radiance.nerf_depth, 2);
  EXPECT_EQ(c.radiance.mlp_ratio, 2);
  EXPECT_FALSE(c.radiance.x0);
  EXPECT_FALSE(c.radiance.patch32);
  EXPECT_EQ(c.mod_rows, 3 * 1 + 12 * 1 + 2);  // same modulation layout as the latent model

  o.x0 = o.patch32 = true;
  Mini flagged(o, "radiance_flags.safetensors");
  EXPECT_TRUE(flagged.model.config().radiance.x0);
  EXPECT_TRUE(flagged.model.config().radiance.patch32);
  EXPECT_EQ(flagged.model.config().radiance.pixel_patch(), 8);  // patch_size *= 2

  // The ComfyUI prefix works for Radiance too.
  std::map<std::string, Tensor> prefixed;
  for (auto& [name, t] : test::mini_radiance_tensors(MiniRadiance{})) prefixed[std::string(kComfyPrefix) + name] = t;
  const ChromaModel p(io::WeightStore::open(test::write_radiance(prefixed, "radiance_prefixed.safetensors")));
  EXPECT_EQ(p.config().architecture, Architecture::Radiance);
}

// ---- The pieces -------------------------------------------------------------------------------------

TEST(RadianceHead, DctFeaturesMatchTheFormula) {
  for (const auto& [p, F] : {std::pair{16, 8}, std::pair{32, 8}, std::pair{4, 3}}) {
    const Tensor got = radiance::dct_features(p, F);
    ASSERT_EQ(shape_str(got.shape), shape_str({int64_t(p) * p, int64_t(F) * F}));
    // float32 arguments π·f·u reach 7π ≈ 22, where one float32 ulp is 1.9e-6 (the author's float32 too)
    expect_near_all("dct p" + std::to_string(p), got, ref_dct(p, F), 4e-6);
  }
}

TEST(RadianceHead, PatchConvAndDownsampleMatchDirectConvolution) {
  for (bool patch32 : {false, true}) {
    MiniRadiance o;
    o.patch32 = patch32;
    Mini mini(o, patch32 ? "radiance_conv32.safetensors" : "radiance_conv.safetensors");
    const ChromaConfig& c = mini.model.config();
    const Tensor image = test_image(16, 24);
    const Tensor got = radiance::embed_pixels(image, mini.model.weights().radiance, c);
    int64_t L = 0;
    const Vec want = ref_tokens_in(mini.store, image, 4, patch32, c.hidden, &L);
    EXPECT_EQ(L, patch32 ? 2 * 3 : 4 * 6);
    ASSERT_EQ(shape_str(got.shape), shape_str({L, c.hidden}));
    expect_near_all(patch32 ? "img_in_patch (32x32)" : "img_in_patch", got, want, kTol);
  }
}

TEST(RadianceHead, EmbedderIsALinearOnPixelsAndDct) {
  Mini mini(MiniRadiance{}, "radiance_embedder.safetensors");
  const ChromaConfig& c = mini.model.config();
  const Tensor image = test_image(8, 4);  // two 4×4 patches, one above the other
  const Tensor pixels = ops::image_to_patch_pixels(image.reshaped({3, 8, 4}), 4);  // [32, 3]
  const Tensor got = radiance::embed_patch_pixels(pixels, radiance::dct_features(4, 3), mini.model.weights().radiance.embedder);
  const Vec dct = ref_dct(4, 3), w = weights_of(mini.store, "nerf_image_embedder.embedder.0.weight"),
            b = weights_of(mini.store, "nerf_image_embedder.embedder.0.bias");
  Vec want(static_cast<size_t>(32 * 8));
  for (int64_t t = 0; t < 2; ++t)
    for (int64_t px = 0; px < 16; ++px) {
      const int64_t y = t * 4 + px / 4, x = px % 4;  // unfold order: patch-major, then row-major pixels
      for (int64_t o = 0; o < 8; ++o) {
        double acc = b[size_t(o)];
        for (int64_t ch = 0; ch < 3; ++ch) acc += w[size_t(o * 12 + ch)] * image.values()[size_t((ch * 8 + y) * 4 + x)];
        for (int64_t f = 0; f < 9; ++f) acc += w[size_t(o * 12 + 3 + f)] * dct[size_t(px * 9 + f)];
        want[size_t((t * 16 + px) * 8 + o)] = acc;
      }
    }
  (void)c;
  expect_near_all("nerf_image_embedder", got, want, kTol);
}

TEST(RadianceHead, GeneratedWeightsAreTheL2NormalisedParts) {
  Mini mini(MiniRadiance{}, "radiance_params.safetensors");
  const ChromaConfig& c = mini.model.config();
  const Tensor tokens = test_text(3, c.hidden);  // three patches' tokens
  const radiance::GeneratedMlp got = radiance::generate_mlp(tokens, mini.model.weights().radiance.blocks[1], c);
  const int64_t h = 8, m = 16;
  ASSERT_EQ(shape_str(got.gate.shape), shape_str({3, h, m}));
  ASSERT_EQ(shape_str(got.out.shape), shape_str({3, m, h}));
  Vec gate, value, out;
  const Vec tok = to_double(tokens);
  for (int64_t t = 0; t < 3; ++t) {
    const RefMlp r = ref_mlp(mini.store, 1, tok.data() + t * c.hidden, c.hidden, h, m);
    gate.insert(gate.end(), r.gate.begin(), r.gate.end());
    value.insert(value.end(), r.value.begin(), r.value.end());
    out.insert(out.end(), r.out.begin(), r.out.end());
  }
  expect_near_all("fc1_gate", got.gate, gate, 1e-5);
  expect_near_all("fc1_value", got.value, value, 1e-5);
  expect_near_all("fc2", got.out, out, 1e-5);
  for (int64_t j = 0; j < m; ++j) {  // unit columns (dim −2)
    double n2 = 0;
    for (int64_t k = 0; k < h; ++k) n2 += double(got.gate.values()[size_t(k * m + j)]) * got.gate.values()[size_t(k * m + j)];
    EXPECT_NEAR(n2, 1.0, 1e-5) << "gate column " << j;
  }
}

TEST(RadianceHead, GluBlockMatchesExactMath) {
  Mini mini(MiniRadiance{}, "radiance_glu.safetensors");
  const ChromaConfig& c = mini.model.config();
  const Tensor tokens = test_text(2, c.hidden);
  const NerfBlockWeights& block = mini.model.weights().radiance.blocks[0];
  const radiance::GeneratedMlp mlp = radiance::generate_mlp(tokens, block, c);
  Tensor x({2 * 16, 8});
  for (int64_t i = 0; i < x.numel(); ++i) x.values()[size_t(i)] = std::cos(0.3f * float(i));
  Vec want = to_double(x);
  radiance::glu_block(x, mlp, block);
  const Vec tok = to_double(tokens), scale = weights_of(mini.store, "nerf_blocks.0.norm.scale");
  for (int64_t t = 0; t < 2; ++t) {
    const RefMlp r = ref_mlp(mini.store, 0, tok.data() + t * c.hidden, c.hidden, 8, 16);
    for (int64_t px = 0; px < 16; ++px) ref_glu(want.data() + (t * 16 + px) * 8, r, scale, 8, 16);
  }
  expect_near_all("NerfGLUBlock", x, want, kTol);
}

// The head end to end (embedder, blocks, final RMSNorm, fold, 3×3 conv) in any tiling, 32x32 too.
TEST(RadianceHead, DecodeMatchesExactMathInAnyTiling) {
  for (bool patch32 : {false, true}) {
    MiniRadiance o;
    o.patch32 = patch32;
    Mini mini(o, patch32 ? "radiance_head32.safetensors" : "radiance_head.safetensors");
    const ChromaConfig& c = mini.model.config();
    const Tensor image = test_image(16, 24, 0.4f);
    const int64_t L = (16 / c.radiance.pixel_patch()) * (24 / c.radiance.pixel_patch());
    const Tensor tokens = test_text(L, c.hidden);
    const Vec want = ref_head(mini.store, to_double(tokens), image, c);
    const Tensor whole = radiance::decode(tokens, image, mini.model.weights().radiance, c);
    ASSERT_EQ(shape_str(whole.shape), shape_str({1, 3, 16, 24}));
    expect_near_all(patch32 ? "head (32x32)" : "head", whole, want, kTol);
    for (int64_t tile : {int64_t(1), int64_t(4), L + 3}) {
      const Tensor tiled = radiance::decode(tokens, image, mini.model.weights().radiance, c, tile);
      // per-patch math: tiling changes only the GEMMs' float32 summation blocking
      expect_near_all("head in tiles of " + std::to_string(tile), tiled, Vec(whole.values().begin(), whole.values().end()), 1e-5);
    }
  }
}

TEST(RadianceHead, VelocityFromX0) {
  const Tensor x = test_image(4, 4), x0 = test_image(4, 4, 1.0f);
  const Tensor v = radiance::velocity_from_x0(x, x0, 0.25f);
  Vec want(static_cast<size_t>(x.numel()));
  for (size_t i = 0; i < want.size(); ++i) want[i] = (double(x.values()[i]) - x0.values()[i]) / 0.25;
  expect_near_all("(x_t − x0)/t", v, want, 1e-6);
  EXPECT_NE(test::error_of([&] { radiance::velocity_from_x0(x, x0, 0.0f); }).find("t > 0"), std::string::npos);
}

// ---- The model ----------------------------------------------------------------------------------------

// forward = the head on the image rows the last single block leaves (traced), for each flag.
TEST(RadianceModel, ForwardIsTheHeadOnTheLastBlockTokens) {
  for (const auto& [x0, patch32] : {std::pair{false, false}, std::pair{true, false}, std::pair{true, true}}) {
    MiniRadiance o;
    o.x0 = x0;
    o.patch32 = patch32;
    Mini mini(o, "radiance_forward.safetensors");
    const ChromaConfig& c = mini.model.config();
    const Tensor image = test_image(16, 24, 0.2f), txt = test_text(3, 8);
    const float t = 0.7f;
    const Tensor mods = mini.model.modulations(t);
    test::RecordingTracer tracer;
    Tensor got;
    {
      const TraceBinding bind(&tracer);
      got = mini.model.forward(image, txt, mods, t);
    }
    ASSERT_EQ(shape_str(got.shape), shape_str({1, 3, 16, 24}));
    const Tensor& joint = tracer.values.at("single.0.joint_visible");  // [3 + L, C], text first
    const Tensor tokens = joint.rows(3, joint.dim(0));
    // The image tokens entering the blocks are the patch conv's.
    int64_t L = 0;
    expect_near_all("img_in", tracer.values.at("img_in"), ref_tokens_in(mini.store, image, 4, patch32, c.hidden, &L), kTol);
    Vec want = ref_head(mini.store, to_double(tokens), image, c);
    if (x0)
      for (size_t i = 0; i < want.size(); ++i) want[i] = (double(image.values()[i]) - want[i]) / double(t);
    expect_near_all(std::string("forward") + (x0 ? " x0" : "") + (patch32 ? " 32x32" : ""), got, want, x0 ? 1e-4 : kTol);
  }
}

TEST(RadianceModel, PackedForwardEqualsSeparateForwards) {
  MiniRadiance o;
  o.x0 = true;
  Mini mini(o, "radiance_packed.safetensors");
  const Tensor image = test_image(8, 12), a = test_text(3, 8), b = test_text(5, 8);
  const Tensor mods = mini.model.modulations(0.5f);
  const std::vector<Tensor> both = mini.model.forward_packed(image, {{a}, {b}}, mods, nullptr, 0.5f);
  const Tensor va = mini.model.forward(image, a, mods, 0.5f), vb = mini.model.forward(image, b, mods, 0.5f);
  for (size_t i = 0; i < va.values().size(); ++i) {
    EXPECT_NEAR(both[0].values()[i], va.values()[i], 1e-4) << i;
    EXPECT_NEAR(both[1].values()[i], vb.values()[i], 1e-4) << i;
  }
}

TEST(RadianceModel, BadInputsAreRejected) {
  MiniRadiance o;
  o.x0 = true;
  Mini mini(o, "radiance_inputs.safetensors");
  const Tensor mods = mini.model.modulations(0.5f), txt = test_text(2, 8);
  EXPECT_NE(test::error_of([&] { mini.model.forward(test_image(8, 12), txt, mods); }).find("needs the flow time"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { mini.model.forward(test_image(8, 10), txt, mods, 0.5f); }).find("multiples of 4"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { mini.model.forward(Tensor({1, 16, 8, 8}), txt, mods, 0.5f); }).find("[1, 3, h, w]"),
            std::string::npos);
}

// Every tensor of the pixel path: missing, or of a wrong shape → an error naming it.
TEST(RadianceWeights, MissingOrMisshapedTensorIsNamed) {
  const auto good = test::mini_radiance_tensors(MiniRadiance{});
  for (const std::string name :
       {"img_in_patch.weight", "img_in_patch.bias", "nerf_image_embedder.embedder.0.weight",
        "nerf_image_embedder.embedder.0.bias", "nerf_blocks.1.param_generator.weight", "nerf_blocks.1.param_generator.bias",
        "nerf_blocks.0.norm.scale", "nerf_final_layer_conv.norm.scale", "nerf_final_layer_conv.conv.weight",
        "nerf_final_layer_conv.conv.bias", "txt_in.weight", "single_blocks.0.linear1.weight"}) {
    SCOPED_TRACE(name);
    auto missing = good;
    missing.erase(name);
    const std::string path = test::write_radiance(missing, "radiance_missing.safetensors");
    const std::string e1 = test::error_of([&] { ChromaModel m(io::WeightStore::open(path)); });
    EXPECT_NE(e1.find(name), std::string::npos) << e1;
    EXPECT_EQ(e1.find('\n'), std::string::npos) << "one line: " << e1;

    if (name == "txt_in.weight") continue;  // its width is the inferred context size
    auto misshaped = good;
    Shape s = misshaped.at(name).shape;
    s.back() += 1;
    misshaped[name] = Tensor(s);
    const std::string path2 = test::write_radiance(misshaped, "radiance_misshaped.safetensors");
    const std::string e2 = test::error_of([&] { ChromaModel m(io::WeightStore::open(path2)); });
    EXPECT_NE(e2.find(name), std::string::npos) << e2;
  }
}

}  // namespace
}  // namespace chroma::dit

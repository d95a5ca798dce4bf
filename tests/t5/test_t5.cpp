// T5 encoder against the author's code: reference case c (t5-mini, testdata/reference/README.md §4, §5 case c),
// plus config inference and the errors for malformed weights and ids.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/t5/t5.h"
#include "tensor/trace.h"
#include "testdata.h"

namespace chroma::t5 {
namespace {

using test::expect_close;
using test::kForwardTol;
using test::reference_path;

using test::RecordingTracer;

class T5Reference : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string weights = reference_path("t5-mini.safetensors"), cases = reference_path("case-c-t5.safetensors");
    CHROMA_REQUIRE_FILE(weights);
    CHROMA_REQUIRE_FILE(cases);
    encoder_ = std::make_unique<T5Encoder>(io::WeightStore::open(weights));
    case_ = io::SafetensorsFile::open(cases);
  }

  // A reference activation [1, 512, C] as [512, C].
  Tensor reference(const std::string& name) const {
    Tensor t = case_->get(name).to_f32();
    t.reshape({t.dim(1), t.dim(2)});
    return t;
  }

  // The ids of sequence `seq` where its mask is 1.
  std::vector<int32_t> valid_ids(const std::string& seq) const {
    const std::vector<int64_t> ids64 = case_->get("input." + seq + ".ids").to_i64();
    const std::vector<int64_t> mask = case_->get("input." + seq + ".mask").to_i64();
    std::vector<int32_t> ids;
    for (size_t i = 0; i < ids64.size(); ++i)
      if (mask[i]) ids.push_back(int32_t(ids64[i]));
    return ids;
  }

  // `got` [n(+1), C] against the reference activation `name`: valid rows against rows [0, n), the one
  // padding row against row n (all reference padding rows are the same, README §3.2).
  void expect_rows(const std::string& name, const Tensor& got, int64_t n) const {
    const Tensor ref = reference(name);
    expect_close(name + " valid rows", got.rows(0, n), ref.rows(0, n), kForwardTol);
    if (n < kPaddedLength) expect_close(name + " padding row", got.rows(n, n + 1), ref.rows(n, n + 1), kForwardTol);
  }

  // Runs sequence `seq` and checks the output, and the per-layer residual stream where the case
  // stores it.
  void check_sequence(const std::string& seq, int64_t expected_n, bool has_layers) {
    const std::vector<int32_t> ids = valid_ids(seq);
    ASSERT_EQ(int64_t(ids.size()), expected_n) << seq;
    const int64_t n = expected_n;

    RecordingTracer tracer;
    ScopedTracer scoped(&tracer);
    TracePrefix prefix("inter." + seq + ".");
    const Tensor out = encoder_->encode(ids);

    const int64_t rows = n < kPaddedLength ? n + 1 : n;
    ASSERT_EQ(shape_str(out.shape), shape_str({rows, 128})) << seq;
    std::vector<std::pair<std::string, Tensor>> checks = {{"output." + seq + ".hidden", out}};
    if (has_layers)
      for (int i = 0; i < 2; ++i) {
        const std::string name = "inter." + seq + ".layer." + std::to_string(i);
        ASSERT_TRUE(tracer.values.count(name)) << "not traced: " << name;
        checks.push_back({name, tracer.values[name]});
      }
    EXPECT_TRUE(tracer.values.count("inter." + seq + ".hidden"));
    for (const auto& [name, got] : checks) expect_rows(name, got, n);
  }

  // Runs the sequences `seqs` in one encode_batch and checks each prompt's output, and its per-layer
  // residual stream (traced under its own prefix) where the case stores it, against the reference
  // of that sequence alone.
  void check_batch(const std::vector<std::string>& seqs) {
    std::vector<std::vector<int32_t>> ids;
    std::vector<T5Encoder::Prompt> prompts;
    for (const std::string& seq : seqs) ids.push_back(valid_ids(seq));
    for (size_t s = 0; s < seqs.size(); ++s) prompts.push_back({ids[s], "inter." + seqs[s] + "."});

    RecordingTracer tracer;
    ScopedTracer scoped(&tracer);
    const std::vector<Tensor> out = encoder_->encode_batch(prompts);
    ASSERT_EQ(out.size(), seqs.size());
    for (size_t s = 0; s < seqs.size(); ++s) {
      const std::string& seq = seqs[s];
      const int64_t n = int64_t(ids[s].size());
      ASSERT_EQ(shape_str(out[s].shape), shape_str({n < kPaddedLength ? n + 1 : n, 128})) << seq;
      expect_rows("output." + seq + ".hidden", out[s], n);
      for (int i = 0; i < 2; ++i) {
        const std::string name = "inter." + seq + ".layer." + std::to_string(i);
        ASSERT_TRUE(tracer.values.count(name)) << "not traced: " << name;
        if (case_->tensors().count(name)) expect_rows(name, tracer.values[name], n);
      }
    }
  }

  std::unique_ptr<T5Encoder> encoder_;
  std::unique_ptr<io::SafetensorsFile> case_;
};

TEST_F(T5Reference, ConfigInferredFromShapes) {
  const T5Config& c = encoder_->config();
  EXPECT_EQ(c.d_model, 128);
  EXPECT_EQ(c.heads, 2);
  EXPECT_EQ(c.d_kv, 64);
  EXPECT_EQ(c.d_ff, 256);
  EXPECT_EQ(c.layers, 2);
  EXPECT_EQ(c.vocab, 32128);
  EXPECT_EQ(c.buckets, 32);
}

// Exact: the bucket is an integer; the reference stores it for k − q = −511..511.
TEST_F(T5Reference, RelativePositionBucket) {
  const std::vector<int64_t> ref = case_->get("inter.rel_bucket").to_i64();
  ASSERT_EQ(ref.size(), 1023u);
  for (int64_t r = -511; r <= 511; ++r)
    ASSERT_EQ(relative_position_bucket(r, 32, 128), ref[size_t(r + 511)]) << "k - q = " << r;
}

TEST_F(T5Reference, Prompt) { check_sequence("prompt", 13, true); }
TEST_F(T5Reference, EmptyPrompt) { check_sequence("empty", 1, true); }
TEST_F(T5Reference, LongPromptBeyondMaxDistance) { check_sequence("long", 140, false); }
TEST_F(T5Reference, FullLengthNoPadding) { check_sequence("full", 512, false); }
// Several prompts in one pass over the weights (the CFG pair): each as if encoded alone.
TEST_F(T5Reference, BatchOfPromptEmptyLong) { check_batch({"prompt", "empty", "long"}); }
TEST_F(T5Reference, BatchWithUnpaddedPrompt) { check_batch({"full", "prompt"}); }

// ---- malformed weights and ids: a tiny model written to a temp dir ----

// A complete tiny T5 (C 8, H 2, D 4, F 16, 2 layers, V 10, 32 buckets), float32, with smooth values.
std::map<std::string, Tensor> tiny_model() {
  std::map<std::string, Tensor> m;
  auto add = [&](const std::string& name, Shape shape) {
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.values()[size_t(i)] = 0.1f * std::sin(float(i + m.size()));
    m[name] = t;
  };
  add("shared.weight", {10, 8});
  add("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", {32, 2});
  for (int i = 0; i < 2; ++i) {
    const std::string b = "encoder.block." + std::to_string(i) + ".";
    for (const char* p : {"q", "k", "v"}) add(b + "layer.0.SelfAttention." + p + ".weight", {8, 8});
    add(b + "layer.0.SelfAttention.o.weight", {8, 8});
    add(b + "layer.0.layer_norm.weight", {8});
    add(b + "layer.1.DenseReluDense.wi_0.weight", {16, 8});
    add(b + "layer.1.DenseReluDense.wi_1.weight", {16, 8});
    add(b + "layer.1.DenseReluDense.wo.weight", {8, 16});
    add(b + "layer.1.layer_norm.weight", {8});
  }
  add("encoder.final_layer_norm.weight", {8});
  return m;
}

io::WeightStore write_and_open(const std::map<std::string, Tensor>& model, const std::string& file) {
  // Named after the test too: CTest runs the tests of this file in parallel processes.
  const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  const std::string path = (std::filesystem::path(::testing::TempDir()) / (test + "_" + file)).string();
  std::vector<io::NamedTensor> entries;
  for (const auto& [name, t] : model) entries.push_back({name, &t});
  io::write_safetensors(path, entries);
  return io::WeightStore::open(path);
}

// Expects construction to throw chroma::Error whose message names `tensor`.
void expect_rejected(const std::map<std::string, Tensor>& model, const std::string& tensor) {
  const io::WeightStore store = write_and_open(model, "t5_bad.safetensors");
  try {
    T5Encoder encoder(store);
    ADD_FAILURE() << "accepted weights with a bad " << tensor;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tensor), std::string::npos) << e.what();
  }
}

TEST(T5Weights, TinyModelLoadsAndEncodes) {
  const T5Encoder encoder(write_and_open(tiny_model(), "t5_tiny.safetensors"));
  EXPECT_EQ(encoder.config().d_kv, 4);
  EXPECT_EQ(encoder.config().d_ff, 16);
  const std::vector<int32_t> ids = {3, 9, 1};
  EXPECT_EQ(shape_str(encoder.encode(ids).shape), shape_str({4, 8}));
}

TEST(T5Weights, MissingTensorIsNamed) {
  for (const std::string name : {"encoder.block.1.layer.1.DenseReluDense.wo.weight", "shared.weight",
                                 "encoder.final_layer_norm.weight",
                                 "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"}) {
    auto model = tiny_model();
    model.erase(name);
    expect_rejected(model, name);
  }
}

TEST(T5Weights, MisshapedTensorIsNamed) {
  auto model = tiny_model();
  model["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"] = Tensor({15, 8});
  expect_rejected(model, "encoder.block.1.layer.1.DenseReluDense.wi_1.weight");

  model = tiny_model();
  model["encoder.block.0.layer.0.SelfAttention.k.weight"] = Tensor({8, 7});
  expect_rejected(model, "encoder.block.0.layer.0.SelfAttention.k.weight");

  // q rows (8) not divisible by the 3 heads the relative-bias table implies.
  model = tiny_model();
  model["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = Tensor({32, 3});
  expect_rejected(model, "encoder.block.0.layer.0.SelfAttention.q.weight");
}

TEST(T5Weights, BadIdsAreRejected) {
  const T5Encoder encoder(write_and_open(tiny_model(), "t5_tiny_ids.safetensors"));
  const std::vector<int32_t> too_large = {3, 10, 1}, negative = {-1, 1}, none = {};
  const std::vector<int32_t> too_many(size_t(kPaddedLength) + 1, 1);
  EXPECT_THROW(encoder.encode(too_large), Error);
  EXPECT_THROW(encoder.encode(negative), Error);
  EXPECT_THROW(encoder.encode(none), Error);
  EXPECT_THROW(encoder.encode(too_many), Error);
  const std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_THROW(encoder.encode_batch({}), Error);
  EXPECT_THROW(encoder.encode_batch({{ok}, {too_large}}), Error);  // a bad prompt anywhere in the batch
}

// ---- the other front ends' padding (Padding), against a plain double-precision T5 ----

// T5 (spec §2.4) on the ids `seq` in double with plain loops: query i attends to key j when
// attends(i, j); every row is returned. Weights from the tiny model's map (float32 tensors).
std::vector<std::vector<double>> plain_t5(const std::map<std::string, Tensor>& m, const std::vector<int32_t>& seq,
                                          const std::function<bool(int64_t, int64_t)>& attends) {
  const int64_t L = int64_t(seq.size()), C = 8, H = 2, D = 4, F = 16;
  auto w = [&](const std::string& name) { return m.at(name).to_vector(); };
  auto rms = [&](const std::vector<double>& x, const std::vector<float>& g) {
    double ms = 0;
    for (double v : x) ms += v * v;
    const double r = 1.0 / std::sqrt(ms / double(x.size()) + 1e-6);
    std::vector<double> out(x.size());
    for (size_t c = 0; c < x.size(); ++c) out[c] = x[c] * r * g[c];
    return out;
  };
  auto matvec = [](const std::vector<float>& W, const std::vector<double>& x, int64_t rows) {  // W [rows, x.size()]
    std::vector<double> out(size_t(rows), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < x.size(); ++c) out[size_t(r)] += double(W[size_t(r) * x.size() + c]) * x[c];
    return out;
  };
  const std::vector<float> shared = w("shared.weight");
  const std::vector<float> rel = w("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");  // [32, H]
  std::vector<std::vector<double>> x(static_cast<size_t>(L), std::vector<double>(static_cast<size_t>(C)));
  for (int64_t i = 0; i < L; ++i)
    for (int64_t c = 0; c < C; ++c) x[size_t(i)][size_t(c)] = shared[size_t(seq[size_t(i)] * C + c)];
  for (int layer = 0; layer < 2; ++layer) {
    const std::string b = "encoder.block." + std::to_string(layer) + ".";
    std::vector<std::vector<double>> q, k, v;
    for (const auto& row : x) {
      const std::vector<double> h = rms(row, w(b + "layer.0.layer_norm.weight"));
      q.push_back(matvec(w(b + "layer.0.SelfAttention.q.weight"), h, H * D));
      k.push_back(matvec(w(b + "layer.0.SelfAttention.k.weight"), h, H * D));
      v.push_back(matvec(w(b + "layer.0.SelfAttention.v.weight"), h, H * D));
    }
    for (int64_t i = 0; i < L; ++i) {
      std::vector<double> att(size_t(H * D), 0.0);
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> p(size_t(L), 0.0);
        double top = -1e300, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          if (!attends(i, j)) continue;
          double dot = rel[size_t(relative_position_bucket(j - i, 32, 128) * H + h)];
          for (int64_t d = 0; d < D; ++d) dot += q[size_t(i)][size_t(h * D + d)] * k[size_t(j)][size_t(h * D + d)];
          p[size_t(j)] = dot;
          top = std::max(top, dot);
        }
        for (int64_t j = 0; j < L; ++j) total += attends(i, j) ? (p[size_t(j)] = std::exp(p[size_t(j)] - top)) : 0.0;
        for (int64_t j = 0; j < L; ++j)
          if (attends(i, j))
            for (int64_t d = 0; d < D; ++d) att[size_t(h * D + d)] += p[size_t(j)] / total * v[size_t(j)][size_t(h * D + d)];
      }
      const std::vector<double> o = matvec(w(b + "layer.0.SelfAttention.o.weight"), att, C);
      for (int64_t c = 0; c < C; ++c) x[size_t(i)][size_t(c)] += o[size_t(c)];
    }
    for (auto& row : x) {
      const std::vector<double> h = rms(row, w(b + "layer.1.layer_norm.weight"));
      std::vector<double> gate = matvec(w(b + "layer.1.DenseReluDense.wi_0.weight"), h, F);
      const std::vector<double> lin = matvec(w(b + "layer.1.DenseReluDense.wi_1.weight"), h, F);
      for (int64_t f = 0; f < F; ++f) {
        const double g = gate[size_t(f)];
        gate[size_t(f)] = 0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * lin[size_t(f)];
      }
      const std::vector<double> out = matvec(w(b + "layer.1.DenseReluDense.wo.weight"), gate, C);
      for (int64_t c = 0; c < C; ++c) row[size_t(c)] += out[size_t(c)];
    }
  }
  for (auto& row : x) row = rms(row, w("encoder.final_layer_norm.weight"));
  return x;
}

void expect_rows_near(const Tensor& got, const std::vector<std::vector<double>>& want, int64_t rows, const char* what) {
  ASSERT_EQ(shape_str(got.shape), shape_str({rows, 8})) << what;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = 0; c < 8; ++c)
      EXPECT_NEAR(got.values()[size_t(i * 8 + c)], want[size_t(i)][size_t(c)], 2e-5) << what << " row " << i << " col " << c;
}

TEST(T5Padding, EachFrontEndsPaddingMatchesPlainT5) {
  const auto model = tiny_model();
  const T5Encoder encoder(write_and_open(model, "t5_tiny_padding.safetensors"));
  const std::vector<int32_t> ids = {3, 9, 4, 7, 1};
  const int64_t n = int64_t(ids.size());
  // ComfyUI: the ids alone, no mask, no padding row.
  expect_rows_near(encoder.encode(ids, Padding::None), plain_t5(model, ids, [](int64_t, int64_t) { return true; }), n,
                   "comfyui");
  // diffusers / HF: [ids, <pad>] with the <pad> key masked for every query, the <pad> row returned.
  std::vector<int32_t> with_pad = ids;
  with_pad.push_back(kPadId);
  expect_rows_near(encoder.encode(ids, Padding::KeyMasked),
                   plain_t5(model, with_pad, [n](int64_t, int64_t j) { return j < n; }), n + 1, "diffusers");
  // sd.cpp: 512 ids (the rest <pad>), no mask at all; the first n + 1 rows returned.
  std::vector<int32_t> padded = ids;
  padded.resize(size_t(kPaddedLength), kPadId);
  expect_rows_near(encoder.encode(ids, Padding::Unmasked), plain_t5(model, padded, [](int64_t, int64_t) { return true; }),
                   n + 1, "sdcpp");
  // The author's: valid rows attend to valid rows only, like HF's; only the padding row differs.
  const Tensor flow = encoder.encode(ids), keyed = encoder.encode(ids, Padding::KeyMasked);
  for (int64_t i = 0; i < n * 8; ++i) EXPECT_NEAR(flow.values()[size_t(i)], keyed.values()[size_t(i)], 1e-6) << i;
  double pad_diff = 0;
  for (int64_t c = 0; c < 8; ++c) pad_diff += std::abs(flow.values()[size_t(n * 8 + c)] - keyed.values()[size_t(n * 8 + c)]);
  EXPECT_GT(pad_diff, 1e-4);  // far above the 1e-6 agreement of the valid rows
  // A batch mixing the rules gives each prompt what it gives alone.
  const std::vector<Tensor> batch =
      encoder.encode_batch({{ids, "", Padding::Unmasked}, {ids, "", Padding::None}, {ids, "", Padding::KeyMasked}});
  for (const auto& [got, padding] : {std::pair{batch[0], Padding::Unmasked}, {batch[1], Padding::None}, {batch[2], Padding::KeyMasked}}) {
    const Tensor alone = encoder.encode(ids, padding);
    ASSERT_EQ(got.shape, alone.shape);
    for (size_t i = 0; i < got.values().size(); ++i) EXPECT_NEAR(got.values()[i], alone.values()[i], 1e-6) << i;
  }
}

}  // namespace
}  // namespace chroma::t5

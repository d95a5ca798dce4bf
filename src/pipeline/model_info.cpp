#include "pipeline/model_info.h"

#include <cstdio>

#include "models/chroma/config.h"
#include "models/t5/t5.h"

namespace chroma::pipeline {

std::string inferred_config(const io::WeightStore& store) {
  char b[640];
  try {
    if (store.format().kind == io::ModelKind::DiT) {
      const dit::ChromaConfig c = dit::ChromaConfig::from_weights(store);
      std::string radiance;
      if (c.architecture == dit::Architecture::Radiance) {
        const dit::RadianceConfig& r = c.radiance;
        char h[200];
        std::snprintf(h, sizeof h, "; pixel space: %d-pixel patches, head width %d, %d GLU blocks of %d, %d² DCT features, %s prediction",
                      r.pixel_patch(), r.nerf_hidden, r.nerf_depth, r.mlp_hidden(), r.max_freqs, r.x0 ? "x0" : "velocity");
        radiance = h;
      }
      std::snprintf(b, sizeof b,
                    "%s: hidden %d, heads %d × %d, mlp %d, double blocks %d, single blocks %d, context %d, "
                    "approximator %d → %d × %d layers%s",
                    c.architecture_name().c_str(), c.hidden, c.heads, c.head_dim, c.mlp_hidden, c.double_blocks, c.single_blocks, c.context_dim,
                    c.approx_in, c.approx_hidden, c.approx_layers, radiance.c_str());
      return b;
    }
    if (store.format().kind == io::ModelKind::T5) {
      const t5::T5Config c = t5::T5Config::from_weights(store);
      std::snprintf(b, sizeof b, "d_model %d, heads %d × %d, d_ff %d, layers %d, vocab %d, buckets %d", c.d_model,
                    c.heads, c.d_kv, c.d_ff, c.layers, c.vocab, c.buckets);
      return b;
    }
  } catch (const Error& e) {
    return std::string("not inferable (") + e.what() + ")";
  }
  return "-";
}

}  // namespace chroma::pipeline

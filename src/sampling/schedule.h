// Sampler time schedule (chroma-spec.md §4.2): flow's `get_schedule`, reproduced bit for bit.
//
// The flow time runs from t = 1 (pure noise) to t = 0 (data). flow computes the schedule on a
// float32 tensor, so its values carry PyTorch's float32 rounding; the model, the Euler step and
// the reference dumps all see those float32 values (testdata/reference/README.md case b).
#pragma once
#include <cstdint>
#include <vector>

namespace chroma::sampling {

// flow `get_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15)(image_seq_len)` in float64:
// mu = m·image_seq_len + b with m = (1.15 − 0.5)/(4096 − 256), b = 0.5 − 256·m.
// image_seq_len is the number of image tokens, (H/16)·(W/16). E.g. 1024² → 4096 → mu = 1.15.
double schedule_mu(int64_t image_seq_len);

// flow `get_schedule(steps, image_seq_len, shift)`: steps + 1 float32 times, first 1, last 0.
//   ts = torch.linspace(1, 0, steps + 1)                     (float32, as PyTorch's AVX2 kernel does it)
//   shift: t' = e^mu / (e^mu + (1/t − 1))                   (on the float32 tensor; t = 0 stays 0)
// Throws chroma::Error when steps < 1 or image_seq_len < 1.
std::vector<float> flow_schedule(int steps, int64_t image_seq_len, bool shift);

}  // namespace chroma::sampling

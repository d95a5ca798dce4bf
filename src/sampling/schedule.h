// Sampler time schedule (chroma-spec.md §4.2): flow's `get_schedule`, reproduced bit for bit.
//
// The flow time runs from t = 1 (pure noise) to t = 0 (data). flow computes the schedule on a
// float32 tensor, so its values carry PyTorch's float32 rounding; the model, the Euler step and
// the reference dumps all see those float32 values (testdata/reference/README.md case b).
#pragma once
#include <cstdint>
#include <string>
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

// Other front ends' schedulers (ComfyUI's names and rules), on the flow sigmas σ = t of a table of
// 1000 times  σ_k = α·u/(1 + (α − 1)·u),  u = k/1000, k = 1…1000  (ComfyUI's ModelSamplingDiscreteFlow
// with shift α). α = e^mu with the author's shift — the author's time_shift is this same map — and
// α = 1 without it (--no-shift; what ComfyUI's Chroma1-HD template uses). Values computed in double,
// rounded to float32; every schedule ends with 0.
//   author        flow_schedule (the default; exact)
//   simple        σ_table[last − floor(i·1000/steps)], i = 0…steps−1
//   beta          σ_table[rint(BetaPPF(1 − i/steps; α_b, β_b)·999)], i = 0…steps−1, repeats dropped
//                 (ComfyUI's rule: many steps may give fewer distinct times)
//   karras        (σmax^(1/ρ) + i/(steps−1)·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, ρ = 7, σmin/σmax = table ends
//   exponential   exp(log σmax + i/(steps−1)·(log σmin − log σmax))
//   sigmoid_offset  σ_table[rint((1 − S(i/steps))·999)], i = 0…steps, repeats dropped, the last (σmin)
//                 replaced by 0; S(x) = (s(x) − s(0))/(s(1) − s(0)), s(x) = 1/(1 + e^(−k·(8x − 4 + 8·(c − ½))))
//                 with k = 1, c = ½ (the ComfyUI sigmoid_offset node of the Chroma community, defaults)
//   bong_tangent  RES4LYF's two arctangent stages from 1 through ½ to 0 (defaults: pivots 0.6, slopes
//                 0.2): over n = steps + 2 points, stage 1 has m = ⌊0.6·n⌋ points from 1 to ½, stage 2
//                 the other n − m from ½ to 0, each f(x) = (a(x) − a(last))/(a(0) − a(last))·(start − end)
//                 + end with a(x) = (2/π)·atan(−slope·(x − pivot)), slope = 0.2·40/n, pivot ⌊0.6·n⌋
//                 (stage 2: minus m); stage 1's last point (= stage 2's first) is dropped. Flow times
//                 directly: independent of the shift and of the image size.
enum class Scheduler { Author, Simple, Beta, Karras, Exponential, SigmoidOffset, BongTangent };

struct ScheduleOptions {
  Scheduler scheduler = Scheduler::Author;
  int steps = 28;
  int64_t image_seq_len = 4096;       // image tokens, (H/16)·(W/16): the author's mu
  bool shift = true;
  double beta_alpha = 0.6, beta_beta = 0.6;  // beta scheduler parameters, each in (0, 100]
};

// The schedule: times from 1 (or the table's σmax) down to 0, at most steps + 1 of them. Throws
// chroma::Error for steps < 1 or beta parameters out of range.
std::vector<float> make_schedule(const ScheduleOptions& options);

// "author", "simple", …; parse_scheduler returns false for an unknown name.
const char* scheduler_name(Scheduler s);
bool parse_scheduler(const std::string& name, Scheduler* out);
std::string scheduler_names();  // comma-separated

// The inverse of the regularized incomplete beta function I_x(a, b) (the Beta(a, b) distribution's
// quantile): x with I_x(a, b) = p, for p in [0, 1] and a, b > 0 (Boost.Math).
double beta_ppf(double p, double a, double b);

}  // namespace chroma::sampling

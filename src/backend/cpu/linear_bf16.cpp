// linear in bf16 arithmetic (Compute::Bf16): y = bf16(x) · wᵀ + b for bf16 weights, the products
// summed in float32, through oneDNN's matmul. On a CPU with AVX-512 BF16 that is its vdpbf16ps
// kernel, two multiply-adds per fp32 lane and instruction. oneDNN has no bf16 matmul without AVX-512;
// there linear.cpp emulates it (inputs rounded, then the float32 path: the same products, exact in
// float32), for tests: the pipeline refuses bf16 compute on such CPUs, where it would gain nothing.
// The weights are read in place as stored: w [N, K] row-major is the [K, N] matrix oneDNN calls
// "ba", so nothing is copied or repacked. x is rounded to bf16 once per call, to nearest even as
// PyTorch's .to(torch.bfloat16) does; the bias is added in float32.
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <map>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "backend/cpu/kernels.h"

namespace chroma::cpu {
namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One primitive per shape, built once per thread (building one costs a JIT compilation).
const dnnl::matmul& matmul_for(int64_t M, int64_t N, int64_t K, bool bias) {
  thread_local std::map<std::tuple<int64_t, int64_t, int64_t, bool>, dnnl::matmul> cache;
  const auto key = std::make_tuple(M, N, K, bias);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const memory::desc x_md({M, K}, memory::data_type::bf16, memory::format_tag::ab);
  const memory::desc w_md({K, N}, memory::data_type::bf16, memory::format_tag::ba);
  const memory::desc b_md = bias ? memory::desc({1, N}, memory::data_type::f32, memory::format_tag::ab) : memory::desc();
  const memory::desc y_md({M, N}, memory::data_type::f32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x_md, w_md, b_md, y_md), cpu_engine());
  return cache.emplace(key, dnnl::matmul(pd)).first->second;
}

}  // namespace

bool bf16_dot_supported() {
  static const bool supported = [] {  // oneDNN's own view (DNNL_MAX_CPU_ISA=AVX2 makes it an AVX2 CPU)
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto bf16 = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return (isa & bf16) == bf16;
  }();
  return supported;
}

bool takes_bf16_compute(const TensorView& w) { return w.dtype == DType::BF16 && w.scale == 1.0f && !w.parts; }

void linear_bf16(std::span<const Tensor* const> xs, const TensorView& w, const TensorView& b, Tensor& y) {
  const int64_t K = w.dim(1), N = w.dim(0), M = y.numel() / N;
  // The inputs side by side ([a | b] for linear_concat), rounded to bf16.
  thread_local std::vector<uint16_t> xb;  // reused: [M, K] bf16 is tens of MB at 1024²
  xb.resize(size_t(M * K));
  int64_t k0 = 0;
  for (const Tensor* x : xs) {
    const int64_t Ki = x->dim(-1);
    const float* src = x->ptr();
    uint16_t* dst = xb.data() + k0;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < Ki; ++k) dst[m * K + k] = f32_to_bf16(src[m * Ki + k]);
    k0 += Ki;
  }
  const Tensor bias = b ? widen(b) : Tensor();
  try {
    const dnnl::matmul& mm = matmul_for(M, N, K, bool(b));
    dnnl::engine& engine = cpu_engine();
    dnnl::stream stream(engine);
    const memory x_mem(memory::desc({M, K}, memory::data_type::bf16, memory::format_tag::ab), engine, xb.data());
    const memory w_mem(memory::desc({K, N}, memory::data_type::bf16, memory::format_tag::ba), engine,
                       const_cast<void*>(w.data));  // read only: oneDNN never writes its weights
    const memory y_mem(memory::desc({M, N}, memory::data_type::f32, memory::format_tag::ab), engine, y.ptr());
    std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}};
    if (b)
      args.emplace(DNNL_ARG_BIAS, memory(memory::desc({1, N}, memory::data_type::f32, memory::format_tag::ab), engine,
                                         const_cast<float*>(bias.ptr())));
    mm.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    throw Error(std::string("linear (bf16 compute): oneDNN refused weight ") + describe(w) + " " + shape_str(w.shape) +
                ": " + e.what());
  }
}

}  // namespace chroma::cpu

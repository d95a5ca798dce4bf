// Reference case e (reference README §5): the mini checkpoints and the run the author's code made
// with them, shared by the pipeline tests that compare against it.
#pragma once
#include "pipeline/pipeline.h"
#include "testdata.h"

namespace chroma::test {

// The four original mini files (bf16-stored weights).
inline pipeline::ModelFiles mini_models() {
  return {reference_path("chroma-mini.safetensors"), reference_path("t5-mini.safetensors"),
          reference_path("ae-mini.safetensors"), tokenizer_path("spiece.model")};
}

// 64×64, 4 steps, cfg 4, default shift, negative "", seed 42 (input.noise = torch.manual_seed(42);
// randn); skip_cfg_steps = the reference's first-n (0 for "firstn0.*", 1 for "firstn1.*").
inline pipeline::GenerationRequest case_e_options(int skip_cfg_steps = 0) {
  pipeline::GenerationRequest o;
  o.prompt = "a red fox sitting in fresh snow, golden hour";
  o.negative_prompt = "";
  o.width = o.height = 64;
  o.steps = 4;
  o.cfg = 4.0f;
  o.skip_cfg_steps = skip_cfg_steps;
  o.seed = 42;
  return o;
}

// One request on a fresh Pipeline over `files`: the image, and the dump when given.
inline pipeline::GeneratedImage generate_one(const pipeline::ModelFiles& files, const pipeline::GenerationRequest& request,
                                             pipeline::Dump* dump = nullptr, bool low_memory = false,
                                             Compute compute = Compute::Auto) {
  pipeline::PipelineConfig config;
  config.files = files;
  config.low_memory = low_memory;
  config.compute = compute;
  pipeline::Pipeline pipeline(config);
  pipeline::RunHooks hooks;
  hooks.dump = dump;
  return std::move(pipeline.generate(request, hooks).images.at(0));
}

}  // namespace chroma::test

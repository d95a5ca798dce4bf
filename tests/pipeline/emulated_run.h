// One request on the CPU backend and on the emulated device (emulated_device.h): the same latent and
// image, bit for bit, or a test failure naming what differs.
#pragma once
#include <gtest/gtest.h>

#include "emulated_device.h"
#include "pipeline/pipeline.h"

namespace chroma::test {

inline void expect_same_run(const pipeline::PipelineConfig& cpu_config, const pipeline::GenerationRequest& r) {
  pipeline::PipelineConfig device_config = cpu_config;
  OffHostMemory device;
  device_config.backend = [&device](Compute compute) {
    return std::make_unique<EmulatedDeviceBackend>(device, compute);
  };
  const pipeline::GeneratedImage want = std::move(pipeline::Pipeline(cpu_config).generate(r).images.at(0));
  const pipeline::GeneratedImage got = std::move(pipeline::Pipeline(device_config).generate(r).images.at(0));
  EXPECT_GT(device.from_host_bytes, 0u) << "nothing ran on the emulated device";
  EXPECT_TRUE(got.latent.on_host() && got.image.on_host()) << "the pipeline returns host tensors";
  EXPECT_EQ(got.latent.to_vector(), want.latent.to_vector()) << "the latent must match the CPU run bit for bit";
  EXPECT_EQ(got.rgb, want.rgb);
  EXPECT_EQ(got.evaluations, want.evaluations);
  EXPECT_EQ(got.skipped_evaluations, want.skipped_evaluations);
}

}  // namespace chroma::test

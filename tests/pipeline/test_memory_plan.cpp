// The memory plan (pipeline/memory_plan.h) and the --low-memory mode (io/residency.h): the estimate's
// weight arithmetic against the mini checkpoints' exact byte sums, the refusal, page release, and a
// low-memory run of case e giving the same latent bit for bit.
#include <filesystem>
#include <map>
#include <numeric>

#include "io/lora.h"
#include "io/residency.h"
#include "io/safetensors.h"
#include "pipeline/memory_plan.h"
#include "pipeline/phase_stats.h"
#include "pipeline/pipeline.h"
#include "case_e.h"
#include "testdata.h"

namespace chroma::pipeline {
namespace {
namespace fs = std::filesystem;

constexpr size_t kMiB = size_t(1) << 20;

// Stored bytes of the tensors of `file` whose names start with `prefix`: element count × dtype size,
// from the header (independent of the plan's own sums).
size_t stored_bytes(const io::SafetensorsFile& file, const std::string& prefix = "") {
  size_t sum = 0;
  for (const auto& [name, v] : file.tensors())
    if (name.starts_with(prefix)) sum += size_t(v.numel()) * dtype_size(v.dtype);
  return sum;
}

// The plan of the case-e run shape on the mini checkpoints.
struct Mini {
  std::unique_ptr<io::SafetensorsFile> t5_file = io::SafetensorsFile::open(test::reference_path("t5-mini.safetensors"));
  std::unique_ptr<io::SafetensorsFile> dit_file =
      io::SafetensorsFile::open(test::reference_path("chroma-mini.safetensors"));
  std::unique_ptr<io::SafetensorsFile> vae_file = io::SafetensorsFile::open(test::reference_path("ae-mini.safetensors"));
  MemoryPlan plan = plan_memory(io::WeightStore::open(t5_file->path()), io::WeightStore::open(dit_file->path()),
                                io::WeightStore::open(vae_file->path()), RunShape{64, 64, {12, 2}});
};

void require_mini() {
  CHROMA_REQUIRE_FILE(test::reference_path("t5-mini.safetensors"));
  CHROMA_REQUIRE_FILE(test::reference_path("chroma-mini.safetensors"));
  CHROMA_REQUIRE_FILE(test::reference_path("ae-mini.safetensors"));
}

TEST(MemoryPlan, WeightBytesAreTheStoredTensorSums) {
  require_mini();
  if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
  const Mini m;
  ASSERT_EQ(m.plan.phases.size(), 3u);
  const PhaseEstimate &text = m.plan.phases[0], &denoise = m.plan.phases[1], &decode = m.plan.phases[2];
  EXPECT_EQ(text.weight_bytes, stored_bytes(*m.t5_file));
  EXPECT_EQ(denoise.weight_bytes, stored_bytes(*m.dit_file));
  EXPECT_EQ(decode.weight_bytes, stored_bytes(*m.vae_file));

  // Streamed: T5 blocks; DiT double and single blocks and the approximator; nothing of the VAE.
  EXPECT_EQ(text.streamed_bytes, stored_bytes(*m.t5_file, "encoder.block."));
  EXPECT_EQ(denoise.streamed_bytes, stored_bytes(*m.dit_file, "double_blocks.") +
                                        stored_bytes(*m.dit_file, "single_blocks.") +
                                        stored_bytes(*m.dit_file, "distilled_guidance_layer."));
  EXPECT_EQ(decode.streamed_bytes, 0u);

  // The largest block: every double block is larger than a single block and (in the mini model) the
  // approximator, and all double blocks have the same size.
  const size_t double0 = stored_bytes(*m.dit_file, "double_blocks.0.");
  EXPECT_EQ(denoise.largest_block_bytes, std::max(double0, stored_bytes(*m.dit_file, "distilled_guidance_layer.")));
  EXPECT_EQ(text.largest_block_bytes, stored_bytes(*m.t5_file, "encoder.block.0."));  // block 0 also has the bias table

  for (const PhaseEstimate& p : m.plan.phases) {
    EXPECT_EQ(p.peak_bytes(false), kBaseBytes + p.weight_bytes + p.activation_bytes) << p.phase;
    EXPECT_EQ(p.peak_bytes(true), kBaseBytes + p.weight_bytes - p.streamed_bytes + p.largest_block_bytes +
                                      p.activation_bytes)
        << p.phase;
    EXPECT_GT(p.activation_bytes, 0u) << p.phase;
  }
  EXPECT_LT(denoise.peak_bytes(true), denoise.peak_bytes(false));
  EXPECT_LE(m.plan.peak_bytes(true), m.plan.peak_bytes(false));
}

TEST(MemoryPlan, ActivationsGrowWithTheImageAndTheText) {
  require_mini();
  if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
  const io::WeightStore t5 = io::WeightStore::open(test::reference_path("t5-mini.safetensors"));
  const io::WeightStore dit = io::WeightStore::open(test::reference_path("chroma-mini.safetensors"));
  const io::WeightStore vae = io::WeightStore::open(test::reference_path("ae-mini.safetensors"));
  const MemoryPlan small = plan_memory(t5, dit, vae, {64, 64, {12}});
  const MemoryPlan large = plan_memory(t5, dit, vae, {128, 128, {12, 2}});
  const MemoryPlan long_text = plan_memory(t5, dit, vae, {64, 64, {300}});
  for (size_t i : {1u, 2u}) EXPECT_GT(large.phases[i].activation_bytes, small.phases[i].activation_bytes);
  EXPECT_GT(large.phases[0].activation_bytes, small.phases[0].activation_bytes);  // both prompts' rows live at once (one T5 pass)
  EXPECT_GT(long_text.phases[0].activation_bytes, small.phases[0].activation_bytes);
  EXPECT_GT(long_text.phases[1].activation_bytes, small.phases[1].activation_bytes);
}

// LoRAs: runtime mode reads the deltas at every step; fuse mode allocates a copy of each adapted
// weight (chroma-mini is bf16: the same bytes), held through every later phase, and then never reads
// the base weights it replaces. Two deltas on one target (two row parts of qkv) are one copy.
TEST(MemoryPlan, LorasAreCountedAsTheyAreApplied) {
  require_mini();
  if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
  const Mini m;
  const io::WeightStore dit = io::WeightStore::open(m.dit_file->path());
  const TensorView& qkv = m.dit_file->get("double_blocks.0.img_attn.qkv.weight");
  const TensorView& linear2 = m.dit_file->get("single_blocks.1.linear2.weight");
  ASSERT_EQ(qkv.dtype, DType::BF16);
  const int64_t r = 4, C = qkv.dim(1);
  std::map<std::string, Tensor> t;
  t["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] = Tensor({r, C});
  t["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"] = Tensor({C, r});
  t["transformer.transformer_blocks.0.attn.to_k.lora_A.weight"] = Tensor({r, C});
  t["transformer.transformer_blocks.0.attn.to_k.lora_B.weight"] = Tensor({C, r});
  t["single_blocks.1.linear2.lora_A.weight"] = Tensor({r, linear2.dim(1)});
  t["single_blocks.1.linear2.lora_B.weight"] = Tensor({linear2.dim(0), r});
  t["single_blocks.99.linear2.lora_A.weight"] = Tensor({r, 8});  // no such block: counts nothing when fused
  t["single_blocks.99.linear2.lora_B.weight"] = Tensor({8, r});
  const std::string path = test::temp_path("memory-plan-lora.safetensors").string();
  std::vector<io::NamedTensor> entries;
  size_t tensor_bytes = 0;
  for (const auto& [name, x] : t) {
    entries.push_back({name, &x});
    tensor_bytes += size_t(x.numel()) * 4;
  }
  io::write_safetensors(path, entries);
  const io::LoraFile lora = io::LoraFile::open(path);
  std::vector<const io::LoraDelta*> deltas;
  for (const io::LoraDelta& d : lora.deltas()) deltas.push_back(&d);
  ASSERT_EQ(deltas.size(), 4u);

  const LoraMemory runtime = lora_memory(dit, deltas, false, true);
  EXPECT_EQ(runtime.adapter_bytes, tensor_bytes);
  EXPECT_EQ(runtime.fused_bytes + runtime.replaced_bytes + runtime.fuse_scratch_bytes, 0u);

  const size_t adapted = size_t(qkv.numel() + linear2.numel()) * 2;
  const LoraMemory fuse = lora_memory(dit, deltas, true, true);
  EXPECT_EQ(fuse.fused_bytes, adapted);
  EXPECT_EQ(fuse.replaced_bytes, adapted);
  EXPECT_EQ(fuse.fuse_scratch_bytes, size_t(std::max(qkv.numel(), linear2.numel())) * 2 * 4);
  EXPECT_EQ(fuse.adapter_bytes, 0u);
  const LoraMemory fused_before = lora_memory(dit, deltas, true, false);  // the same set, already fused
  EXPECT_EQ(fused_before.fused_bytes, 0u);
  EXPECT_EQ(fused_before.replaced_bytes, adapted);

  const io::WeightStore t5 = io::WeightStore::open(m.t5_file->path()), vae = io::WeightStore::open(m.vae_file->path());
  const RunShape shape{64, 64, {12, 2}};
  const MemoryPlan with_runtime = plan_memory(t5, dit, vae, shape, runtime);
  ASSERT_EQ(with_runtime.phases.size(), 3u);
  EXPECT_EQ(with_runtime.phases[1].weight_bytes, m.plan.phases[1].weight_bytes + tensor_bytes);
  const MemoryPlan with_fuse = plan_memory(t5, dit, vae, shape, fuse);
  ASSERT_EQ(with_fuse.phases.size(), 4u);
  EXPECT_EQ(with_fuse.phases[0].phase, "LoRA fusing");
  EXPECT_EQ(with_fuse.phases[0].peak_bytes(false), kBaseBytes + adapted + fuse.fuse_scratch_bytes);
  for (size_t i = 1; i < 4; ++i) {
    EXPECT_EQ(with_fuse.phases[i].held_bytes, adapted) << with_fuse.phases[i].phase;
    const size_t replaced = i == 2 ? adapted : 0;
    EXPECT_EQ(with_fuse.phases[i].peak_bytes(false), m.plan.phases[i - 1].peak_bytes(false) + adapted - replaced)
        << with_fuse.phases[i].phase;
  }
}

// Tiled decoding holds one tile's activations plus the blended image: far less than the whole image
// at 2048², and the tile size is what counts, not the image's.
TEST(MemoryPlan, TiledDecodingNeedsOneTilesActivations) {
  require_mini();
  if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
  const io::WeightStore t5 = io::WeightStore::open(test::reference_path("t5-mini.safetensors"));
  const io::WeightStore dit = io::WeightStore::open(test::reference_path("chroma-mini.safetensors"));
  const io::WeightStore vae = io::WeightStore::open(test::reference_path("ae-mini.safetensors"));
  const size_t whole = plan_memory(t5, dit, vae, {2048, 2048, {12}}).phases[2].activation_bytes;
  const size_t tiled = plan_memory(t5, dit, vae, {2048, 2048, {12}, 64}).phases[2].activation_bytes;
  const size_t tile_alone = plan_memory(t5, dit, vae, {512, 512, {12}}).phases[2].activation_bytes;
  const size_t blend = size_t(2048) * 2048 * (3 + 1) * sizeof(float);  // image + weights
  EXPECT_EQ(tiled, tile_alone + blend);
  EXPECT_LT(tiled * 4, whole);
}

TEST(MemoryPlan, ParsesMemAvailable) {
  EXPECT_EQ(parse_mem_available("MemTotal:       24590000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"),
            size_t(20000000) * 1024);
  EXPECT_EQ(parse_mem_available("MemTotal: 1 kB\n"), 0u);
  EXPECT_GT(available_memory_bytes(), 0u);  // Linux
}

// A plan with one phase, built by hand: 10 GiB of weights of which 9 GiB are in blocks of 1 GiB.
MemoryPlan hand_plan() {
  PhaseEstimate p;
  p.phase = "denoising";
  p.weight_bytes = 10240 * kMiB;
  p.streamed_bytes = 9216 * kMiB;
  p.largest_block_bytes = 1024 * kMiB;
  p.activation_bytes = 512 * kMiB;
  return MemoryPlan{{p}};
}

std::string refusal(const MemoryPlan& plan, bool low_memory, size_t available) {
  try {
    check_memory(plan, low_memory, available);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(MemoryPlan, RefusesWithTheFlagThatWouldFit) {
  const MemoryPlan plan = hand_plan();
  const size_t normal = plan.peak_bytes(false), low = plan.peak_bytes(true);
  ASSERT_EQ(normal, kBaseBytes + (10240 + 512) * kMiB);
  ASSERT_EQ(low, kBaseBytes + (1024 + 1024 + 512) * kMiB);

  EXPECT_EQ(refusal(plan, false, normal), "");  // exactly enough
  EXPECT_EQ(refusal(plan, false, 0), "");       // unknown: no check
  EXPECT_EQ(refusal(plan, true, low), "");

  const std::string msg = refusal(plan, false, normal - 1);
  EXPECT_NE(msg.find("needs about 10.8 GiB"), std::string::npos) << msg;
  EXPECT_NE(msg.find("denoising"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--low-memory needs about 2.8 GiB and would fit"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--no-memory-check"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line";

  // Too little even for --low-memory: no flag is offered as a fix except a smaller image.
  const std::string too_small = refusal(plan, false, low - 1);
  EXPECT_EQ(too_small.find("would fit"), std::string::npos) << too_small;
  EXPECT_NE(too_small.find("smaller --width/--height with --low-memory"), std::string::npos) << too_small;
  const std::string low_refused = refusal(plan, true, low - 1);
  EXPECT_NE(low_refused.find("needs about 2.8 GiB"), std::string::npos) << low_refused;
}

// release_pages drops a mapped tensor's pages from the resident set; the values read afterwards are
// the same (they come back from the file).
TEST(Residency, ReleasedPagesLeaveTheResidentSet) {
  const fs::path path = fs::path(::testing::TempDir()) / "residency.safetensors";
  Tensor big({64, 1024, 1024});  // 256 MiB of float32
  for (size_t i = 0; i < big.values().size(); i += 1024) big.values()[i] = float(i % 251);
  io::write_safetensors(path.string(), {{"blocks.0.w", &big}});
  big = Tensor();  // free it before measuring
  const io::WeightStore store = io::WeightStore::open(path.string());
  const TensorView& w = store.require("blocks.0.w");
  auto checksum = [&] {
    double s = 0;
    const float* p = static_cast<const float*>(w.data);
    for (int64_t i = 0; i < w.numel(); i += 1024) s += p[i];
    return s;
  };
  const double before = checksum();  // touches every page
  const size_t resident = current_rss_bytes();
  io::release_pages(store, "blocks.0.");
  const size_t released = current_rss_bytes();
  EXPECT_GT(resident, released + 200 * kMiB) << "resident " << resident << ", after release " << released;
  EXPECT_EQ(checksum(), before);
  fs::remove(path);
}

TEST(Residency, ActivationViewsAreNotTouched) {
  Tensor t({4, 1024, 1024}, std::vector<float>(4 * 1024 * 1024, 3.0f));
  io::release_pages(view_of(t, "activation"));  // no file: must not drop (zero) anonymous pages
  EXPECT_EQ(t.values().front(), 3.0f);
  EXPECT_EQ(t.values()[t.values().size() / 2], 3.0f);
}

// --low-memory only changes when pages are mapped, never a value: case e gives the same bits.
TEST(LowMemory, CaseEGivesTheSameLatentBitForBit) {
  require_mini();
  if (::testing::Test::IsSkipped() || ::testing::Test::HasFatalFailure()) return;
  const ModelFiles files{test::reference_path("chroma-mini.safetensors"), test::reference_path("t5-mini.safetensors"),
                         test::reference_path("ae-mini.safetensors"), test::tokenizer_path("spiece.model")};
  GenerationRequest o;  // README §5 case e
  o.prompt = "a red fox sitting in fresh snow, golden hour";
  o.width = o.height = 64;
  o.steps = 4;
  o.cfg = 4.0f;
  o.seed = 42;
  const GeneratedImage normal = test::generate_one(files, o);
  const GeneratedImage low = test::generate_one(files, o, nullptr, /*low_memory=*/true);
  ASSERT_EQ(low.latent.shape, normal.latent.shape);
  EXPECT_EQ(low.latent.to_vector(), normal.latent.to_vector());
  EXPECT_EQ(low.image.to_vector(), normal.image.to_vector());
}

}  // namespace
}  // namespace chroma::pipeline

#include "io/name_tables.h"

#include <cctype>
#include <map>

namespace chroma::io {

// chroma-spec.md §1.2 (diffusers `convert_chroma_transformer_checkpoint_to_diffusers`). The original
// packs Q | K | V (and, in single blocks, the MLP input) as row blocks of one matrix; diffusers stores
// each block as its own Linear. Longer patterns come first where one is a prefix of another.
std::span<const NameRule> diffusers_dit_names() {
  static const NameRule kRules[] = {
      {"x_embedder.", "img_in."},
      {"context_embedder.", "txt_in."},
      {"distilled_guidance_layer.in_proj.", "distilled_guidance_layer.in_proj."},
      {"distilled_guidance_layer.out_proj.", "distilled_guidance_layer.out_proj."},
      {"distilled_guidance_layer.layers.{i}.linear_1.", "distilled_guidance_layer.layers.{i}.in_layer."},
      {"distilled_guidance_layer.layers.{i}.linear_2.", "distilled_guidance_layer.layers.{i}.out_layer."},
      {"distilled_guidance_layer.norms.{i}.weight", "distilled_guidance_layer.norms.{i}.scale"},
      // double blocks: image stream
      {"transformer_blocks.{i}.attn.to_q.", "double_blocks.{i}.img_attn.qkv.", 0, 3},
      {"transformer_blocks.{i}.attn.to_k.", "double_blocks.{i}.img_attn.qkv.", 1, 3},
      {"transformer_blocks.{i}.attn.to_v.", "double_blocks.{i}.img_attn.qkv.", 2, 3},
      {"transformer_blocks.{i}.attn.norm_q.weight", "double_blocks.{i}.img_attn.norm.query_norm.scale"},
      {"transformer_blocks.{i}.attn.norm_k.weight", "double_blocks.{i}.img_attn.norm.key_norm.scale"},
      {"transformer_blocks.{i}.attn.to_out.0.", "double_blocks.{i}.img_attn.proj."},
      {"transformer_blocks.{i}.ff.net.0.proj.", "double_blocks.{i}.img_mlp.0."},
      {"transformer_blocks.{i}.ff.net.2.", "double_blocks.{i}.img_mlp.2."},
      // double blocks: text stream
      {"transformer_blocks.{i}.attn.add_q_proj.", "double_blocks.{i}.txt_attn.qkv.", 0, 3},
      {"transformer_blocks.{i}.attn.add_k_proj.", "double_blocks.{i}.txt_attn.qkv.", 1, 3},
      {"transformer_blocks.{i}.attn.add_v_proj.", "double_blocks.{i}.txt_attn.qkv.", 2, 3},
      {"transformer_blocks.{i}.attn.norm_added_q.weight", "double_blocks.{i}.txt_attn.norm.query_norm.scale"},
      {"transformer_blocks.{i}.attn.norm_added_k.weight", "double_blocks.{i}.txt_attn.norm.key_norm.scale"},
      {"transformer_blocks.{i}.attn.to_add_out.", "double_blocks.{i}.txt_attn.proj."},
      {"transformer_blocks.{i}.ff_context.net.0.proj.", "double_blocks.{i}.txt_mlp.0."},
      {"transformer_blocks.{i}.ff_context.net.2.", "double_blocks.{i}.txt_mlp.2."},
      // single blocks: linear1 = Q | K | V | MLP in
      {"single_transformer_blocks.{i}.attn.to_q.", "single_blocks.{i}.linear1.", 0, 4},
      {"single_transformer_blocks.{i}.attn.to_k.", "single_blocks.{i}.linear1.", 1, 4},
      {"single_transformer_blocks.{i}.attn.to_v.", "single_blocks.{i}.linear1.", 2, 4},
      {"single_transformer_blocks.{i}.proj_mlp.", "single_blocks.{i}.linear1.", 3, 4},
      {"single_transformer_blocks.{i}.attn.norm_q.weight", "single_blocks.{i}.norm.query_norm.scale"},
      {"single_transformer_blocks.{i}.attn.norm_k.weight", "single_blocks.{i}.norm.key_norm.scale"},
      {"single_transformer_blocks.{i}.proj_out.", "single_blocks.{i}.linear2."},
      {"proj_out.", "final_layer.linear."},
  };
  return kRules;
}

// chroma-spec.md §1.1: every Linear of the DiT (the Approximator included). No pattern is a prefix of
// another, also with "_" for ".", so the first match is the only one.
std::span<const NameRule> dit_linear_names() {
  static const NameRule kRules[] = {
      {"img_in.", "img_in."},
      {"txt_in.", "txt_in."},
      {"distilled_guidance_layer.in_proj.", "distilled_guidance_layer.in_proj."},
      {"distilled_guidance_layer.layers.{i}.in_layer.", "distilled_guidance_layer.layers.{i}.in_layer."},
      {"distilled_guidance_layer.layers.{i}.out_layer.", "distilled_guidance_layer.layers.{i}.out_layer."},
      {"distilled_guidance_layer.out_proj.", "distilled_guidance_layer.out_proj."},
      {"double_blocks.{i}.img_attn.qkv.", "double_blocks.{i}.img_attn.qkv."},
      {"double_blocks.{i}.img_attn.proj.", "double_blocks.{i}.img_attn.proj."},
      {"double_blocks.{i}.img_mlp.0.", "double_blocks.{i}.img_mlp.0."},
      {"double_blocks.{i}.img_mlp.2.", "double_blocks.{i}.img_mlp.2."},
      {"double_blocks.{i}.txt_attn.qkv.", "double_blocks.{i}.txt_attn.qkv."},
      {"double_blocks.{i}.txt_attn.proj.", "double_blocks.{i}.txt_attn.proj."},
      {"double_blocks.{i}.txt_mlp.0.", "double_blocks.{i}.txt_mlp.0."},
      {"double_blocks.{i}.txt_mlp.2.", "double_blocks.{i}.txt_mlp.2."},
      {"single_blocks.{i}.linear1.", "single_blocks.{i}.linear1."},
      {"single_blocks.{i}.linear2.", "single_blocks.{i}.linear2."},
      {"final_layer.linear.", "final_layer.linear."},
  };
  return kRules;
}

// chroma-spec.md §1.4 (diffusers `convert_ldm_vae_checkpoint`). The mid-block attention projections
// are Linear layers in diffusers and 1×1 convs in BFL; the decoder's up blocks run in reverse order.
std::span<const NameRule> diffusers_vae_names() {
  static const NameRule kRules[] = {
      {"encoder.conv_in.", "encoder.conv_in."},
      {"encoder.down_blocks.{i}.resnets.{j}.conv_shortcut.", "encoder.down.{i}.block.{j}.nin_shortcut."},
      {"encoder.down_blocks.{i}.resnets.{j}.", "encoder.down.{i}.block.{j}."},
      {"encoder.down_blocks.{i}.downsamplers.0.conv.", "encoder.down.{i}.downsample.conv."},
      {"encoder.mid_block.resnets.0.", "encoder.mid.block_1."},
      {"encoder.mid_block.resnets.1.", "encoder.mid.block_2."},
      {"encoder.mid_block.attentions.0.group_norm.", "encoder.mid.attn_1.norm."},
      {"encoder.mid_block.attentions.0.to_q.", "encoder.mid.attn_1.q.", 0, 1, true},
      {"encoder.mid_block.attentions.0.to_k.", "encoder.mid.attn_1.k.", 0, 1, true},
      {"encoder.mid_block.attentions.0.to_v.", "encoder.mid.attn_1.v.", 0, 1, true},
      {"encoder.mid_block.attentions.0.to_out.0.", "encoder.mid.attn_1.proj_out.", 0, 1, true},
      {"encoder.conv_norm_out.", "encoder.norm_out."},
      {"encoder.conv_out.", "encoder.conv_out."},

      {"decoder.conv_in.", "decoder.conv_in."},
      {"decoder.mid_block.resnets.0.", "decoder.mid.block_1."},
      {"decoder.mid_block.resnets.1.", "decoder.mid.block_2."},
      {"decoder.mid_block.attentions.0.group_norm.", "decoder.mid.attn_1.norm."},
      {"decoder.mid_block.attentions.0.to_q.", "decoder.mid.attn_1.q.", 0, 1, true},
      {"decoder.mid_block.attentions.0.to_k.", "decoder.mid.attn_1.k.", 0, 1, true},
      {"decoder.mid_block.attentions.0.to_v.", "decoder.mid.attn_1.v.", 0, 1, true},
      {"decoder.mid_block.attentions.0.to_out.0.", "decoder.mid.attn_1.proj_out.", 0, 1, true},
      {"decoder.up_blocks.{r}.resnets.{j}.conv_shortcut.", "decoder.up.{r}.block.{j}.nin_shortcut."},
      {"decoder.up_blocks.{r}.resnets.{j}.", "decoder.up.{r}.block.{j}."},
      {"decoder.up_blocks.{r}.upsamplers.0.conv.", "decoder.up.{r}.upsample.conv."},
      {"decoder.conv_norm_out.", "decoder.norm_out."},
      {"decoder.conv_out.", "decoder.conv_out."},
  };
  return kRules;
}

namespace {

// Matches `name` against `pattern`, capturing the placeholders; returns the unmatched rest or nullopt.
std::optional<std::string> match(const std::string& pattern, const std::string& name, char separator,
                                 std::map<char, int>* captures) {
  size_t p = 0, n = 0;
  while (p < pattern.size()) {
    if (pattern[p] == '{') {
      const char key = pattern[p + 1];
      size_t digits = 0;
      while (n + digits < name.size() && std::isdigit(static_cast<unsigned char>(name[n + digits]))) ++digits;
      if (digits == 0 || digits > 6) return std::nullopt;
      (*captures)[key] = std::stoi(name.substr(n, digits));
      n += digits;
      p += 3;  // "{x}"
    } else {
      if (n >= name.size()) return std::nullopt;
      if (name[n] != pattern[p] && !(pattern[p] == '.' && name[n] == separator)) return std::nullopt;
      ++p, ++n;
    }
  }
  const bool prefix = !pattern.empty() && pattern.back() == '.';
  if (!prefix && n != name.size()) return std::nullopt;
  return name.substr(n);
}

}  // namespace

std::optional<MappedName> map_name(std::span<const NameRule> table, const std::string& stored, int reverse_count,
                                   char separator) {
  for (const NameRule& rule : table) {
    std::map<char, int> captures;
    const std::optional<std::string> rest = match(rule.stored, stored, separator, &captures);
    if (!rest) continue;
    MappedName m;
    m.part = rule.part;
    m.parts = rule.parts;
    m.conv1x1 = rule.conv1x1;
    for (const char* o = rule.original; *o; ++o) {
      if (*o == '{') {
        const char key = o[1];
        const int v = captures.at(key);
        m.original += std::to_string(key == 'r' ? reverse_count - 1 - v : v);
        o += 2;
      } else {
        m.original += *o;
      }
    }
    m.original += *rest;
    m.rest = *rest;
    return m;
  }
  return std::nullopt;
}

}  // namespace chroma::io

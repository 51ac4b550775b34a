"""Components stored in their original (non-diffusers) layouts, as single-file checkpoints hold them.

An `OriginalPart` says, for one kind of component, (1) how its diffusers / transformers config is read
off the tensor shapes, starting from a base config (the real model's, shipped in `configs/`) for what
shapes cannot tell (attention heads, activations, scaling factors), and (2) how its tensors are renamed
to the model's own names. Names passed in are relative to the part's prefix in the file.

Heads are not in any tensor: a base config whose `attention_head_dim` is one int keeps that many heads
in every U-Net block (SD 1.x); a list keeps the base's channels per head (SD 2.x, SDXL: 64). CLIP, SD3
keep the base's width per head; Flux reads it off its q/k norms; T5 off its relative-position table.
The conversions are diffusers' own (`diffusers.loaders.single_file_utils`) except Flux's, whose diffusers
version assumes FLUX.1's widths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Shapes = Mapping[str, tuple[int, ...]]
Tensors = dict[str, torch.Tensor]


def count(shapes: Shapes, prefix: str) -> int:
    """How many numbered children `prefix` has (`input_blocks.` -> 12); they must be 0..n-1."""
    found = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes if k.startswith(prefix)
             and k[len(prefix):].split(".", 1)[0].isdigit()}
    if found != set(range(len(found))):
        raise ValueError(f"{prefix}N are not numbered 0..{len(found) - 1}: {sorted(found)}")
    return len(found)


@dataclass(frozen=True)
class OriginalPart:
    """Base: `class_name` in `library` ("diffusers" or "transformers")."""

    library: str
    class_name: str

    def model_class(self) -> Any:
        import diffusers
        import transformers

        return getattr(diffusers if self.library == "diffusers" else transformers, self.class_name)

    def build(self, config: Mapping[str, Any]) -> nn.Module:
        cls = self.model_class()
        if self.library == "diffusers":
            return cls.from_config(dict(config))
        return cls(cls.config_class.from_dict(dict(config)))

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        raise NotImplementedError

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        raise NotImplementedError


def _unet_heads(base: Mapping[str, Any], channels: list[int]) -> int | list[int]:
    heads = base["attention_head_dim"]
    if isinstance(heads, int):
        return heads
    width = base["block_out_channels"][0] // heads[0]
    return [max(1, c // width) for c in channels]


class LDMUNet(OriginalPart):
    """The LDM U-Net (`input_blocks`, `middle_block`, `output_blocks`) of SD 1.x/2.x and SDXL."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        blocks = count(shapes, "input_blocks.")
        downsamples = sum(f"input_blocks.{i}.0.op.weight" in shapes for i in range(blocks))
        levels = downsamples + 1
        per_level, rest = divmod(blocks - 1 - downsamples, levels)
        if rest or per_level < 1:
            raise ValueError(f"{blocks} input_blocks with {downsamples} downsamples do not form a U-Net")
        firsts = [1 + level * (per_level + 1) for level in range(levels)]
        channels = [shapes[f"input_blocks.{i}.0.out_layers.3.weight"][0] for i in firsts]
        attention = [f"input_blocks.{i}.1.proj_in.weight" in shapes for i in firsts]
        depth = [count(shapes, f"input_blocks.{i}.1.transformer_blocks.") if a else 1
                 for i, a in zip(firsts, attention, strict=True)]
        config = dict(base, in_channels=shapes["input_blocks.0.0.weight"][1], out_channels=shapes["out.2.weight"][0],
                      block_out_channels=channels, layers_per_block=per_level,
                      down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
                      up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
                      transformer_layers_per_block=depth[0] if len(set(depth)) == 1 else depth,
                      attention_head_dim=_unet_heads(base, channels))
        if any(attention):
            first = firsts[attention.index(True)]
            config["cross_attention_dim"] = shapes[f"input_blocks.{first}.1.transformer_blocks.0.attn2.to_k.weight"][1]
            config["use_linear_projection"] = len(shapes[f"input_blocks.{first}.1.proj_in.weight"]) == 2
        if "label_emb.0.0.weight" in shapes:  # SDXL: time_ids (6 sinusoids) + pooled text -> the time embedding
            adm = shapes["label_emb.0.0.weight"][1]
            pooled = context.get("conditioner.embedders.1.model.text_projection")
            time_dim = (adm - pooled[1]) // 6 if pooled else base.get("addition_time_embed_dim")
            config.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=adm,
                          addition_time_embed_dim=time_dim)
        else:
            config.update(addition_embed_type=None, projection_class_embeddings_input_dim=None)
        return config

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint

        return convert_ldm_unet_checkpoint({LDM_UNET_KEY + k: v for k, v in tensors.items()}, dict(model.config))


class LDMVAE(OriginalPart):
    """The LDM autoencoder (`encoder.down.N.block.M`, `decoder.up.N`, `mid.attn_1`, quant convs optional)."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        levels = count(shapes, "encoder.down.")
        return dict(base, in_channels=shapes["encoder.conv_in.weight"][1],
                    out_channels=shapes["decoder.conv_out.weight"][0],
                    block_out_channels=[shapes[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(levels)],
                    down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                    layers_per_block=count(shapes, "encoder.down.0.block."),
                    latent_channels=shapes["decoder.conv_in.weight"][1],
                    use_quant_conv="quant_conv.weight" in shapes,
                    use_post_quant_conv="post_quant_conv.weight" in shapes,
                    mid_block_add_attention="encoder.mid.attn_1.q.weight" in shapes)

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        return convert_ldm_vae_checkpoint(dict(tensors), dict(model.config))


def _head_width(base: Mapping[str, Any], hidden: str = "hidden_size", heads: str = "num_attention_heads") -> int:
    return base[hidden] // base[heads]


def _fit_text_model(state: Tensors, model: nn.Module) -> Tensors:
    """Names as this transformers version has them: CLIPTextModel dropped its `text_model.` level (5.x)."""
    wanted = set(model.state_dict())
    if not any(k.startswith("text_model.") for k in wanted):
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k in wanted or not k.endswith(("position_ids", "text_projection.weight"))}


def _under_text_model(names: Mapping[str, Any]) -> dict[str, Any]:
    """Old files (and transformers 5's CLIPTextModel) lack the `text_model.` level; put it back."""
    return {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in names.items()}


class HFCLIP(OriginalPart):
    """A transformers CLIP text model saved under a prefix (`text_model.*`, optional `text_projection`).
    A model with a projection whose file has none (SD3's CLIP-L) gets the identity, as SD3 used it."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        shapes = _under_text_model(shapes)
        vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
        projection = shapes.get("text_projection.weight", (hidden,))[0]
        return dict(base, vocab_size=vocab, hidden_size=hidden, projection_dim=projection,
                    max_position_embeddings=shapes["text_model.embeddings.position_embedding.weight"][0],
                    num_hidden_layers=count(shapes, "text_model.encoder.layers."),
                    intermediate_size=shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0],
                    num_attention_heads=max(1, hidden // _head_width(base)))

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        state = _under_text_model(tensors)
        if hasattr(model, "text_projection") and "text_projection.weight" not in state:
            embedding = state["text_model.embeddings.token_embedding.weight"]
            state["text_projection.weight"] = torch.eye(embedding.shape[1], dtype=embedding.dtype)
        return _fit_text_model(state, model)


@dataclass(frozen=True)
class OpenCLIP(OriginalPart):
    """An open_clip text tower (`transformer.resblocks`, fused `in_proj`, `text_projection` as x @ P).
    SD 2.x reads its penultimate layer, so `drop_last` leaves the last block (and the projection) out."""

    drop_last: bool = False

    def _kept(self, shapes: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.drop_last:
            return shapes
        last = f"transformer.resblocks.{count(shapes, 'transformer.resblocks.') - 1}."
        return {k: v for k, v in shapes.items() if not k.startswith(last) and k != "text_projection"}

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        shapes = self._kept(shapes)
        vocab, hidden = shapes["token_embedding.weight"]
        config = dict(base, vocab_size=vocab, hidden_size=hidden,
                      max_position_embeddings=shapes["positional_embedding"][0],
                      num_hidden_layers=count(shapes, "transformer.resblocks."),
                      intermediate_size=shapes["transformer.resblocks.0.mlp.c_fc.weight"][0],
                      num_attention_heads=max(1, hidden // _head_width(base)))
        if "text_projection" in shapes:
            config["projection_dim"] = shapes["text_projection"][1]
        return config

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

        return _fit_text_model(convert_open_clip_checkpoint(model, dict(self._kept(tensors)), prefix=""), model)


class T5Encoder(OriginalPart):
    """A transformers T5 encoder saved under a prefix (`shared`, `encoder.block.N.layer.M`); gated GELU
    feed-forward (T5 v1.1, as SD3 and Flux use) when it has `wi_0` / `wi_1`, ReLU otherwise."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        vocab, d_model = shapes["shared.weight"]
        buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
        gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
        d_ff = shapes[f"encoder.block.0.layer.1.DenseReluDense.{'wi_0' if gated else 'wi'}.weight"][0]
        config = dict(base, vocab_size=vocab, d_model=d_model, num_heads=heads, relative_attention_num_buckets=buckets,
                      d_kv=shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads, d_ff=d_ff,
                      num_layers=count(shapes, "encoder.block."))
        if gated != str(base.get("feed_forward_proj", "relu")).startswith("gated"):
            config.update(feed_forward_proj="gated-gelu" if gated else "relu",
                          dense_act_fn="gelu_new" if gated else "relu", is_gated_act=gated)
        return config

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        state = dict(tensors)
        state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])
        return state


class MMDiT(OriginalPart):
    """SD3 / SD3.5's MM-DiT (`joint_blocks`, `x_embedder`, `context_embedder`, `y_embedder`, `final_layer`)."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        hidden, channels, patch, _ = shapes["x_embedder.proj.weight"]
        return dict(base, in_channels=channels, patch_size=patch, num_layers=count(shapes, "joint_blocks."),
                    num_attention_heads=max(1, hidden // base["attention_head_dim"]),
                    caption_projection_dim=shapes["context_embedder.weight"][0],
                    joint_attention_dim=shapes["context_embedder.weight"][1],
                    pooled_projection_dim=shapes["y_embedder.mlp.0.weight"][1],
                    pos_embed_max_size=math.isqrt(shapes["pos_embed"][1]),
                    out_channels=shapes["final_layer.linear.weight"][0] // (patch * patch),
                    qk_norm="rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in shapes else None,
                    dual_attention_layers=[i for i in range(count(shapes, "joint_blocks."))
                                           if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes])

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

        return convert_sd3_transformer_checkpoint_to_diffusers(dict(tensors))


FLUX_RENAMES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder", "img_in": "x_embedder", "final_layer.linear": "proj_out",
}
FLUX_DOUBLE = {
    "img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear",
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
    "img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k",
}
FLUX_SINGLE = {"modulation.lin": "norm.linear", "linear2": "proj_out", "norm.query_norm": "attn.norm_q",
               "norm.key_norm": "attn.norm_k"}
FLUX_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
              "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def _renamed(name: str, table: Mapping[str, str]) -> str | None:
    """`table` maps module paths; a tensor is `<module>.weight|bias|scale` (norm scales become weights)."""
    module, leaf = name.rsplit(".", 1)
    return f"{table[module]}.{'weight' if leaf == 'scale' else leaf}" if module in table else None


class FluxDiT(OriginalPart):
    """FLUX.1's transformer (`double_blocks`, `single_blocks`, `img_in`, `txt_in`, `guidance_in` for dev).
    Its fused projections are split at the model's own width: qkv in three, a single block's linear1 into
    q, k, v and the MLP; the final modulation stores (shift, scale), diffusers' (scale, shift)."""

    def config(self, shapes: Shapes, base: Mapping[str, Any], context: Shapes) -> dict[str, Any]:
        inner, channels = shapes["img_in.weight"]
        head = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
        out = shapes["final_layer.linear.weight"][0]
        return dict(base, in_channels=channels, out_channels=None if out == channels else out,
                    num_layers=count(shapes, "double_blocks."), num_single_layers=count(shapes, "single_blocks."),
                    attention_head_dim=head, num_attention_heads=inner // head,
                    joint_attention_dim=shapes["txt_in.weight"][1],
                    pooled_projection_dim=shapes["vector_in.in_layer.weight"][1],
                    guidance_embeds="guidance_in.in_layer.weight" in shapes)

    def convert(self, tensors: Tensors, model: nn.Module) -> Tensors:
        inner = tensors["img_in.weight"].shape[0]
        state: Tensors = {}
        for name, value in tensors.items():
            kind, _, rest = name.partition(".")
            index, _, inside = rest.partition(".")
            module, leaf = name.rsplit(".", 1)
            if kind == "double_blocks" and inside.rsplit(".", 1)[0] in FLUX_FUSED:
                targets = FLUX_FUSED[inside.rsplit(".", 1)[0]]
                for target, part in zip(targets, value.chunk(3), strict=True):
                    state[f"transformer_blocks.{index}.{target}.{leaf}"] = part
            elif kind == "double_blocks" and _renamed(inside, FLUX_DOUBLE):
                state[f"transformer_blocks.{index}.{_renamed(inside, FLUX_DOUBLE)}"] = value
            elif kind == "single_blocks" and inside.startswith("linear1."):
                parts = value.split([inner, inner, inner, value.shape[0] - 3 * inner])
                for target, part in zip(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), parts, strict=True):
                    state[f"single_transformer_blocks.{index}.{target}.{leaf}"] = part
            elif kind == "single_blocks" and _renamed(inside, FLUX_SINGLE):
                state[f"single_transformer_blocks.{index}.{_renamed(inside, FLUX_SINGLE)}"] = value
            elif module == "final_layer.adaLN_modulation.1":
                shift, scale = value.chunk(2)
                state[f"norm_out.linear.{leaf}"] = torch.cat([scale, shift])
            elif _renamed(name, FLUX_RENAMES):
                state[_renamed(name, FLUX_RENAMES)] = value
            else:
                raise KeyError(f"unexpected Flux tensor {name!r}")
        return state


LDM_UNET = LDMUNet("diffusers", "UNet2DConditionModel")
LDM_VAE = LDMVAE("diffusers", "AutoencoderKL")
CLIP_TEXT = HFCLIP("transformers", "CLIPTextModel")
CLIP_TEXT_PROJECTED = HFCLIP("transformers", "CLIPTextModelWithProjection")
OPEN_CLIP_PENULTIMATE = OpenCLIP("transformers", "CLIPTextModel", drop_last=True)
OPEN_CLIP_PROJECTED = OpenCLIP("transformers", "CLIPTextModelWithProjection")
T5_ENCODER = T5Encoder("transformers", "T5EncoderModel")
SD3_MMDIT = MMDiT("diffusers", "SD3Transformer2DModel")
FLUX_DIT = FluxDiT("diffusers", "FluxTransformer2DModel")

"""Test helper: diffusers / transformers weights written back in the original single-file layouts.

Each `*_original(state, ...)` maps a model's state dict to the names (and fused or reshaped tensors) of the
original checkpoints: the LDM U-Net and VAE, open_clip's text tower, SD3's MM-DiT, FLUX.1's transformer;
CLIP and T5 keep transformers' names under a prefix. `check_inverse` proves each mapping is the exact
inverse of the forward conversion nodegraph loads with, so single files written here are faithful.
`write_single_file` writes a tiny diffusers pipeline folder as one original-layout .safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

Tensors = dict[str, torch.Tensor]

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
            "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _resnet(rest: list[str]) -> str:
    return ".".join([RESNET[rest[0]], *rest[1:]])


def unet_original(state: Tensors, layers_per_block: int) -> Tensors:
    """UNet2DConditionModel -> input_blocks / middle_block / output_blocks (resnet .0, transformer .1)."""
    step = layers_per_block + 1
    attended = {int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in state.items():
        module, leaf = key.rsplit(".", 1)
        p = key.split(".")
        if module in UNET_TOP:
            name = f"{UNET_TOP[module]}.{leaf}"
        elif p[0] == "down_blocks" and p[2] == "downsamplers":
            name = f"input_blocks.{(int(p[1]) + 1) * step}.0.op.{leaf}"
        elif p[0] == "down_blocks":
            block = 1 + int(p[1]) * step + int(p[3])
            name = f"input_blocks.{block}.0.{_resnet(p[4:])}" if p[2] == "resnets" else \
                f"input_blocks.{block}.1.{'.'.join(p[4:])}"
        elif p[0] == "mid_block":
            name = f"middle_block.{2 * int(p[2])}.{_resnet(p[3:])}" if p[1] == "resnets" else \
                f"middle_block.1.{'.'.join(p[3:])}"
        elif p[0] == "up_blocks" and p[2] == "upsamplers":
            b = int(p[1])
            name = f"output_blocks.{b * step + layers_per_block}.{2 if b in attended else 1}.conv.{leaf}"
        elif p[0] == "up_blocks":
            block = int(p[1]) * step + int(p[3])
            name = f"output_blocks.{block}.0.{_resnet(p[4:])}" if p[2] == "resnets" else \
                f"output_blocks.{block}.1.{'.'.join(p[4:])}"
        else:
            raise KeyError(key)
        out[name] = value
    return out


VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_original(state: Tensors, levels: int) -> Tensors:
    """AutoencoderKL -> encoder.down.N.block.M / decoder.up.(levels-1-N) / mid.block_K / mid.attn_1 (1x1 convs)."""
    out = {}
    for key, value in state.items():
        coder, _, rest = key.partition(".")
        if coder not in ("encoder", "decoder"):
            out[key] = value  # quant_conv, post_quant_conv
            continue
        p = rest.split(".")
        if p[0] in ("conv_in", "conv_out"):
            name = rest
        elif p[0] == "conv_norm_out":
            name = "norm_out." + p[1]
        elif p[0] in ("down_blocks", "up_blocks"):
            level = int(p[1]) if p[0] == "down_blocks" else levels - 1 - int(p[1])
            side = "down" if p[0] == "down_blocks" else "up"
            if p[2] == "resnets":
                name = f"{side}.{level}.block.{p[3]}.{'.'.join(p[4:])}".replace("conv_shortcut", "nin_shortcut")
            else:
                name = f"{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.conv.{p[-1]}"
        elif p[1] == "resnets":
            name = f"mid.block_{int(p[2]) + 1}.{'.'.join(p[3:])}"
        else:
            module, leaf = ".".join(p[3:]).rsplit(".", 1)
            name = f"mid.attn_1.{VAE_ATTENTION[module]}.{leaf}"
            if module != "group_norm" and leaf == "weight":
                value = value[:, :, None, None]
        out[f"{coder}.{name}"] = value
    return out


def clip_original(state: Tensors) -> Tensors:
    """transformers CLIP keeps its names, always with the `text_model.` level the original files have."""
    return {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
            for k, v in state.items()}


OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}


def open_clip_original(state: Tensors) -> Tensors:
    """CLIPTextModelWithProjection -> open_clip: resblocks with fused in_proj, text_projection as x @ P."""
    state = clip_original(state)
    out = {"token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": state["text_model.final_layer_norm.weight"],
           "ln_final.bias": state["text_model.final_layer_norm.bias"],
           "text_projection": state["text_projection.weight"].T.contiguous()}
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        inside = f"text_model.encoder.layers.{i}."
        for leaf in ("weight", "bias"):
            out[f"transformer.resblocks.{i}.attn.in_proj_{leaf}"] = torch.cat(
                [state[f"{inside}self_attn.{x}_proj.{leaf}"] for x in "qkv"])
            for ours, theirs in OPEN_CLIP.items():
                out[f"transformer.resblocks.{i}.{theirs}.{leaf}"] = state[f"{inside}{ours}.{leaf}"]
    return out


def t5_original(state: Tensors) -> Tensors:
    """T5 keeps its names; the tied input embedding is stored once, as `shared`."""
    return {k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}


def _swap_halves(value: torch.Tensor) -> torch.Tensor:
    first, second = value.chunk(2)
    return torch.cat([second, first])


def _fused(state: Tensors, out: Tensors, groups: dict[str, tuple[str, ...]]) -> None:
    for target, sources in groups.items():
        for leaf in ("weight", "bias"):
            if f"{sources[0]}.{leaf}" in state:
                out[f"{target}.{leaf}"] = torch.cat([state[f"{s}.{leaf}"] for s in sources])


def _renamed(state: Tensors, out: Tensors, table: dict[str, str]) -> None:
    for ours, theirs in table.items():
        for leaf in ("weight", "bias"):
            if f"{ours}.{leaf}" in state:
                out[f"{theirs}.{leaf}"] = state[f"{ours}.{leaf}"]


def sd3_original(state: Tensors) -> Tensors:
    """SD3Transformer2DModel -> joint_blocks (fused qkv; adaLN (shift, scale) where diffusers has (scale, shift))."""
    out = {"pos_embed": state["pos_embed.pos_embed"]}
    _renamed(state, out, {"pos_embed.proj": "x_embedder.proj", "context_embedder": "context_embedder",
                          "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
                          "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
                          "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
                          "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
                          "proj_out": "final_layer.linear"})
    layers = len({k.split(".")[1] for k in state if k.startswith("transformer_blocks.")})
    for i in range(layers):
        d, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        x, c = o + "x_block.", o + "context_block."
        _fused(state, out, {x + "attn.qkv": (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"),
                            c + "attn.qkv": (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"),
                            x + "attn2.qkv": (d + "attn2.to_q", d + "attn2.to_k", d + "attn2.to_v")})
        _renamed(state, out, {d + "attn.norm_q": x + "attn.ln_q", d + "attn.norm_k": x + "attn.ln_k",
                              d + "attn.norm_added_q": c + "attn.ln_q", d + "attn.norm_added_k": c + "attn.ln_k",
                              d + "attn2.norm_q": x + "attn2.ln_q", d + "attn2.norm_k": x + "attn2.ln_k",
                              d + "attn.to_out.0": x + "attn.proj", d + "attn.to_add_out": c + "attn.proj",
                              d + "attn2.to_out.0": x + "attn2.proj", d + "norm1.linear": x + "adaLN_modulation.1",
                              d + "norm1_context.linear": c + "adaLN_modulation.1",
                              d + "ff.net.0.proj": x + "mlp.fc1", d + "ff.net.2": x + "mlp.fc2",
                              d + "ff_context.net.0.proj": c + "mlp.fc1", d + "ff_context.net.2": c + "mlp.fc2"})
        if i == layers - 1:  # the last context block only modulates (context_pre_only): stored swapped
            for leaf in ("weight", "bias"):
                out[f"{c}adaLN_modulation.1.{leaf}"] = _swap_halves(out[f"{c}adaLN_modulation.1.{leaf}"])
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap_halves(state[f"norm_out.linear.{leaf}"])
    return out


def flux_original(state: Tensors) -> Tensors:
    """FluxTransformer2DModel -> double_blocks / single_blocks (fused qkv, linear1 = q, k, v, MLP)."""
    from nodes.families.original_parts import FLUX_DOUBLE, FLUX_RENAMES, FLUX_SINGLE

    def norm_scales(table: dict[str, str]) -> dict[str, str]:
        """diffusers module -> original module, q/k norms as their `.scale` tensor."""
        return {ours: theirs + (".scale" if theirs.endswith("_norm") else "") for theirs, ours in table.items()}

    out: Tensors = {}
    _renamed(state, out, {theirs: ours for ours, theirs in FLUX_RENAMES.items()})
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = _swap_halves(state[f"norm_out.linear.{leaf}"])
    for i in range(len({k.split(".")[1] for k in state if k.startswith("transformer_blocks.")})):
        d, o = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        _fused(state, out, {o + "img_attn.qkv": (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"),
                            o + "txt_attn.qkv": (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj")})
        _norms_and_rest(state, out, d, o, norm_scales(FLUX_DOUBLE))
    for i in range(len({k.split(".")[1] for k in state if k.startswith("single_transformer_blocks.")})):
        d, o = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        _fused(state, out, {o + "linear1": (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v", d + "proj_mlp")})
        _norms_and_rest(state, out, d, o, norm_scales(FLUX_SINGLE))
    return out


def _norms_and_rest(state: Tensors, out: Tensors, ours: str, theirs: str, table: dict[str, str]) -> None:
    """Flux's q/k norms are RMSNorm `.scale`s (diffusers: `.weight`); the rest are weight + bias pairs."""
    for module, target in table.items():
        if target.endswith(".scale"):
            out[f"{theirs}{target}"] = state[f"{ours}{module}.weight"]
        else:
            _renamed(state, out, {f"{ours}{module}": f"{theirs}{target}"})


def check_inverse(layout, original: Tensors, model: torch.nn.Module) -> None:
    """Converting `original` forward with nodegraph's conversion gives `model`'s state dict exactly."""
    state = model.state_dict()
    back = layout.convert({k: v.clone() for k, v in original.items()}, model)
    back = {k: v for k, v in back.items() if k in state or not k.endswith("position_ids")}
    assert set(back) == set(state), (sorted(set(back) - set(state))[:5], sorted(set(state) - set(back))[:5])
    for name, value in state.items():
        assert torch.equal(back[name], value), name


def load_folder_part(folder: Path, part: str) -> torch.nn.Module:
    """One component of a diffusers pipeline folder, by its model_index entry."""
    import importlib

    library, class_name = json.loads((folder / "model_index.json").read_text())[part]
    cls = getattr(importlib.import_module(library), class_name)
    return cls.from_pretrained(folder / part, local_files_only=True).eval()


def original_parts(folder: Path, family: str) -> dict[str, tuple[str, object, Tensors]]:
    """part -> (prefix in the single file, nodegraph's layout, original-layout tensors) for a tiny folder."""
    from nodes.families import original_parts as o

    def part(name: str) -> torch.nn.Module:
        return load_folder_part(folder, name)

    unet = "model.diffusion_model."
    if family in ("sd", "sdxl"):
        model = part("unet")
        found = {"unet": (unet, o.LDM_UNET, unet_original(model.state_dict(), model.config.layers_per_block))}
    elif family == "sd3":
        found = {"transformer": (unet, o.SD3_MMDIT, sd3_original(part("transformer").state_dict()))}
    else:
        found = {"transformer": (unet, o.FLUX_DIT, flux_original(part("transformer").state_dict()))}
    vae = part("vae")
    found["vae"] = ("first_stage_model.", o.LDM_VAE, vae_original(vae.state_dict(), len(vae.config.block_out_channels)))
    if family == "sd":
        found["text_encoder"] = ("cond_stage_model.transformer.", o.CLIP_TEXT,
                                 clip_original(part("text_encoder").state_dict()))
    elif family == "sdxl":
        found["text_encoder"] = ("conditioner.embedders.0.transformer.", o.CLIP_TEXT,
                                 clip_original(part("text_encoder").state_dict()))
        found["text_encoder_2"] = ("conditioner.embedders.1.model.", o.OPEN_CLIP_PROJECTED,
                                   open_clip_original(part("text_encoder_2").state_dict()))
    elif family == "sd3":
        for name, key in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
            found[name] = (f"text_encoders.{key}.transformer.", o.CLIP_TEXT_PROJECTED,
                           clip_original(part(name).state_dict()))
        found["text_encoder_3"] = ("text_encoders.t5xxl.transformer.", o.T5_ENCODER,
                                   t5_original(part("text_encoder_3").state_dict()))
    else:
        found["text_encoder"] = ("text_encoders.clip_l.transformer.", o.CLIP_TEXT,
                                 clip_original(part("text_encoder").state_dict()))
        found["text_encoder_2"] = ("text_encoders.t5xxl.transformer.", o.T5_ENCODER,
                                   t5_original(part("text_encoder_2").state_dict()))
    return found


def write_single_file(folder: Path, family: str, file: Path, parts: tuple[str, ...] | None = None,
                      extra: Tensors | None = None, bare: bool = False) -> Path:
    """The tiny pipeline in `folder` as one original-layout .safetensors (only `parts` when given; `bare`:
    without prefixes, as FLUX.1's transformer and VAE are released)."""
    tensors: Tensors = dict(extra or {})
    for name, (prefix, _layout, original) in original_parts(folder, family).items():
        if parts is None or name in parts:
            tensors.update({("" if bare else prefix) + k: v.contiguous() for k, v in original.items()})
    save_file(tensors, str(file))
    return file

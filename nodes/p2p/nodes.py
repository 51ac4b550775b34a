"""Prompt-to-prompt nodes: the edit field, the source/target batch, and per-token attention maps."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from pydantic import Field

from nodegraph import JSON, Choice, Context, Widget, node
from nodes.annotations import GuidanceScale
from nodes.annotations import Unit as Fraction
from nodes.image_io import pil_to_tensor, tensor_to_pil
from nodes.sockets import IMAGE, MODEL_FIELD, SOLVER, TENSOR, TEXT_ENCODER, TIME_GRID, VECTOR_FIELD

from .edit import (
    LocalBlend,
    MapRecordingField,
    PromptToPromptField,
    build_plan,
    encode_with_null,
    parse_words,
    require_cross_attention,
)


@node("core/p2p_edit", category="attention editing", display_name="Prompt-to-prompt edit")
def p2p_edit(field: MODEL_FIELD, encoder: TEXT_ENCODER, source_prompt: str = "a red circle",
             target_prompt: str = "a red square", edit: Literal["replace", "refine", "reweight"] = "replace",
             guidance: GuidanceScale = 4.0, cross_replace_steps: Fraction = 0.8,
             self_replace_steps: Fraction = 0.4,
             self_replace_max_tokens: Annotated[int, Field(ge=0, le=65536)] = 64,
             word_windows: JSON = {},  # noqa: B006 - JSON widget default, never mutated
             reweight_words: str = "", reweight_scale: Annotated[float, Field(ge=-10, le=10)] = 2.0,
             blend_words: str = "", blend_start: Fraction = 0.2, blend_threshold: Fraction = 0.3) -> VECTOR_FIELD:
    """Edit an image by editing its prompt (Hertz et al. 2022). Feed the solver x = [noise; noise]
    (core/p2p_pair): the first half is generated from the source prompt, the second from the target,
    whose cross-attention is taken from the source for t < cross_replace_steps (word_windows sets a
    window per target word), self-attention for t < self_replace_steps at layers with at most
    self_replace_max_tokens positions. replace: word swap (same number of words); refine: words
    added (global token alignment); reweight: scale the attention of reweight_words by
    reweight_scale (also on top of the other edits). blend_words: only where those words attend may
    the target differ from the source (local blend, from t = blend_start). Works on our text-conditioned
    backbones and on SD 1.x/2.x and SDXL U-Nets (core/load_pipeline; there set self_replace_max_tokens to
    256 for 512 px, the paper's 16x16)."""
    if not isinstance(word_windows, dict) or not all(isinstance(v, (int, float)) for v in word_windows.values()):
        raise ValueError("word_windows must map words to fractions, e.g. {\"square\": 0.5}")
    require_cross_attention(field.backbone)
    target_prompt = target_prompt or source_prompt
    (source_cond, target_cond), null = encode_with_null(encoder, [source_prompt, target_prompt])
    length = null.tokens.shape[1]
    source, target = (encoder.prompt_tokens(p, length) for p in (source_prompt, target_prompt))
    reweight = {w: reweight_scale for w in parse_words(reweight_words)}
    if edit == "reweight" and not reweight:
        raise ValueError("edit 'reweight' needs reweight_words")
    kind = "refine" if edit == "reweight" else edit
    plan = build_plan(source, target, kind, cross_replace_steps, self_replace_steps, self_replace_max_tokens,
                      {k.lower(): float(v) for k, v in word_windows.items()}, reweight)
    blend = None
    if blend_words.strip():
        wanted = parse_words(blend_words)
        blend = LocalBlend(source.positions(wanted), target.positions(wanted), blend_start, blend_threshold)
        if not blend.source_positions and not blend.target_positions:
            raise ValueError(f"blend words {sorted(wanted)} occur in neither prompt")
    return PromptToPromptField(field, source_cond, target_cond, null, guidance, plan, blend)


@node("core/p2p_pair", category="attention editing", display_name="Source/target noise pair")
def p2p_pair(noise: TENSOR) -> TENSOR:
    """[noise; noise]: the same starting noise for the source and the edited target."""
    return torch.cat([noise, noise])


def _heat(values: torch.Tensor) -> torch.Tensor:
    """(H, W) in [0, 1] to an RGB heat map (black - red - yellow - white)."""
    return torch.stack([(values * 3).clamp(0, 1), (values * 3 - 1).clamp(0, 1), (values * 3 - 2).clamp(0, 1)])


def render_token_maps(maps: torch.Tensor, labels: list[str], tile: int = 64) -> torch.Tensor:
    """(T, H, W) maps (each scaled to its own max) as a row of labelled tiles: (1, 3, H', W')."""
    tiles = []
    for values, label in zip(maps, labels, strict=True):
        values = values / values.max().clamp_min(1e-12)
        big = F.interpolate(values[None, None], size=(tile, tile), mode="bilinear", align_corners=False)[0, 0]
        picture = tensor_to_pil(_heat(big.clamp(0, 1))[None])[0]
        canvas = Image.new("RGB", (tile, tile + 14), "white")
        canvas.paste(picture, (0, 0))
        ImageDraw.Draw(canvas).text((2, tile + 1), label[:10], fill="black")
        tiles.append(pil_to_tensor(canvas))
    return torch.cat(tiles, dim=3)


@node("core/attention_maps", category="attention editing", display_name="Attention maps per token", output_node=True)
def attention_maps(ctx: Context, field: MODEL_FIELD, encoder: TEXT_ENCODER, noise: TENSOR, grid: TIME_GRID,
                   prompt: Annotated[str, Widget(kind="multiline")] = "a red circle",
                   guidance: GuidanceScale = 4.0,
                   method: Annotated[SOLVER, Choice("solver")] = "euler") -> IMAGE:
    """Generate from `prompt` on `grid` with any registered solver and show where each word's tokens attend:
    cross-attention averaged over heads, layers (at the largest resolution) and field evaluations, per token."""
    require_cross_attention(field.backbone)
    (cond,), null = encode_with_null(encoder, [prompt])
    recorder = MapRecordingField(field, cond, null, guidance)
    with torch.no_grad():
        method(recorder, noise[:1].to(ctx.device), grid, None, ctx.progress)
    total, count, size = None, 0, None
    for maps in recorder.maps:
        size = size or max((r for r, _ in maps if r is not None), key=lambda r: r[0] * r[1])
        for resolution, probs in maps:
            if resolution is None:
                continue
            layer = probs[0].T.reshape(-1, 1, *resolution)
            layer = F.interpolate(layer, size=size, mode="bilinear", align_corners=False)[:, 0]
            total = layer if total is None else total + layer
            count += 1
    tokens = encoder.prompt_tokens(prompt, cond.tokens.shape[1])
    keep = [p for p, w in enumerate(tokens.word_ids) if w is not None]
    labels = [tokens.pieces[p] for p in keep]
    return render_token_maps(total[keep] / max(count, 1), labels).to(ctx.device)

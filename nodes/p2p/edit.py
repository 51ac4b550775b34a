"""The prompt-to-prompt field: source and target generated in one batch, target attention edited.

x holds [source samples; target samples] (2n rows, usually the same noise twice). One forward
pass evaluates [source cond, target cond, null, null] (the null rows only when guidance w != 1);
the controller edits the target's conditional rows; CFG then combines as usual.

Local blend keeps everything outside the chosen words' attention on the source trajectory: for
t >= start, outside the mask the target velocity becomes u_src + (x_src - x_tgt) / (1 - t), which
closes the gap x_tgt - x_src linearly by t = 1 (d/dt D = -D / (1 - t) gives D(1) = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nodes.broadcast import batch_times
from nodes.conditioning import Condition
from nodes.fields import ModelField, VectorField
from nodes.guidance import cfg_combine
from nodes.models.attention import attention_modules, attention_processor
from nodes.parameterization import convert, to_x0_eps
from nodes.text.words import PromptTokens

from .alignment import refine_mapping, word_swap_mapping
from .controller import EditController, EditPlan, blend_mask


def require_cross_attention(backbone: torch.nn.Module) -> None:
    """Refuse a backbone none of whose attention sites is cross-attention: nothing there to edit or to show."""
    if not any(site.is_cross for site in attention_modules(backbone).values()):
        raise ValueError(f"{type(backbone).__name__} has no cross-attention layer our attention processors reach "
                         "(our text-conditioned backbones and SD 1.x/2.x / SDXL U-Nets have them)")


def encode_with_null(encoder, prompts: list[str]) -> tuple[list[Condition], Condition]:
    """Each prompt's condition and the null (""), encoded in one batch so that all have one token count."""
    batch = encoder.encode([*prompts, ""])
    count = len(prompts)
    return [batch.select(slice(i, i + 1)) for i in range(count)], batch.select(slice(count, count + 1))


def parse_words(text: str) -> set[str]:
    return {w.strip().lower() for w in text.replace(",", " ").split() if w.strip()}


def build_plan(source: PromptTokens, target: PromptTokens, kind: str, cross_steps: float, self_steps: float,
               self_max_tokens: int, word_windows: dict[str, float], reweight: dict[str, float]) -> EditPlan:
    """Token mapping, per-token windows and weights for one source/target pair."""
    length = len(target.ids)
    if kind == "replace":
        mapping = word_swap_mapping(source.word_ids, target.word_ids, length, length)
        alpha = torch.ones(length)
    else:
        mapping, alpha = refine_mapping(source.ids, target.ids, length, length)
    windows = torch.full((length,), float(cross_steps))
    for word, fraction in word_windows.items():
        windows[target.positions({word.lower()})] = float(fraction)
    weights = None
    if reweight:
        weights = torch.ones(length)
        for word, factor in reweight.items():
            weights[target.positions({word})] = float(factor)
    return EditPlan(mapping, alpha, windows, float(self_steps), int(self_max_tokens), weights)


@dataclass
class LocalBlend:
    source_positions: list[int]
    target_positions: list[int]
    start: float = 0.2
    threshold: float = 0.3


class PromptToPromptField(VectorField):
    """u for x = [source; target] with the target's attention edited by `plan` (see module doc)."""

    samples_independent = False  # the target half reads the source half's attention

    def __init__(self, field: ModelField, source: Condition, target: Condition, null: Condition, scale: float,
                 plan: EditPlan | None, blend: LocalBlend | None = None) -> None:
        self.field = field
        self.backbone = field.backbone
        self.conds = (source, target)
        self.null = null
        self.scale = float(scale)
        self.plan = plan
        self.blend = blend
        self.path = field.path
        self.clip = field.clip

    def _guided(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, EditController, float]:
        """The guided prediction of [source; target] in the network's own kind (epsilon for SD), as
        `CFGField` guides: CFG is affine, so mixing before converting gives the same numbers as plain
        generation takes (a disabled edit equals it exactly)."""
        if x.shape[0] % 2:
            raise ValueError(f"x must hold source and target samples (an even batch), got {x.shape[0]}")
        n = x.shape[0] // 2
        t = batch_times(t, x.shape[0], x.device, x.dtype)
        now = float(t[0])
        parts = [c.expand(n).to(x.device) for c in self.conds]
        xs, ts = x, t
        if self.scale != 1.0:
            parts.append(self.null.expand(2 * n).to(x.device))
            xs, ts = torch.cat([x, x]), torch.cat([t, t])
        controller = EditController(self.plan, n, now, store_rows=2 * n if self._blending(now) else 0)
        with attention_processor(self.backbone, controller):
            out = self.field.predict(xs, ts, Condition.cat(parts), self.field.prediction)
        if self.scale != 1.0:
            out = cfg_combine(out[:2 * n], out[2 * n:], self.scale)
        return out, controller, now

    def _blending(self, now: float) -> bool:
        return self.blend is not None and now >= self.blend.start

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        native, controller, now = self._guided(x, t)
        out = convert(native, self.field.prediction, "velocity", x, t, self.path, self.clip)
        if self._blending(now):
            assert self.blend is not None
            n = x.shape[0] // 2
            mask = blend_mask(controller.maps, n, self.blend.source_positions, self.blend.target_positions,
                              tuple(x.shape[-2:]), self.blend.threshold)
            x_src, x_tgt = x[:n], x[n:]
            u_src, u_tgt = out[:n], out[n:]
            pull = u_src + (x_src - x_tgt) / max(1.0 - now, 1e-3)
            out = torch.cat([u_src, mask * u_tgt + (1 - mask) * pull])
        return out

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) straight from the guided native prediction (what DDIM asks), unless the local blend
        acts at t: it is defined on the velocity."""
        now = float(batch_times(t, x.shape[0], x.device, x.dtype)[0])
        if self._blending(now):
            return super().x0_eps(x, t, cond)
        native, _, _ = self._guided(x, t)
        return to_x0_eps(native, self.field.prediction, x, t, self.path, self.clip)


def guided_with_maps(field: ModelField, x: torch.Tensor, t: torch.Tensor, cond: Condition, null: Condition,
                     scale: float) -> tuple[torch.Tensor, list]:
    """One CFG evaluation of `field` that also returns the cross-attention maps of the conditional rows."""
    n = x.shape[0]
    parts, xs, ts = [cond.expand(n).to(x.device)], x, t
    if scale != 1.0:
        parts.append(null.expand(n).to(x.device))
        xs, ts = torch.cat([x, x]), torch.cat([t, t])
    controller = EditController(None, 0, float(t.reshape(-1)[0]), store_rows=n)
    with attention_processor(field.backbone, controller):
        out = field(xs, ts, Condition.cat(parts))
    if scale != 1.0:
        out = cfg_combine(out[:n], out[n:], scale)
    return out, controller.maps


class MapRecordingField(VectorField):
    """A guided field that keeps the cross-attention maps of every evaluation (for any solver)."""

    samples_independent = False  # the maps it records are those of the whole batch

    def __init__(self, field: ModelField, cond: Condition, null: Condition, scale: float) -> None:
        self.field, self.cond, self.null, self.scale = field, cond, null, float(scale)
        self.path, self.clip = field.path, field.clip
        self.maps: list[list] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        velocity, maps = guided_with_maps(self.field, x, t, self.cond, self.null, self.scale)
        self.maps.append(maps)
        return velocity

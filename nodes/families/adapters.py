"""diffusers denoisers and autoencoders behind our interfaces: Backbone f(x, t, cond) and the VAE socket.

The adapters own the family's conventions, so every solver, guidance and editing node works unchanged:
- time: our t (0 noise, 1 data) becomes the model's timestep: tau = (1 - t) N - 1 on a DDPM schedule;
  the noise level s = 1 - t times 1000 for SD3 (Flux's transformer takes s itself and scales it);
- prediction: U-Nets output epsilon, v or x0 as their scheduler says (ModelField converts exactly);
  SD3 and Flux output eps - x0, the negative of our velocity dx/dt = x0 - eps, so the adapter negates it;
- layout: Flux works on 2x2 patches of the latent (packed to tokens); the adapter packs and unpacks, so
  LATENT stays (B, C, H, W) everywhere else;
- dtype: latents and times stay float32 outside; inputs are cast to the model's dtype and back;
- attention: a U-Net's attention layers are our attention sites (`attention_sites`, see `attention`), so
  prompt-to-prompt controllers edit them as they edit our own backbones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..conditioning import Condition
from ..models.base import Backbone
from ..schedules import DiscreteDDPMPath
from .attention import DiffusersAttentionSite, LatentGrid, diffusers_attention_sites


def _model_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _require(cond: Condition | None, what: str, *fields: str) -> Condition:
    if cond is None:
        raise ValueError(f"{what} needs a text condition (link an encode node's CONDITIONING)")
    for name in fields:
        present = getattr(cond, name, None) if name in Condition._BATCHED else (cond.extras or {}).get(name)
        if present is None:
            raise ValueError(f"{what} needs the condition's {name!r}; encode the prompt with this model's own "
                             "text encoder")
    return cond


class DiffusersBackbone(Backbone):
    """Base of the adapters: `model` is the diffusers module; `family` names the model family."""

    family: str = ""

    def __init__(self, model: nn.Module, prediction: str) -> None:
        super().__init__()
        self.model = model
        self.prediction = prediction
        self.config = {"family": self.family, "model_class": type(model).__name__}

    @property
    def dtype(self) -> torch.dtype:
        return _model_dtype(self.model)

    def _condition(self, cond: Condition | None, x: torch.Tensor, dtype: torch.dtype, *fields: str) -> Condition:
        return _require(cond, f"{type(self).__name__}", *fields).bind(x).to(x.device, dtype)


class UNetBackbone(DiffusersBackbone):
    """UNet2DConditionModel (SD 1.x/2.x, SDXL) on a DDPM schedule: tau = (1 - t) N - 1.

    SDXL's U-Net also takes the pooled text vector and the six size/crop numbers (`extras["time_ids"]`).
    Its attn1 / attn2 layers are offered as attention sites; `latent_grid` tells them their feature-map size."""

    arch = "diffusers_unet"
    family = "sd"

    def __init__(self, model: nn.Module, prediction: str, path: DiscreteDDPMPath) -> None:
        super().__init__(model, prediction)
        self.path = path
        self.needs_time_ids = getattr(model.config, "addition_embed_type", None) == "text_time"
        self.latent_grid = LatentGrid()
        self._attention_sites: tuple[nn.Module, dict[str, DiffusersAttentionSite]] | None = None

    def attention_sites(self) -> dict[str, DiffusersAttentionSite]:
        """The U-Net's attention layers as our attention sites, found once per U-Net object: a LoRA twin
        (nodes/families/lora.py) has its own `model`, so it finds its own layers, not its base's."""
        if self._attention_sites is None or self._attention_sites[0] is not self.model:
            self._attention_sites = (self.model, diffusers_attention_sites(self.model, self.latent_grid))
        return self._attention_sites[1]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        fields = ("tokens", "pooled", "time_ids") if self.needs_time_ids else ("tokens",)
        dtype = self.dtype
        c = self._condition(cond, x, dtype, *fields)
        added = {"text_embeds": c.pooled, "time_ids": c.extras["time_ids"]} if self.needs_time_ids else None
        timestep = self.path.timestep(t.expand(x.shape[0])).to(device=x.device, dtype=torch.float32)
        self.latent_grid.size = (x.shape[-2], x.shape[-1])
        out = self.model(x.to(dtype), timestep, encoder_hidden_states=c.tokens, added_cond_kwargs=added,
                         return_dict=False)[0]
        return out.to(x.dtype)


class SD3Backbone(DiffusersBackbone):
    """SD3Transformer2DModel: timestep = 1000 s with s = 1 - t; output eps - x0, negated to our velocity."""

    arch = "diffusers_sd3"
    family = "sd3"

    def __init__(self, model: nn.Module, prediction: str = "velocity", timesteps: int = 1000) -> None:
        super().__init__(model, prediction)
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        dtype = self.dtype
        c = self._condition(cond, x, dtype, "tokens", "pooled")
        timestep = ((1 - t.double()) * self.timesteps).expand(x.shape[0]).to(device=x.device, dtype=torch.float32)
        out = self.model(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=c.tokens,
                         pooled_projections=c.pooled, return_dict=False)[0]
        return -out.to(x.dtype)


def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 W/2, 4C): one token per 2x2 patch, channels then the patch's rows, columns."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack_latents` for a (height, width) latent."""
    b, _, channels = tokens.shape
    c = channels // 4
    grid = tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, c, height, width)


def image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Flux's positions of the 2x2 patches: (H/2 W/2, 3) with (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(height // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(width // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


class FluxBackbone(DiffusersBackbone):
    """FluxTransformer2DModel on packed 2x2 patches: timestep s = 1 - t, the distilled guidance scale from
    `extras["guidance"]` (models with guidance_embeds), output eps - x0 negated to our velocity."""

    arch = "diffusers_flux"
    family = "flux"

    def __init__(self, model: nn.Module, prediction: str = "velocity") -> None:
        super().__init__(model, prediction)
        self.guidance_embeds = bool(getattr(model.config, "guidance_embeds", False))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        dtype = self.dtype
        c = self._condition(cond, x, dtype, "tokens", "pooled")
        b, _, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Flux latents need an even height and width, got {h}x{w}")
        timestep = (1 - t.double()).expand(b).to(device=x.device, dtype=torch.float32)
        guidance = None
        if self.guidance_embeds:
            value = (c.extras or {}).get("guidance")
            guidance = (value if value is not None else torch.full((b,), 3.5)).to(x.device, torch.float32)
        out = self.model(hidden_states=pack_latents(x).to(dtype), timestep=timestep, guidance=guidance,
                         pooled_projections=c.pooled, encoder_hidden_states=c.tokens,
                         txt_ids=torch.zeros(c.tokens.shape[1], 3, device=x.device, dtype=dtype),
                         img_ids=image_ids(h, w, x.device, dtype), return_dict=False)[0]
        return -unpack_latents(out, h, w).to(x.dtype)


class DiffusersVAE(nn.Module):
    """AutoencoderKL behind the VAE socket: latents = (mean(encode(2 x - 1)) - shift) scale, and
    images = (decode(z / scale + shift) + 1) / 2 clamped to [0, 1] (shift 0 for SD 1.x/2.x/SDXL)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.latent_channels = int(config.latent_channels)
        self.downscale = 2 ** (len(config.block_out_channels) - 1)

    def images_to_latents(self, images: torch.Tensor) -> torch.Tensor:
        dtype = _model_dtype(self.model)
        moments = self.model.encode(images.to(dtype) * 2 - 1).latent_dist.mean
        return ((moments - self.shift_factor) * self.scaling_factor).float()

    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        dtype = _model_dtype(self.model)
        decoded = self.model.decode((latents / self.scaling_factor + self.shift_factor).to(dtype)).sample
        return ((decoded.float() + 1) / 2).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"scale={self.scaling_factor}, shift={self.shift_factor}, channels={self.latent_channels}"


def describe(module: nn.Module) -> dict[str, Any]:
    """What a loaded component is, for error messages and logs."""
    return {"class": type(module).__name__, "parameters": sum(p.numel() for p in module.parameters())}

"""The text encoders of SD 1.x/2.x, SDXL, SD3 and Flux, each giving a `Condition` as its pipeline would.

Every encoder pads each prompt to the encoder's full length (the models were trained attending to the
padding), so `mask` is all True. Prompts longer than an encoder's limit are cut there, as diffusers
does; `dropped(prompts)` names the words cut so the encode node can warn about them.

- SD 1.x/2.x: tokens = CLIP's last hidden state (77 x D).
- SDXL: tokens = [CLIP-L, CLIP-bigG] penultimate hidden states side by side (77 x 2048); pooled = bigG's
  projected output; extras["time_ids"] = (original h, w, crop top, left, target h, w). With the model's
  force_zeros_for_empty_prompt, the empty prompt (CFG's null) is all zeros, as the pipeline's default.
- SD3: CLIP-L and CLIP-G penultimate states side by side, zero-padded to T5's width, then T5's states
  after them along the sequence (77 + 256 tokens); pooled = [CLIP-L, CLIP-G] projected outputs.
- Flux: tokens = T5's states (512); pooled = CLIP-L's pooled output; extras["guidance"] = the distilled
  guidance scale (3.5 unless core/flux_guidance sets it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
from torch import nn

from ..conditioning import Condition
from ..models.base import execution_device
from ..text.words import PromptTokens, from_word_ends


class PaddedTokenizer:
    """A tokenizer padding and truncating to `length`; thread-safe (tokenizers are not shareable)."""

    def __init__(self, tokenizer, length: int) -> None:
        self.tokenizer = tokenizer
        self.length = int(length)
        self._lock = threading.Lock()

    def ids(self, prompts: Sequence[str], device: torch.device) -> torch.Tensor:
        with self._lock:
            batch = self.tokenizer(list(prompts), padding="max_length", max_length=self.length, truncation=True,
                                   return_tensors="pt")
        return batch.input_ids.to(device)

    def dropped(self, prompt: str) -> str:
        """The text past the limit ("" when the prompt fits): the words beyond the room that the
        special tokens (start, end) leave."""
        with self._lock:
            ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
            room = self.length - self.tokenizer.num_special_tokens_to_add()
            return self.tokenizer.decode(ids[room:]).strip() if len(ids) > room else ""

    def prompt_tokens(self, prompt: str) -> PromptTokens:
        """The padded tokens with their words, CLIP's way: a word's last BPE piece ends in "</w>"."""
        with self._lock:
            return from_word_ends(self.tokenizer, prompt, self.length)


class FamilyTextEncoder(nn.Module):
    """Base: `encode(prompts) -> Condition`, `dropped(prompts)`, the tokenizers in `tokenizers`."""

    tokenizers: list[PaddedTokenizer]

    @property
    def device(self) -> torch.device:
        return execution_device(self)

    def dropped(self, prompts: Sequence[str]) -> list[tuple[str, str]]:
        """(prompt, the words cut) for each prompt some tokenizer truncates (longest cut per prompt)."""
        result = []
        for prompt in prompts:
            cut = max((t.dropped(prompt) for t in self.tokenizers), key=len, default="")
            if cut:
                result.append((prompt, cut))
        return result

    def encode(self, prompts: Sequence[str]) -> Condition:
        raise NotImplementedError

    def prompt_tokens(self, prompt: str, length: int) -> PromptTokens:
        """The words of the first (CLIP) tokenizer's tokens, when they are the condition's `length` tokens (SD
        1.x/2.x, SDXL: position i of the condition is CLIP token i); word-level edits need that."""
        words = self.tokenizers[0]
        if words.length != length:
            raise ValueError(f"{type(self).__name__}: the condition has {length} tokens, not the {words.length} of "
                             "its CLIP tokenizer, so its token positions are not words (word-level attention editing "
                             "supports SD 1.x/2.x and SDXL)")
        return words.prompt_tokens(prompt)


def _frozen(*models: nn.Module) -> None:
    for model in models:
        model.requires_grad_(False).eval()


def _float(value: torch.Tensor) -> torch.Tensor:
    return value.float()


class CLIPEncoder(FamilyTextEncoder):
    """SD 1.x/2.x: one CLIP text model; tokens = last hidden state, pooled = its pooled output."""

    def __init__(self, tokenizer, text_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = text_encoder
        self.tokenizers = [PaddedTokenizer(tokenizer, tokenizer.model_max_length)]
        self.use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
        _frozen(text_encoder)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Condition:
        prompts = tuple(prompts)
        ids = self.tokenizers[0].ids(prompts, self.device)
        if self.use_mask:
            raise ValueError("text encoders that need an attention mask are not supported")
        out = self.text_encoder(ids)
        tokens = _float(out.last_hidden_state)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Condition(tokens=tokens, mask=mask, pooled=_float(out.pooler_output), prompts=prompts)


def _penultimate(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden_states[-2], first output): SDXL and SD3 read CLIP's penultimate layer."""
    out = model(ids, output_hidden_states=True)
    return out.hidden_states[-2], out[0]


class SDXLEncoder(FamilyTextEncoder):
    """SDXL's two CLIP encoders (see the module docstring); `size` sets the default micro-conditioning."""

    def __init__(self, tokenizer, text_encoder: nn.Module, tokenizer_2, text_encoder_2: nn.Module,
                 force_zeros_for_empty_prompt: bool = True) -> None:
        super().__init__()
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizers = [PaddedTokenizer(tokenizer, tokenizer.model_max_length),
                           PaddedTokenizer(tokenizer_2, tokenizer_2.model_max_length)]
        self.force_zeros = force_zeros_for_empty_prompt
        _frozen(text_encoder, text_encoder_2)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], size: tuple[int, int] = (1024, 1024), crop: tuple[int, int] = (0, 0),
               target: tuple[int, int] | None = None) -> Condition:
        prompts = tuple(prompts)
        states = []
        pooled = None
        for tokenizer, model in zip(self.tokenizers, (self.text_encoder, self.text_encoder_2), strict=True):
            hidden, first = _penultimate(model, tokenizer.ids(prompts, self.device))
            states.append(hidden)
            pooled = first  # the second encoder's projected output (text_embeds)
        tokens = _float(torch.cat(states, dim=-1))
        pooled = _float(pooled)
        if self.force_zeros:
            empty = torch.tensor([p == "" for p in prompts], device=tokens.device)
            tokens = torch.where(empty[:, None, None], torch.zeros_like(tokens), tokens)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        time_ids = torch.tensor([[*size, *crop, *(target or size)]], dtype=torch.float32, device=tokens.device)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Condition(tokens=tokens, mask=mask, pooled=pooled, prompts=prompts,
                         extras={"time_ids": time_ids.expand(len(prompts), 6)})


class SD3Encoder(FamilyTextEncoder):
    """SD3's CLIP-L, CLIP-G and T5 (T5 optional: its 256 tokens are then zeros, as the pipeline does)."""

    def __init__(self, tokenizer, text_encoder: nn.Module, tokenizer_2, text_encoder_2: nn.Module,
                 tokenizer_3=None, text_encoder_3: nn.Module | None = None, t5_length: int = 256,
                 joint_dim: int = 4096) -> None:
        super().__init__()
        self.text_encoder, self.text_encoder_2, self.text_encoder_3 = text_encoder, text_encoder_2, text_encoder_3
        self.tokenizers = [PaddedTokenizer(tokenizer, tokenizer.model_max_length),
                           PaddedTokenizer(tokenizer_2, tokenizer_2.model_max_length)]
        if text_encoder_3 is not None:
            self.tokenizers.append(PaddedTokenizer(tokenizer_3, t5_length))
        self.t5_length, self.joint_dim = t5_length, joint_dim
        _frozen(*[m for m in (text_encoder, text_encoder_2, text_encoder_3) if m is not None])

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Condition:
        prompts = tuple(prompts)
        clip_states, pooled = [], []
        for tokenizer, model in zip(self.tokenizers[:2], (self.text_encoder, self.text_encoder_2), strict=True):
            hidden, projected = _penultimate(model, tokenizer.ids(prompts, self.device))
            clip_states.append(hidden)
            pooled.append(projected)
        clip = torch.cat(clip_states, dim=-1)
        if self.text_encoder_3 is not None:
            t5 = self.text_encoder_3(self.tokenizers[2].ids(prompts, self.device))[0]
        else:
            t5 = clip.new_zeros(len(prompts), self.t5_length, self.joint_dim)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        tokens = _float(torch.cat([clip, t5.to(clip.dtype)], dim=-2))
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Condition(tokens=tokens, mask=mask, pooled=_float(torch.cat(pooled, dim=-1)), prompts=prompts)


class FluxEncoder(FamilyTextEncoder):
    """Flux's CLIP-L (pooled) and T5 (sequence); the guidance scale rides along in extras."""

    def __init__(self, tokenizer, text_encoder: nn.Module, tokenizer_2, text_encoder_2: nn.Module,
                 t5_length: int = 512, guidance: float = 3.5) -> None:
        super().__init__()
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizers = [PaddedTokenizer(tokenizer, tokenizer.model_max_length),
                           PaddedTokenizer(tokenizer_2, t5_length)]
        self.guidance = guidance
        _frozen(text_encoder, text_encoder_2)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Condition:
        prompts = tuple(prompts)
        pooled = self.text_encoder(self.tokenizers[0].ids(prompts, self.device)).pooler_output
        tokens = _float(self.text_encoder_2(self.tokenizers[1].ids(prompts, self.device))[0])
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        guidance = torch.full((len(prompts),), float(self.guidance), device=tokens.device)
        return Condition(tokens=tokens, mask=mask, pooled=_float(pooled), prompts=prompts,
                         extras={"guidance": guidance})

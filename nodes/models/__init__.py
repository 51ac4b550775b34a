"""Backbones f(x, t, cond), the noisy classifier, the attention-processor interface and checkpoints."""

from .attention import (
    DEFAULT_PROCESSOR,
    Attention,
    AttentionLayer,
    AttentionProcessor,
    AttentionSite,
    DefaultProcessor,
    attention_modules,
    attention_probs,
    attention_processor,
    set_attention_processor,
)
from .unet import UNet

__all__ = ["DEFAULT_PROCESSOR", "Attention", "AttentionLayer", "AttentionProcessor", "AttentionSite",
           "DefaultProcessor", "UNet", "attention_modules", "attention_probs", "attention_processor",
           "set_attention_processor"]

"""Network architectures as registered components: what a checkpoint's "arch" name rebuilds.

An architecture is an nn.Module class with a class attribute `arch` (its name) and an instance
attribute `config` (a JSON dict of constructor keyword arguments), so cls(**config) rebuilds it;
`kind` says which loader accepts it (backbone, classifier, vae). Plugins register theirs as
("architecture", name) components and the built-in checkpoint nodes load and save them.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .classifier import NoisyClassifier
from .dit import DiT
from .mlp import MLPBackbone
from .unet import UNet
from .vae import AutoencoderKL

KINDS = ("backbone", "classifier", "vae")


@dataclass(frozen=True)
class Architecture:
    cls: type[nn.Module]
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"architecture kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(getattr(self.cls, "arch", None), str):
            raise ValueError(f"{self.cls.__name__} needs a class attribute `arch` naming it")

    @property
    def name(self) -> str:
        return self.cls.arch  # type: ignore[attr-defined]


BUILTIN_ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(UNet, "backbone"), Architecture(DiT, "backbone"), Architecture(MLPBackbone, "backbone"),
    Architecture(NoisyClassifier, "classifier"), Architecture(AutoencoderKL, "vae"),
)


def builtin_architectures() -> dict[str, Architecture]:
    """The built-in architectures by name (what a registry holds before plugins add theirs)."""
    return {a.name: a for a in BUILTIN_ARCHITECTURES}

"""The plugin's own socket type: a sampler's settings, made by one node and consumed by another."""

from dataclasses import dataclass

from nodegraph import SocketType


@dataclass(frozen=True)
class SamplerSpec:
    """Which update rule to use and its options (eta: stochasticity of ddim_eta, seed: its noise)."""

    method: str
    eta: float = 0.0
    seed: int = 0


SAMPLER = SocketType("SAMPLER", SamplerSpec, "#26a69a",
                     description="Sampler settings (method and options) for sampler_example/sample.")

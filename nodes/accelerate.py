"""GPU-path options for a backbone: autocast dtype, channels_last, torch.compile — as a wrapper node.

`core/accelerate` never changes the cached input module. Autocast alone wraps it (parameters are
shared, nothing is written); channels_last needs a converted copy of the weights, so the module is
deep-copied first. The wrapper is an `nn.Module` holding the backbone as its child `inner`, so
`modules()` / `named_modules()` reach the attention modules (prompt-to-prompt can still swap
processors), and it exposes the backbone's `config` and `prediction`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn

from nodegraph import node

from .conditioning import Condition
from .sockets import BACKBONE

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]


def module_device(module: nn.Module) -> torch.device:
    """Device of the module's first parameter (CPU for a parameter-free module)."""
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


class AcceleratedBackbone(nn.Module):
    """forward(x, t, cond) = inner(x, t, cond) under autocast(dtype), returned in x's dtype.

    float32 means no autocast. With channels_last, 4-D inputs are laid out NHWC before the call
    (the weights of `inner` were converted when the wrapper was built).
    """

    def __init__(self, inner: nn.Module, dtype: str = "float32", channels_last: bool = False,
                 compile_mode: str = "off") -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.inner = inner
        self.dtype_name = dtype
        self.channels_last = channels_last
        self.compile_mode = compile_mode
        self.config: dict[str, Any] = dict(getattr(inner, "config", {}))
        self.prediction: str = getattr(inner, "prediction", "velocity")
        # not registered as a submodule: `inner` is the one child (no duplicate state_dict keys)
        object.__setattr__(self, "_call", torch.compile(inner, mode=compile_mode) if compile_mode != "off" else inner)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype_name == "float32":
            return self._call(x, t, cond)
        device_type = x.device.type
        with torch.autocast(device_type=device_type, dtype=DTYPES[self.dtype_name]):
            out = self._call(x, t, cond)
        return out.to(x.dtype).contiguous()

    def __getattr__(self, name: str) -> Any:
        """Attributes the wrapper lacks (e.g. `training_info`, `num_classes`) come from the backbone."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = super().__getattr__("inner")
            return getattr(inner, name)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype_name}, channels_last={self.channels_last}, compile={self.compile_mode}"


def accelerate_backbone(backbone: nn.Module, dtype: str = "float32", channels_last: bool = False,
                        compile_mode: str = "off") -> AcceleratedBackbone:
    """Wrap `backbone`; copy it first when channels_last must rewrite its weights (the input stays as it was)."""
    inner = backbone
    if channels_last:
        inner = copy.deepcopy(backbone).to(memory_format=torch.channels_last)
    return AcceleratedBackbone(inner, dtype, channels_last, compile_mode)


@node("core/accelerate", category="models", display_name="Accelerate backbone")
def accelerate(backbone: BACKBONE, dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16",
               channels_last: bool = False, compile_mode: CompileMode = "off") -> BACKBONE:
    """Run the backbone under torch.autocast(dtype) on its own device (outputs cast back to the input dtype),
    optionally with channels_last convolutions (a converted copy) and torch.compile. bfloat16 works on CPU and
    GPU; float16 is meant for GPUs. The input backbone is never modified."""
    return accelerate_backbone(backbone, dtype, channels_last, compile_mode)

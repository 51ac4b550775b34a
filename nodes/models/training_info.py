"""What a model was trained on: the one way training facts travel with a model.

Trainers, the checkpoint writer and the checkpoint loader share one documented mechanism:

* a training node returns its model with `with_training_info(model, info)`;
* `save_model(model, file)` stores `training_info(model)` as the "training" object of the
  checkpoint metadata (or the `training` it is given explicitly, as trainers do for intermediate
  checkpoints);
* `load_model(file)` sets it again from that metadata, so e.g. a field node can read the path a
  loaded backbone was trained on as `training_info(model).path`.

The value lives on the module as the attribute named `TRAINING_ATTR`; read and write it only
through these two functions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

TRAINING_ATTR = "training_info"


@dataclass(frozen=True)
class TrainingInfo:
    """Training facts stored with a checkpoint (JSON: the fields side by side with `settings`' items).

    `objective` names the loss ("flow_matching", "noisy_classifier", "clean_classifier", "vae");
    `path` is the probability path's config (None when no path is involved); `settings` holds the
    trainer's own hyper-parameters (label_dropout, ema_decay, t_min, kl_weight, ...).
    """

    objective: str
    dataset: dict[str, Any] = field(default_factory=dict)
    steps: int = 0
    batch_size: int = 0
    lr: float = 0.0
    seed: int = 0
    path: dict[str, Any] | None = None
    final_loss: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """One flat JSON object; `None` fields are left out."""
        data = {k: v for k, v in asdict(self).items() if k != "settings" and v is not None}
        return {**self.settings, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingInfo | None:
        """Inverse of `to_json`; None for an empty object (a model saved without training facts)."""
        if not data:
            return None
        names = {f.name for f in fields(cls)} - {"settings"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**{"objective": "unknown", **known}, settings={k: v for k, v in data.items() if k not in names})


def training_info(model: nn.Module) -> TrainingInfo | None:
    """The training facts attached to `model` (by a trainer or the checkpoint loader), or None."""
    return getattr(model, TRAINING_ATTR, None)


def with_training_info(model: nn.Module, info: TrainingInfo | None) -> nn.Module:
    """Attach `info` to `model` (in place) and return the model."""
    setattr(model, TRAINING_ATTR, info)
    return model

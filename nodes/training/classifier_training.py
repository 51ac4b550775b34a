"""Training a noisy-time classifier p_t(y | x_t) on samples of a probability path.

x_t = alpha_t z + beta_t eps with t ~ U(t_min, 1) (clean: t = 1, x_t = z); loss = cross-entropy
of classifier(x_t, t) against the label of z. Its gradient d/dx log p_t(y|x) is classifier guidance.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nodegraph import Context, node

from ..annotations import BatchSize, EmaDecay, GradClip, LearningRate, Seed, TrainingSteps, Unit, WeightDecay
from ..models.training_info import TrainingInfo
from ..sockets import CLASSIFIER, DATASET, PATH
from .common import Optimisation, describe_dataset, train_in_run


def classifier_loss_fn(path, images: torch.Tensor, labels: torch.Tensor, batch_size: int, t_min: float,  # noqa: ANN001
                       clean: bool, generator: torch.Generator) -> Callable[[nn.Module, int], torch.Tensor]:
    """loss(classifier) = mean cross-entropy(classifier(x_t, t), y) over a batch drawn with `generator`."""
    def loss(model: nn.Module, step: int) -> torch.Tensor:
        device = images.device
        indices = torch.randint(0, images.shape[0], (batch_size,), generator=generator, device=device)
        z = images[indices]
        if clean:
            t = torch.ones(batch_size, device=device)
            x_t = z
        else:
            t = t_min + (1 - t_min) * torch.rand(batch_size, generator=generator, device=device)
            x_t = path.sample(z, torch.randn(z.shape, generator=generator, device=device), t)
        return F.cross_entropy(model(x_t, t), labels[indices])
    return loss


@node("core/train_classifier", category="training", display_name="Train noisy classifier")
def train_classifier(ctx: Context, classifier: CLASSIFIER, dataset: DATASET, path: PATH,
                     steps: TrainingSteps = 2000,
                     batch_size: BatchSize = 64,
                     lr: LearningRate = 2e-3,
                     t_min: Unit = 0.0, clean: bool = False,
                     ema_decay: EmaDecay = 0.999,
                     grad_clip: GradClip = 1.0,
                     weight_decay: WeightDecay = 0.0,
                     seed: Seed = 0) -> CLASSIFIER:
    """Minimise cross-entropy(classifier(x_t, t), y) with x_t = alpha_t z + beta_t eps, t ~ U(t_min, 1);
    clean = True trains on data only (t = 1), a plain classifier to score samples. Returns EMA weights."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError("classifier training needs a dataset with labels")
    images, labels = dataset.images.to(ctx.device), labels.to(ctx.device)
    info = TrainingInfo("clean_classifier" if clean else "noisy_classifier", describe_dataset(dataset), steps,
                        batch_size, lr, seed, path.config(), settings={"t_min": t_min})
    opt = Optimisation.for_node(steps, lr, weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay)
    return train_in_run(ctx, classifier,
                        lambda gen: classifier_loss_fn(path, images, labels, batch_size, t_min, clean, gen),
                        opt, info).model

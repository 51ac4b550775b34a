"""Socket types of the generative node library. Tensors are torch tensors on the run's device.

IMAGE is (B, C, H, W) float in [0, 1]; LATENT is (B, C, H, W) in the model's latent space;
both are TENSORs so any tensor input accepts them. A MASK is a one-channel IMAGE (1 = repaint).
"""

import torch

from nodegraph import SocketType

from .conditioning import Condition
from .fields import ModelField, VectorField
from .guidance import GuidanceMethod
from .paths import GaussianPath
from .sigma import SigmaSchedule
from .solvers import Solver

TENSOR = SocketType("TENSOR", torch.Tensor, "#78909c", description="A torch tensor.")
IMAGE = SocketType("IMAGE", torch.Tensor, "#64b5f6", parent=TENSOR,
                   description="Images as a (B, C, H, W) float tensor in [0, 1].")
MASK = SocketType("MASK", torch.Tensor, "#b0bec5", parent=IMAGE,
                  description="A (B, 1, H, W) mask in [0, 1]: 1 = repaint, 0 = keep (an image, so it previews).")
LATENT = SocketType("LATENT", torch.Tensor, "#f06292", parent=TENSOR,
                    description="Samples in a model's space (pixels in [-1, 1] or VAE latents), (B, C, H, W).")
TIME_GRID = SocketType("TIME_GRID", torch.Tensor, "#a1887f", parent=TENSOR,
                       description="Increasing times from 0 (noise) to 1 (data) for a solver.")
CONDITIONING = SocketType("CONDITIONING", Condition, "#ffa726",
                          description="A condition: class labels or text tokens + mask + pooled vector.")
PATH = SocketType("PATH", GaussianPath, "#9575cd", description="A Gaussian probability path: alpha_t, beta_t.")
VECTOR_FIELD = SocketType("VECTOR_FIELD", VectorField, "#e57373", description="u(x, t, cond) to integrate.")
MODEL_FIELD = SocketType("MODEL_FIELD", ModelField, "#ef9a9a", parent=VECTOR_FIELD,
                         description="A vector field read straight from a backbone (attention editing needs it).")
SOLVER = SocketType("SOLVER", Solver, "#80cbc4", description="An ODE solver with its options.")
GUIDANCE = SocketType("GUIDANCE", GuidanceMethod, "#ffcc80",
                      description="A guidance method: how conditional and null velocities combine.")
SIGMA_SCHEDULE = SocketType("SIGMA_SCHEDULE", SigmaSchedule, "#4dd0e1", description="Diffusion coefficient sigma_t.")
BACKBONE = SocketType("BACKBONE", torch.nn.Module, "#7986cb", description="A network f(x, t, cond).")
MLP = SocketType("MLP", torch.nn.Module, "#7986cb", parent=BACKBONE)
UNET = SocketType("UNET", torch.nn.Module, "#5c6bc0", parent=BACKBONE)
DIT = SocketType("DIT", torch.nn.Module, "#3f51b5", parent=BACKBONE)
VAE = SocketType("VAE", torch.nn.Module, "#ef5350", description="Encoder/decoder between images and latents.")
TEXT_ENCODER = SocketType("TEXT_ENCODER", None, "#ffd54f", description="Prompts to token features.")
CLASSIFIER = SocketType("CLASSIFIER", torch.nn.Module, "#aed581", description="A noisy-time classifier p_t(y|x).")
DATASET = SocketType("DATASET", None, "#4db6ac", description="Examples with labels or captions.")
MIXTURE = SocketType("MIXTURE", None, "#26a69a", description="A Gaussian-mixture data distribution (toy).")
ATTENTION_CONTROL = SocketType("ATTENTION_CONTROL", None, "#ce93d8",
                               description="An attention controller (store / edit attention maps).")

ALL = (TENSOR, IMAGE, MASK, LATENT, TIME_GRID, CONDITIONING, PATH, VECTOR_FIELD, MODEL_FIELD, SOLVER, GUIDANCE,
       SIGMA_SCHEDULE, BACKBONE, MLP,
       UNET, DIT, VAE, TEXT_ENCODER, CLASSIFIER, DATASET, MIXTURE, ATTENTION_CONTROL)

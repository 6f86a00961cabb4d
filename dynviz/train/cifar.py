"""CIFAR-10 training data and the recipe shared by every CIFAR model.

Data: the train split of an image folder (``<root>/train/<class>/*.jpg``) or of
CIFAR-10's python batches; 5,000 of its images (a fixed, seeded draw) are held
out for validation and calibration, so the test split is only ever used by the
eval command. Augmentation is the standard one: 4-pixel zero padding with a
random 32×32 crop, and random horizontal flips.

Every CIFAR model, dynamic or static, trains with the same schedule and number
of epochs (:data:`EPOCHS`), so that the cards and the trade-off explorer compare
like with like.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from dynviz.cards import PRETRAINED, About, ModelCard, sha256_of
from dynviz.data import labelled_images
from dynviz.models.cifar import Cifar10Classifier, cifar_view, normalize
from dynviz.models.resnet_cifar import ResNetCifar, resnet_name
from dynviz.train.loop import (
    CHECKPOINTS,
    LossFunction,
    Regularizer,
    Schedule,
    TensorSet,
    TrainOptions,
    fit,
    replaced_atomically,
    require_data,
)
from dynviz.zoo import load_weights

EPOCHS = 40
"""What a 2-core CPU affords for the whole CIFAR zoo in about 12 hours (ResNet-56 about 2 hours; the papers
train for 160–300 epochs, which the one-cycle schedule and label smoothing make up for in part)."""
FINE_TUNE_LR = 0.05
"""The peak learning rate of a network that starts from a trained twin (the shared schedule's is 0.1)."""
VALIDATION_IMAGES = 5000
PADDING = 4


def load_train_split(
    options: TrainOptions, validation_images: int = VALIDATION_IMAGES, seed: int = 0
) -> tuple[TensorSet, TensorSet]:
    """(train, validation) tensors from the train split under ``--data``."""
    start = time.perf_counter()
    root = require_data(options, "a folder with train/<class>/*.jpg, or CIFAR-10's cifar-10-batches-py/")
    items = labelled_images(root, Cifar10Classifier.class_keys(), "train")
    images = np.stack([np.asarray(cifar_view(item.load()).pixels) for item in items])
    data = TensorSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor([i.label for i in items]))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    held_out, kept = order[:validation_images], order[validation_images:]
    print(f"read {len(data)} training images in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return (
        TensorSet(data.images[kept], data.labels[kept]),
        TensorSet(data.images[held_out], data.labels[held_out]),
    )


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The standard CIFAR augmentation on a whole uint8 batch [N, C, S, S] at once: a random S×S crop of the
    batch zero-padded by :data:`PADDING` on every side, mirrored left–right with probability ½. One gather
    over precomputed row and column indices, no loop over the images."""
    n, _, size, _ = batch.shape
    padded = F.pad(batch, (PADDING,) * 4)
    offsets = torch.randint(0, 2 * PADDING + 1, (n, 2), generator=generator).to(batch.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(batch.device)
    steps = torch.arange(size, device=batch.device)
    rows = offsets[:, :1] + steps
    columns = offsets[:, 1:] + torch.where(flip[:, None], size - 1 - steps, steps)
    images = torch.arange(n, device=batch.device)[:, None, None]
    return padded[images, :, rows[:, :, None], columns[:, None, :]].permute(0, 3, 1, 2)  # the gather puts C last


def prepare(batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Normalise a uint8 batch; with a generator, augment it first (:func:`augment`)."""
    return normalize(batch if generator is None else augment(batch, generator))


def schedule(options: TrainOptions) -> Schedule:
    """The shared schedule; compiled on a GPU, where torch.compile pays, and on a CPU where ``--compile`` asks (on
    this project's 2-core CPUs it bought between −15% and +25% images/s by model, but 2.4× for MSDNet on one with
    AMX, after a compile of up to 3 minutes: bench/train_speed.py)."""
    return Schedule(epochs=options.epochs or EPOCHS, compile=options.device == "cuda" or options.compile)


def fine_tune_schedule(options: TrainOptions, epochs: int) -> Schedule:
    """The shared schedule, shorter and at :data:`FINE_TUNE_LR`: for a network that starts from a trained twin."""
    return dataclasses.replace(schedule(options), epochs=options.epochs or epochs, peak_lr=FINE_TUNE_LR)


def trained(name: str, net: nn.Module) -> nn.Module:
    """``net`` with the bundled weights of ``name``: the trained twin that a dynamic CIFAR model starts from."""
    net.load_state_dict(load_weights(name)[0])
    return net


class Ensemble(nn.Module):
    """Trained networks as one teacher: its logits are the log of their mean softmax output, so that its softmax
    is the ensemble's prediction."""

    def __init__(self, *members: nn.Module):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([m(x).float().log_softmax(-1) for m in self.members])
        return log_probabilities.logsumexp(0) - math.log(len(self.members))


ENSEMBLE_DEPTHS = (32, 56)
STATIC_ENSEMBLE = tuple(map(resnet_name, ENSEMBLE_DEPTHS))
"""The trained static ResNets that teach together: 90.3% on the validation images, where ResNet-32
has 88.4% and ResNet-56 89.2%."""


def static_ensemble() -> Ensemble:
    return Ensemble(*(trained(name, ResNetCifar(depth)) for name, depth in zip(STATIC_ENSEMBLE, ENSEMBLE_DEPTHS)))


def checkpoint_path(name: str, stage: str = "") -> Path:
    """Where recipe ``name`` keeps its checkpoint; a recipe of several stages keeps one for each later ``stage``."""
    return CHECKPOINTS / (f"{name}-{stage}.pt" if stage else f"{name}.pt")


def recipe_checkpoints(name: str) -> list[Path]:
    """Every checkpoint recipe ``name`` has kept, its first stage's first."""
    return [checkpoint_path(name), *sorted(CHECKPOINTS.glob(f"{name}-*.pt"))]


def save_weights(
    name: str,
    tensors: dict[str, torch.Tensor],
    about: About,
    flops_full: float,
    default_point: str,
    metadata: dict[str, str],
) -> ModelCard:
    """Write ``pretrained/<name>.safetensors`` and the card's head (the eval command adds the figures)."""
    weights = PRETRAINED / f"{name}.safetensors"
    with replaced_atomically(weights) as partial:
        save_file({k: v.contiguous() for k, v in tensors.items()}, partial, metadata=metadata)
    return ModelCard(name, about, flops_full, default_point, weights.name, sha256_of(weights))


def validation_metadata(history: list[list[float]]) -> dict[str, str]:
    """The weights' metadata on validation: the last exit's accuracy, and every exit's after each epoch
    (the curve that says what more epochs would buy)."""
    curve = [[round(a, 4) for a in exits] for exits in history]
    return {"validation_accuracy": f"{history[-1][-1]:.4f}", "validation_history": json.dumps(curve)}


def train_on_cifar(
    name: str,
    net: nn.Module,
    loss_function: LossFunction,
    options: TrainOptions,
    regularizer: Regularizer | None = None,
    fine_tune: Schedule | None = None,
    teacher: nn.Module | None = None,
    stage: str = "",
) -> tuple[list[list[float]], TensorSet]:
    """The shared CIFAR recipe: the train split less validation, the shared schedule (or the ``fine_tune``
    one, for a network initialised from a trained one), checkpoints under ``name`` (and the recipe's
    ``stage``); with a ``teacher``, the loss reads its logits instead of the labels. Returns each exit's
    validation accuracy after each epoch, and the validation set for calibration."""
    train_set, validation = load_train_split(options)
    history = fit(
        net,
        loss_function,
        train_set,
        validation,
        prepare,
        fine_tune or schedule(options),
        checkpoint_path(name, stage),
        options.device,
        options.resume,
        regularizer,
        teacher,
    )
    return history, validation

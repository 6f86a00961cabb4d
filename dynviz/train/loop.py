"""One training loop for every recipe that takes gradient steps.

SGD with Nesterov momentum under a one-cycle schedule (Smith & Topin, 2019):
short budgets of epochs are what a 2-core CPU can afford, and one-cycle gets
the most out of them. Fixed seeds; a checkpoint after every epoch, from which
``--resume`` continues exactly (model, optimiser, schedule, random state);
progress with an ETA on stderr. On CPUs with bf16 units (and on CUDA) the
forward pass runs under bf16 autocast, in channels-last layout.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dynviz.models.gates import GatedOutput
from dynviz.zoo import PRETRAINED

CHECKPOINTS = Path(os.environ.get("DYNVIZ_CHECKPOINTS", PRETRAINED.parent / "checkpoints"))
"""Where training checkpoints go (git-ignored)."""

LossFunction = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]
"""(logits of every exit, labels) → scalar loss."""
Regularizer = Callable[[GatedOutput], torch.Tensor]
"""A gated network's training output → a penalty on its decisions (e.g. the execution-rate loss)."""


@dataclass(frozen=True)
class TrainOptions:
    """What ``python -m dynviz train`` passes to a recipe."""

    data: Path | None
    epochs: int | None = None
    """None: the recipe's own number."""
    device: str = "cpu"
    resume: bool = False
    unlabeled: Path | None = None
    """Extra images without labels, for recipes that distil (a teacher labels them)."""


def require_data(options: TrainOptions, what: str) -> Path:
    if options.data is None:
        raise SystemExit(f"this recipe needs --data: {what}")
    return options.data


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int = 128
    peak_lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.15
    seed: int = 0


@dataclass(frozen=True)
class TensorSet:
    """Images as uint8 [N, C, H, W] with int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def exit_logits(output: torch.Tensor | list[torch.Tensor] | GatedOutput) -> list[torch.Tensor]:
    """A network's output as a list of exits (a static or gated network has one)."""
    if isinstance(output, GatedOutput):
        return [output.logits]
    return list(output) if isinstance(output, (list, tuple)) else [output]


def autocast(device: str):
    bf16 = device == "cuda" or torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported()
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)


def fit(
    net: nn.Module,
    loss_function: LossFunction,
    train: TensorSet,
    validation: TensorSet,
    prepare: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor],
    schedule: Schedule,
    checkpoint: Path,
    device: str = "cpu",
    resume: bool = False,
    regularizer: Regularizer | None = None,
    teacher: nn.Module | None = None,
) -> list[float]:
    """Train ``net`` in place; returns the validation accuracy of each exit.

    ``prepare(uint8 batch, generator)`` augments (with a generator) or only
    normalises (with None) a batch. A gated network's decisions are also
    penalised by ``regularizer``. With a ``teacher``, the loss's targets are the
    teacher's logits on the very same augmented batch instead of the labels
    (distillation as function matching)."""
    torch.manual_seed(schedule.seed)
    generator = torch.Generator().manual_seed(schedule.seed)
    net.to(device, memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(device, memory_format=torch.channels_last).eval()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=schedule.peak_lr, momentum=0.9, nesterov=True, weight_decay=schedule.weight_decay
    )
    steps_per_epoch = len(train) // schedule.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        schedule.peak_lr,
        total_steps=schedule.epochs * steps_per_epoch,
        pct_start=schedule.warmup_fraction,
        div_factor=10,
        final_div_factor=100,
    )
    first_epoch = 0
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # loading moves tensors to the device
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch = state["epoch"] + 1
        print(f"resumed from {checkpoint} after epoch {first_epoch}", file=sys.stderr)
    start, steps_done = time.perf_counter(), 0
    steps_left = (schedule.epochs - first_epoch) * steps_per_epoch
    accuracies: list[float] = []
    for epoch in range(first_epoch, schedule.epochs):
        net.train()
        order = torch.randperm(len(train), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * schedule.batch_size : (step + 1) * schedule.batch_size]
            # Augmentation runs where the network does: on a GPU the CPU would be the bottleneck.
            inputs = prepare(train.images[batch].to(device), generator).contiguous(memory_format=torch.channels_last)
            targets = train.labels[batch].to(device)
            with autocast(device):
                output = net(inputs)
                if teacher is not None:
                    with torch.no_grad():
                        targets = teacher(inputs).float()
            loss = loss_function([z.float() for z in exit_logits(output)], targets)
            if regularizer is not None:
                loss = loss + regularizer(output)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps_done += 1
            if steps_done % 50 == 0 or step == steps_per_epoch - 1:
                elapsed = time.perf_counter() - start
                eta = elapsed / steps_done * (steps_left - steps_done)
                rate = ""
                if isinstance(output, GatedOutput):  # what the decisions spend is half of what is being learnt
                    rate = f"rate {torch.stack([g.float().mean() for g in output.gates]).mean().item():.2f}  "
                print(
                    f"epoch {epoch + 1}/{schedule.epochs}  step {step + 1}/{steps_per_epoch}  loss {loss.item():.3f}  "
                    f"{rate}"
                    f"lr {scheduler.get_last_lr()[0]:.4f}  {steps_done * schedule.batch_size / elapsed:.0f} img/s  "
                    f"ETA {eta / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )
        accuracies = validation_accuracy(net, validation, prepare, device)
        print(f"epoch {epoch + 1}: validation accuracy per exit {[round(a, 4) for a in accuracies]}", file=sys.stderr)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "net": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
            },
            checkpoint,
        )
    net.to("cpu", memory_format=torch.contiguous_format).eval()
    if teacher is not None:
        teacher.to("cpu", memory_format=torch.contiguous_format)
    return accuracies or validation_accuracy(net, validation, prepare, "cpu")


@torch.no_grad()
def predict(
    net: nn.Module,
    data: TensorSet,
    prepare: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor],
    device: str = "cpu",
    batch_size: int = 500,
) -> list[torch.Tensor]:
    """Logits of every exit on every image: [exits] × [N, classes]. In float32, as the app runs them,
    so that calibration fits what users will see."""
    net.eval()
    chunks = []
    for first in range(0, len(data), batch_size):
        inputs = prepare(data.images[first : first + batch_size], None).to(device)
        chunks.append([z.float().cpu() for z in exit_logits(net(inputs))])
    return [torch.cat(parts) for parts in zip(*chunks)]


def validation_accuracy(net: nn.Module, data: TensorSet, prepare, device: str) -> list[float]:
    return [float((z.argmax(-1) == data.labels).float().mean()) for z in predict(net, data, prepare, device)]

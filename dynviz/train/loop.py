"""One training loop for every recipe that takes gradient steps.

SGD with Nesterov momentum under a one-cycle schedule (Smith & Topin, 2019):
short budgets of epochs are what a 2-core CPU can afford, and one-cycle gets
the most out of them. Fixed seeds; a checkpoint after every epoch, from which
``--resume`` continues exactly (model, optimiser, schedule, random state);
progress with an ETA on stderr. On CPUs with bf16 units (and on CUDA) the
forward pass runs under bf16 autocast, in channels-last layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dynviz.data import LabelledFile, labelled_files
from dynviz.models.gates import GatedOutput
from dynviz.runtime import compiling_enabled

CHECKPOINTS = Path(os.environ.get("DYNVIZ_CHECKPOINTS", Path.home() / ".cache" / "dynviz" / "checkpoints"))
"""Where training checkpoints go: outside the work tree, so that a fresh checkout resumes a stopped run."""

LossFunction = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]
"""(logits of every exit, labels) → scalar loss."""
Regularizer = Callable[[Any, float], torch.Tensor]
"""(a dynamic network's training output, the share of training done) → a penalty on its decisions (the
execution-rate loss, DynConv's annealed sparsity criterion, the experts' load balance)."""


ADAPTABLE = ("none", "norms", "backbone")


@dataclass(frozen=True)
class TrainOptions:
    """What ``python -m dynviz train`` passes to a recipe."""

    data: Path | None
    epochs: int | None = None
    """None: the recipe's own number."""
    device: str = "cpu"
    resume: bool = False
    photos: tuple[Path, ...] = ()
    """Folders of more photos: recipes that distil learn from all of them (a teacher labels each view), recipes
    that calibrate from those with a known ImageNet label; never from a labelled image of a test half."""
    adapt: str = "none"
    """Recipes that put decision units on a pretrained network: what of that network learns with them (at a low
    rate, held near its weights): "none" keeps it as it is, "norms" its BatchNorm scales and shifts, "backbone"
    all its weights (:data:`ADAPTABLE`)."""
    compile: bool = False
    """CIFAR recipes on a CPU: run the training step through torch.compile, as they always do on a GPU."""


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A path beside ``path`` to write to, which replaces ``path`` in one step once written: a run killed while
    saving (a session's end kills every process) leaves the last whole file, never a truncated one that
    ``--resume`` could not read."""
    partial = path.with_name(path.name + ".partial")
    yield partial
    os.replace(partial, path)


def trained_seconds(checkpoint: Path) -> float | None:
    """The training time ``checkpoint`` holds, summed over every run that resumed it (None where it has none)."""
    if not checkpoint.exists():
        return None
    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("seconds")


def machine_description() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()} CPU, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def require_data(options: TrainOptions, what: str) -> Path:
    if options.data is None:
        raise SystemExit(f"this recipe needs --data: {what}")
    return options.data


def calibration_files(options: TrainOptions, class_keys: tuple[tuple[str, ...], ...]) -> list[LabelledFile]:
    """The labelled calib halves of ``--data`` (the ImageNet sample) and of the ``--photos`` that have labels:
    what temperatures and thresholds are fitted on."""
    files = labelled_files(
        require_data(options, "the ImageNet sample folder (its calib half is used)"), class_keys, "calib"
    )
    for folder in options.photos:
        with contextlib.suppress(FileNotFoundError):  # a folder of photos without labels
            files += labelled_files(folder, class_keys, split="calib")
    return files


@dataclass(frozen=True)
class Schedule:
    epochs: int
    batch_size: int = 128
    peak_lr: float = 0.1
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.15
    seed: int = 0
    compile: bool = False
    """Run the forward pass through torch.compile where a compiler is present (:func:`compiled`)."""
    pretrained_lr_scale: float = 1.0
    """The learning rate of a ``pretrained`` part (see :func:`fit`), as a share of the schedule's."""
    pretrained_pull: float = 0.0
    """α of the L2-SP pull on a ``pretrained`` part toward its starting weights."""


@dataclass(frozen=True)
class TensorSet:
    """Images as uint8 [N, C, H, W] with int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def exit_logits(output: Any) -> list[torch.Tensor]:
    """A network's output as a list of exits: a static network has one, and so has a dynamic one whose
    training output carries its decisions beside its ``logits`` (gates, routings)."""
    if hasattr(output, "logits"):
        return [output.logits]
    return list(output) if isinstance(output, (list, tuple)) else [output]


def parameter_groups(net: nn.Module, schedule: Schedule, pretrained: nn.Module | None = None) -> list[dict]:
    """Weight decay on the weights of convolutions and linear layers only: decaying BatchNorm's scales and
    shifts and the biases only fights the normalisation (Goyal et al., 2017; He et al., "Bag of tricks", 2019).
    A submodule with an ``lr_scale`` attribute learns at that share of the rate (DCN's offset predictors).
    A ``pretrained`` part learns at its own rate and without decay: the pull toward its starting weights takes
    the place of a pull toward zero."""
    kept = {id(p) for p in pretrained.parameters()} if pretrained is not None else set()
    learnt = [p for p in net.parameters() if p.requires_grad and id(p) not in kept]
    scale_of = {id(p): m.lr_scale for m in net.modules() if hasattr(m, "lr_scale") for p in m.parameters()}
    groups = []
    for scale in sorted({scale_of.get(id(p), 1.0) for p in learnt}, reverse=True):
        at_scale = [p for p in learnt if scale_of.get(id(p), 1.0) == scale]
        groups += [
            {"params": [p for p in at_scale if p.ndim > 1], "weight_decay": schedule.weight_decay, "lr_scale": scale},
            {"params": [p for p in at_scale if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": scale},
        ]
    if pretrained is not None:
        tuned = [p for p in pretrained.parameters() if p.requires_grad]
        groups.append({"params": tuned, "weight_decay": 0.0, "lr_scale": schedule.pretrained_lr_scale})
    return [group for group in groups if group["params"]]


class WeightPull:
    """L2-SP (Li, Grandvalet & Davoine, ICML 2018): fine-tuned weights w stay near their pretrained values w⁰,

        Ω(w) = (α / 2) · ‖w − w⁰‖²,

    so that a few thousand images adapt a network without making it forget what millions taught it."""

    def __init__(self, module: nn.Module, strength: float):
        self.strength = strength
        self.pairs = [(p, p.detach().clone()) for p in module.parameters() if p.requires_grad]

    def __call__(self) -> torch.Tensor:
        return self.strength / 2 * sum(((p - start) ** 2).sum() for p, start in self.pairs)


def autocast(device: str):
    bf16 = device == "cuda" or torch.backends.mkldnn.is_available() and torch.cpu._is_avx512_bf16_supported()
    return torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)


Prepare = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
"""(uint8 batch, generator) → the network's float input: augmented with a generator, only normalised with None."""


def compiled(net: nn.Module, compile: bool) -> Callable[..., object]:
    """``net``'s forward through torch.compile (inductor's C++ backend) where asked and possible, else ``net``.
    A part that fails to compile runs eagerly instead of stopping the run (dynamo's ``suppress_errors``)."""
    if not (compile and compiling_enabled()):
        return net
    torch._dynamo.config.suppress_errors = True
    return torch.compile(net)


def training_layout(net: nn.Module) -> torch.memory_format:
    """Channels-last, the faster layout for this project's CIFAR convolutions on the CPU (ResNet-56 and MSDNet
    train about a quarter faster in it), except for a network with a layer that declares ``channels_last =
    False``: one that regroups a batch by image (CondConv's per-image kernels as one grouped convolution) or
    samples it at points (DCN), which copies out of channels-last and back at every call and trains about a
    fifth slower in it (bench/train_speed.py)."""
    if any(getattr(m, "channels_last", True) is False for m in net.modules()):
        return torch.contiguous_format
    return torch.channels_last


@dataclass
class TrainingStep:
    """One optimisation step of the shared loop: augment, forward under autocast, loss, backward, update.
    ``fit`` runs it; bench/train_speed.py times it."""

    net: nn.Module
    loss_function: LossFunction
    prepare: Prepare
    schedule: Schedule
    total_steps: int
    device: str = "cpu"
    regularizer: Regularizer | None = None
    teacher: nn.Module | None = None
    pretrained: nn.Module | None = None

    def __post_init__(self) -> None:
        self.layout = training_layout(self.net)
        self.net.to(self.device, memory_format=self.layout)
        if self.teacher is not None:
            self.teacher.to(self.device, memory_format=self.layout).eval()
        self.pull = None
        if self.pretrained is not None and self.schedule.pretrained_pull > 0:
            self.pull = WeightPull(self.pretrained, self.schedule.pretrained_pull)
        self.forward = compiled(self.net, self.schedule.compile)
        groups = parameter_groups(self.net, self.schedule, self.pretrained)
        self.optimizer = torch.optim.SGD(groups, lr=self.schedule.peak_lr, momentum=0.9, nesterov=True)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            [self.schedule.peak_lr * group.get("lr_scale", 1.0) for group in groups],
            total_steps=self.total_steps,
            pct_start=self.schedule.warmup_fraction,
            div_factor=10,
            final_div_factor=100,
        )

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, object]:
        """One step on a uint8 batch already on the device; returns (loss, the network's output)."""
        inputs = self.prepare(images, generator).contiguous(memory_format=self.layout)
        targets = labels
        with autocast(self.device):
            output = self.forward(inputs)
            if self.teacher is not None:
                with torch.no_grad():
                    targets = self.teacher(inputs).float()
        loss = self.loss_function([z.float() for z in exit_logits(output)], targets)
        if self.regularizer is not None:
            loss = loss + self.regularizer(output, self.scheduler.last_epoch / self.total_steps)
        if self.pull is not None:
            loss = loss + self.pull()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss, output


def fit(
    net: nn.Module,
    loss_function: LossFunction,
    train: TensorSet,
    validation: TensorSet,
    prepare: Prepare,
    schedule: Schedule,
    checkpoint: Path,
    device: str = "cpu",
    resume: bool = False,
    regularizer: Regularizer | None = None,
    teacher: nn.Module | None = None,
    pretrained: nn.Module | None = None,
) -> list[list[float]]:
    """Train ``net`` in place; returns the validation accuracy of each exit after each epoch (the last
    entry is the trained network's).

    A gated network's decisions are also penalised by ``regularizer``. With a
    ``teacher``, the loss's targets are the teacher's logits on the very same
    augmented batch instead of the labels (distillation as function matching).
    A ``pretrained`` part of ``net`` fine-tunes gently: at the schedule's
    ``pretrained_lr_scale`` of its rate, pulled toward its starting weights
    (:class:`WeightPull`).
    ``--resume`` continues from the checkpoint after the last finished epoch
    exactly as if the run had not stopped (weights, optimiser, schedule, random
    state and the validation history)."""
    torch.manual_seed(schedule.seed)
    generator = torch.Generator().manual_seed(schedule.seed)
    steps_per_epoch = len(train) // schedule.batch_size
    step = TrainingStep(
        net,
        loss_function,
        prepare,
        schedule,
        schedule.epochs * steps_per_epoch,
        device,
        regularizer,
        teacher,
        pretrained,
    )
    # Every image on the device once: a GPU would otherwise wait for the host at every batch.
    images, labels = train.images.to(device), train.labels.to(device)
    first_epoch, history = 0, []
    state = torch.load(checkpoint, map_location="cpu", weights_only=True) if resume and checkpoint.exists() else None
    # A field added to Schedule since the checkpoint was made reads as its default.
    if state is not None and Schedule(**state["schedule"]) != schedule:
        print(f"{checkpoint} was made with another schedule; starting over", file=sys.stderr)
        state = None
    if state is not None:  # loading moves tensors to the device
        net.load_state_dict(state["net"])
        step.optimizer.load_state_dict(state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first_epoch, history = state["epoch"] + 1, state["history"]
        print(f"resumed from {checkpoint} after epoch {first_epoch}", file=sys.stderr)
    trained_before = state.get("seconds", 0.0) if state is not None else 0.0
    start, steps_done = time.perf_counter(), 0
    steps_left = (schedule.epochs - first_epoch) * steps_per_epoch
    for epoch in range(first_epoch, schedule.epochs):
        net.train()
        order = torch.randperm(len(train), generator=generator).to(device)
        for index in range(steps_per_epoch):
            batch = order[index * schedule.batch_size : (index + 1) * schedule.batch_size]
            loss, output = step(images[batch], labels[batch], generator)
            steps_done += 1
            if steps_done % 50 == 0 or index == steps_per_epoch - 1:
                elapsed = time.perf_counter() - start
                eta = elapsed / steps_done * (steps_left - steps_done)
                rate = ""
                if isinstance(output, GatedOutput):  # what the decisions spend is half of what is being learnt
                    rate = f"rate {torch.stack([g.float().mean() for g in output.gates]).mean().item():.2f}  "
                print(
                    f"epoch {epoch + 1}/{schedule.epochs}  step {index + 1}/{steps_per_epoch}  "
                    f"loss {loss.item():.3f}  {rate}lr {step.scheduler.get_last_lr()[0]:.4f}  "
                    f"{steps_done * schedule.batch_size / elapsed:.0f} img/s  ETA {eta / 60:.1f} min",
                    file=sys.stderr,
                    flush=True,
                )
        history.append(validation_accuracy(net, validation, prepare, device))
        print(f"epoch {epoch + 1}: validation accuracy per exit {[round(a, 4) for a in history[-1]]}", file=sys.stderr)
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(checkpoint) as partial:
            torch.save(
                {
                    "net": net.state_dict(),
                    "optimizer": step.optimizer.state_dict(),
                    "scheduler": step.scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch": epoch,
                    "history": history,
                    "schedule": dataclasses.asdict(schedule),
                    "seconds": trained_before + time.perf_counter() - start,
                },
                partial,
            )
    net.to("cpu", memory_format=torch.contiguous_format).eval()
    if teacher is not None:
        teacher.to("cpu", memory_format=torch.contiguous_format)
    return history or [validation_accuracy(net, validation, prepare, "cpu")]


@torch.no_grad()
def predict(
    net: nn.Module,
    data: TensorSet,
    prepare: Prepare,
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

"""What the CIFAR-10 models share: the ten classes and the 32×32 view of a photo.

A CIFAR network sees 32×32 pixels. A photo of any other size is cut to its
central square and resized (with antialiasing) to 32×32; the trace notes it, so
the page can say so and show the view the network really saw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import macs_by_module, module_macs, stopwatch
from dynviz.inputs import REDUCING_GAP, InputImage
from dynviz.models.base import (
    Knob,
    Memo,
    NetworkInput,
    collecting,
    knob_values,
    prediction_from_probabilities,
)
from dynviz.trace import Box, Cost, Trace
from dynviz.zoo import load_weights

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_SIZE = 32
CIFAR_LICENSE = "Weights: trained by this project (same license as the code)"
FROM_SCRATCH = "CIFAR-10 train split less 5,000 validation images; measured on the 10,000 test images"


def about_cifar(title: str, family: str, summary: str, papers: tuple[str, ...]) -> About:
    """The card's description of a CIFAR-10 network trained here from scratch with the shared recipe."""
    return About(title, family, summary, papers, CIFAR_LICENSE, FROM_SCRATCH)


MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, 32, 32] → the float input every CIFAR model here was trained on."""
    return (pixels.float() / 255.0 - MEAN.to(pixels.device)) / STD.to(pixels.device)


@dataclass(frozen=True)
class CifarView:
    pixels: Image.Image
    """The 32×32 RGB image the network sees."""
    box: Box
    """The part of the input it was cut from, in input pixels."""
    note: str | None
    """Set when the input had to be cropped or resized."""

    def tensor(self) -> torch.Tensor:
        """The network's input [1, 3, 32, 32], channels-last: the layout CIFAR networks are served in."""
        array = np.asarray(self.pixels, dtype=np.uint8).transpose(2, 0, 1).copy()
        return normalize(torch.from_numpy(array).unsqueeze(0)).contiguous(memory_format=torch.channels_last)


def cifar_view(image: InputImage) -> CifarView:
    width, height = image.size
    side = min(width, height)
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    if (width, height) == (CIFAR_SIZE, CIFAR_SIZE):
        return CifarView(image.image, box, None)
    pixels = image.image.resize((CIFAR_SIZE, CIFAR_SIZE), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
    cropped = "its central square " if width != height else ""
    return CifarView(
        pixels, box, f"CIFAR-10 model: {cropped}resized from {width}×{height} to {CIFAR_SIZE}×{CIFAR_SIZE} pixels."
    )


def grid_to_input(points: torch.Tensor, side: int, box: Box) -> torch.Tensor:
    """Points (x, y) [..., 2] in the index coordinates of a ``side`` × ``side`` feature map over the view
    (0 is the centre of the first cell, fractions allowed) → the input image's pixels (``box`` is the view's)."""
    cell = (box[2] - box[0]) / side
    return torch.tensor(box[:2], dtype=points.dtype) + (points + 0.5) * cell


def cifar_input(image: InputImage) -> NetworkInput:
    view = cifar_view(image)
    return NetworkInput(view.tensor(), view.box, image.notes + ((view.note,) if view.note else ()))


class Cifar10Classifier:
    """Mixin for models answering in CIFAR-10's ten classes."""

    labels = CIFAR10_CLASSES

    @staticmethod
    def served(net: nn.Module) -> nn.Module:
        """``net`` ready for inference, its weights channels-last like :func:`cifar_input`'s tensors: the
        layout is faster for 32×32 maps with 16–64 channels at batch size 1, and one layout for the static and
        the dynamic networks keeps their latencies comparable (a convolution given a channels-last input and
        contiguous weights would also copy its weights at every call)."""
        return net.eval().to(memory_format=torch.channels_last)

    @staticmethod
    def class_keys() -> tuple[tuple[str, ...], ...]:
        return tuple((name,) for name in CIFAR10_CLASSES)


class TrainedOnCifar(Cifar10Classifier):
    """A CIFAR-10 model whose network comes from ``network(**config)`` and, pretrained, from this project's
    weights. Subclasses set ``name`` and ``network`` and take the network in their constructor."""

    network: Callable[..., nn.Module]

    @classmethod
    def build(cls, pretrained: bool = True, **config):
        """With the bundled weights; or untrained in ``config`` (``network``'s arguments, e.g. a tiny one)."""
        net = cls.network(**config)
        if pretrained:
            net.load_state_dict(load_weights(cls.name)[0])
        return cls(net)


class DecidingNetwork(TrainedOnCifar, nn.Module):
    """A CIFAR-10 network whose layers decide as they run (offsets, kernels, experts: survey §3.3): one forward
    pass, and the decisions its layers hand over (:func:`~dynviz.models.base.collecting`) become the trace's
    records. Subclasses set ``about``, ``default_point`` and ``baselines``, give the network and its static twin
    to the constructor, and say how decisions become records (:meth:`records`) and what they cost
    (:meth:`spent`; by default :attr:`breakdown`, the same for every input)."""

    def __init__(self, net: nn.Module, twin: nn.Module):
        super().__init__()
        self.net = self.served(net)
        probe = torch.zeros(1, 3, CIFAR_SIZE, CIFAR_SIZE)
        with torch.inference_mode(), collecting():
            self.part_flops = macs_by_module(self.net, lambda: self.net(probe))
            """Every submodule's cost on one image, by qualified name ("" for the whole network)."""
        self.flops = self.part_flops[""]
        self.twin_flops = module_macs(twin, tuple(probe.shape))
        self.breakdown = {"network": self.flops}

    def named(self, kind: type) -> list[str]:
        """The qualified names of the network's submodules of ``kind``."""
        return [name for name, module in self.net.named_modules() if isinstance(module, kind)]

    def offset_breakdown(self, kind: type, rest: str, sampled: str) -> dict[str, float]:
        """The cost split for layers of ``kind`` that sample where an ``offset`` predictor says: the rest of the
        network, the sampling layers themselves, and their offset predictors."""
        layers = self.named(kind)
        offsets = sum(self.part_flops[f"{name}.offset"] for name in layers)
        sampling = sum(self.part_flops[name] for name in layers) - offsets
        return {rest: self.flops - sampling - offsets, sampled: sampling, "offset predictors": offsets}

    def knobs(self) -> list[Knob]:
        return []

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {self.default_point: OperatingPoint(self.default_point, {})}

    def run(self, x: torch.Tensor, settings: dict[str, float]) -> torch.Tensor:
        return self.net(x)

    def records(self, decisions: list[tuple[nn.Module, Any]], box: Box) -> tuple:
        raise NotImplementedError

    def spent(self, records: tuple) -> tuple[float, dict[str, float]]:
        """(multiply–accumulates, by part) of a pass that decided ``records``: by default the same for every input."""
        return self.flops, self.breakdown

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        settings = knob_values(self.knobs(), settings)
        view = cifar_view(image)
        with stopwatch() as watch, collecting() as decisions:
            logits = self.run(view.tensor(), settings)[0]
        records = self.records(decisions, view.box)
        flops, breakdown = self.spent(records)
        prediction = prediction_from_probabilities(logits.softmax(-1), self.labels)
        notes = image.notes + ((view.note,) if view.note else ())
        cost = Cost(flops, self.twin_flops, breakdown, watch.ms)
        return Trace(self.name, image.name, image.size, prediction, cost, records, settings, notes)

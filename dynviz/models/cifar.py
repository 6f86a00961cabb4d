"""What the CIFAR-10 models share: the ten classes and the 32×32 view of a photo.

A CIFAR network sees 32×32 pixels. A photo of any other size is cut to its
central square and resized (with antialiasing) to 32×32; the trace notes it, so
the page can say so and show the view the network really saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from dynviz.cards import About
from dynviz.inputs import REDUCING_GAP, InputImage
from dynviz.models.base import NetworkInput
from dynviz.trace import Box

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

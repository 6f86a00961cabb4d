"""What every bundled model shares: knobs, class names, predictions."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import torch

from dynviz.inputs import InputImage
from dynviz.trace import Prediction, TopClass, Trace

Memo = dict
"""Parts a model already computed for one input (e.g. cascade stages), so that a
new knob setting re-decides without recomputing them. Owned by the caller."""


@dataclass(frozen=True)
class Knob:
    """A decision knob, with the range a slider may offer."""

    name: str
    label: str
    low: float
    high: float
    step: float
    default: float
    help: str


class DynamicModel(Protocol):
    """What the zoo hands out: every page, the CLI and the evaluation use only this."""

    name: str
    about: Any
    """The card's description of the method (:class:`dynviz.zoo.About`)."""
    baselines: tuple[str, ...]
    """Static zoo models evaluated beside it, on the same images, for its card."""

    def knobs(self) -> list[Knob]: ...

    def operating_points(self) -> dict[str, dict[str, float]]: ...

    def class_keys(self) -> tuple[tuple[str, ...], ...]: ...

    def analyze(
        self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None
    ) -> Trace: ...


@functools.cache
def _imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(synset, label) per ImageNet-1k index, from the bundled class list."""
    text = resources.files("dynviz.assets").joinpath("imagenet_classes.tsv").read_text()
    return tuple((row[1], row[2].replace("_", " ")) for row in (line.split("\t") for line in text.splitlines()[1:]))


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    return tuple(label for _, label in _imagenet_classes())


def prediction_from_probabilities(probabilities: torch.Tensor, labels: tuple[str, ...], k: int = 5) -> Prediction:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return Prediction(tuple(TopClass(int(i), labels[int(i)], float(v)) for v, i in zip(values, indices)))


class ImageNetClassifier:
    """Mixin for models answering in the 1000 ImageNet-1k classes."""

    @staticmethod
    def class_keys() -> tuple[tuple[str, ...], ...]:
        return _imagenet_classes()

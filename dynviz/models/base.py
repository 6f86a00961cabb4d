"""What every bundled model shares: knobs, class names, predictions, the run slot."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import torch
from torch import nn

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
def imagenet_labels() -> tuple[str, ...]:
    text = resources.files("dynviz.assets").joinpath("imagenet_classes.tsv").read_text()
    return tuple(line.split("\t")[2].replace("_", " ") for line in text.splitlines()[1:])


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    text = resources.files("dynviz.assets").joinpath("imagenet_classes.tsv").read_text()
    return tuple(line.split("\t")[1] for line in text.splitlines()[1:])


def prediction_from_probabilities(probabilities: torch.Tensor, labels: tuple[str, ...], k: int = 5) -> Prediction:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return Prediction(tuple(TopClass(int(i), labels[int(i)], float(v)) for v, i in zip(values, indices)))


# Several browser sessions share one model object and two cores: inferences queue
# for a slot rather than thrash, and each uses a bounded number of torch threads.
MAX_CONCURRENT = int(os.environ.get("DYNVIZ_MAX_CONCURRENT", "1"))
_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
torch.set_num_threads(max(1, (os.cpu_count() or 1) // MAX_CONCURRENT))


@contextmanager
def inference_slot() -> Iterator[None]:
    """Wait for a free slot, then run read-only: inference mode is entered in this thread."""
    with _slots, torch.inference_mode():
        yield


_locks: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


@contextmanager
def exclusive(model: nn.Module) -> Iterator[None]:
    """Hold the model alone, for work that attaches hooks (captum, FlopCounterMode)."""
    with _locks_guard:
        lock = _locks.setdefault(model, threading.Lock())
    with _slots, lock:
        yield


class ImageNetClassifier:
    """Mixin for models answering in the 1000 ImageNet-1k classes."""

    @staticmethod
    def class_keys() -> tuple[tuple[str, ...], ...]:
        return tuple(zip(imagenet_synsets(), imagenet_labels()))

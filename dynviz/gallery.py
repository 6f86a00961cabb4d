"""Easy and hard inputs: a labelled set run through an early-exit model, grouped by the exit it took.

The gallery is the dataset-level view of the early-exit decision (MSDNet, §5:
"easy" images leave at the first classifier, "hard" ones go to the last). The
bundled set is 500 CIFAR-10 test images (50 per class); a user may point it at
a full test split. Models answering in other classes (the ImageNet cascade) use
the bundled example photos, unlabelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dynviz.data import labelled_images
from dynviz.inputs import InputImage, load_image
from dynviz.models.base import DynamicModel
from dynviz.models.cifar import Cifar10Classifier
from dynviz.trace import ExitRecord, Trace

CIFAR_SAMPLE = "cifar10_sample"


@dataclass(frozen=True)
class GalleryItem:
    image: InputImage
    label: int | None
    """None for unlabelled photos."""


@dataclass(frozen=True)
class GalleryResult:
    item: GalleryItem
    trace: Trace

    @property
    def exit(self) -> int:
        return self.trace.answered_at.index

    @property
    def confidence(self) -> float:
        return self.trace.prediction.confidence

    @property
    def last_exit(self) -> int:
        return len(self.trace.records_of(ExitRecord)) - 1

    @property
    def correct(self) -> bool | None:
        return None if self.item.label is None else self.trace.prediction.index == self.item.label


def bundled_cifar_sample() -> Path:
    return Path(str(resources.files("dynviz.assets").joinpath(CIFAR_SAMPLE)))


def labelled_gallery(root: Path, class_keys: tuple[tuple[str, ...], ...]) -> list[GalleryItem]:
    """The labelled images under ``root``: its test split where it has one (``test/`` or CIFAR's
    python batches), otherwise every image (the bundled sample)."""
    has_test_split = (root / "test").is_dir() or any(
        (b / "test_batch").is_file() for b in (root, root / "cifar-10-batches-py")
    )
    items = labelled_images(root, class_keys, "test" if has_test_split else "all")
    return [GalleryItem(item.load(), item.label) for item in items]


def default_gallery(model: DynamicModel, photos: Callable[[], Iterable[tuple[bytes, str]]]) -> list[GalleryItem]:
    """The bundled CIFAR-10 sample for CIFAR models; otherwise ``photos`` (bytes, name), unlabelled."""
    if model.class_keys() == Cifar10Classifier.class_keys():
        return labelled_gallery(bundled_cifar_sample(), model.class_keys())
    return [GalleryItem(load_image(data, name), None) for data, name in photos()]


def exhaustive_settings(model: DynamicModel) -> dict[str, float]:
    """Every exit threshold at its 'never' end, so that every exit is computed once for the memo."""
    return {knob.name: knob.high for knob in model.knobs()}


def run_gallery(
    model: DynamicModel,
    items: list[GalleryItem],
    settings: dict[str, float],
    analyze: Callable[[InputImage, dict[str, float]], Trace],
) -> list[GalleryResult]:
    """Decide every item under ``settings`` with ``analyze`` (the serving layer's, which keeps each input's
    memo): every exit is computed once per item, so new settings only re-decide."""
    results = []
    for item in items:
        analyze(item.image, exhaustive_settings(model))
        results.append(GalleryResult(item, analyze(item.image, settings)))
    return results


def by_exit(results: list[GalleryResult]) -> dict[int, list[GalleryResult]]:
    """Results grouped by the exit that answered, each group most confident first."""
    groups: dict[int, list[GalleryResult]] = {}
    for result in sorted(results, key=lambda r: (r.exit, -r.confidence)):
        groups.setdefault(result.exit, []).append(result)
    return groups


def exit_histogram(results: list[GalleryResult], labels: tuple[str, ...], exits: int) -> pd.DataFrame:
    """Counts of images per (true class, exit): rows are classes, columns exits 1..K."""
    counts = np.zeros((len(labels), exits), dtype=np.int64)  # pandas' cell assignment costs 20 µs an image
    for result in results:
        if result.item.label is not None:
            counts[result.item.label, result.exit] += 1
    return pd.DataFrame(counts, index=list(labels), columns=[f"exit {k + 1}" for k in range(exits)])


def easiest(results: list[GalleryResult], count: int) -> list[GalleryResult]:
    """Answered at the first exit, and right: most confident first."""
    easy = [r for r in results if r.exit == 0 and r.correct is not False]
    return sorted(easy, key=lambda r: -r.confidence)[:count]


def hardest(results: list[GalleryResult], count: int) -> list[GalleryResult]:
    """Wrong (most confidently wrong first), then answered only at the last exit (least confident first)."""
    wrong = sorted((r for r in results if r.correct is False), key=lambda r: -r.confidence)
    late = [r for r in results if r.correct is not False and 0 < r.exit == r.last_exit]
    late.sort(key=lambda r: r.confidence)
    return (wrong + late)[:count]


def exit_changes(before: list[GalleryResult], after: list[GalleryResult]) -> list[tuple[GalleryResult, GalleryResult]]:
    """The items whose exit differs between two operating points (same items, same order)."""
    return [(b, a) for b, a in zip(before, after) if b.exit != a.exit]

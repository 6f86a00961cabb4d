"""The easy-vs-hard gallery: grouping by exit, per-class histograms, extremes, exit changes."""

import functools

import pytest
import torch
from conftest import encode, pattern

from dynviz.gallery import (
    GalleryItem,
    bundled_cifar_sample,
    by_exit,
    easiest,
    exit_changes,
    exit_histogram,
    hardest,
    labelled_gallery,
    run_gallery,
)
from dynviz.inputs import load_image
from dynviz.models.cifar import CIFAR10_CLASSES, Cifar10Classifier
from dynviz.models.msdnet import MSDNet, MSDNetClassifier, MSDNetConfig
from dynviz.runtime import Server

EXITS = MSDNetConfig.tiny().exits


@pytest.fixture(scope="module")
def tiny() -> MSDNetClassifier:
    torch.manual_seed(1)
    return MSDNetClassifier(MSDNet(MSDNetConfig.tiny()), torch.ones(EXITS), {"p": (0.5,) * (EXITS - 1)}, "p")


@pytest.fixture(scope="module")
def items() -> list[GalleryItem]:
    return [GalleryItem(load_image(encode(pattern(32, 32, seed=i), "PNG"), f"{i}.png"), i % 10) for i in range(20)]


def serving(model):
    """A fresh serving layer's analyze for ``model``, as the app's gallery page passes it."""
    return functools.partial(Server().analyze, "tiny", model)


def thresholds(*taus: float) -> dict[str, float]:
    return {f"tau_{k + 1}": t for k, t in enumerate(taus)}


def test_the_bundled_sample_has_fifty_test_images_per_class():
    sample = labelled_gallery(bundled_cifar_sample(), Cifar10Classifier.class_keys())
    assert len(sample) == 500
    assert [sum(item.label == c for item in sample) for c in range(10)] == [50] * 10
    assert {item.image.size for item in sample} == {(32, 32)}


def test_images_are_grouped_by_the_exit_they_took(tiny, items):
    served = serving(tiny)
    results = run_gallery(tiny, items, thresholds(0.0, 1.0), served)  # everyone leaves at exit 1
    assert set(by_exit(results)) == {0}
    results = run_gallery(tiny, items, thresholds(1.0, 1.0), served)  # everyone goes to the last
    assert set(by_exit(results)) == {EXITS - 1}
    mixed = run_gallery(tiny, items, thresholds(sorted(r.confidence for r in results)[10], 1.0), served)
    groups = by_exit(mixed)
    assert sum(len(g) for g in groups.values()) == len(items)
    assert all(g == sorted(g, key=lambda r: -r.confidence) for g in groups.values())
    table = exit_histogram(mixed, CIFAR10_CLASSES, EXITS)
    assert table.values.sum() == len(items) and list(table.index) == list(CIFAR10_CLASSES)
    assert table["exit 1"].sum() == len(groups.get(0, []))


def test_easiest_are_right_at_the_first_exit_and_hardest_start_with_confident_mistakes(tiny, items):
    results = run_gallery(tiny, items, thresholds(0.2, 0.9), serving(tiny))
    for result in easiest(results, 5):
        assert result.exit == 0 and result.correct
    hard = hardest(results, 50)
    wrong = [r for r in hard if r.correct is False]
    assert hard[: len(wrong)] == wrong and wrong == sorted(wrong, key=lambda r: -r.confidence)
    assert all(r.exit == EXITS - 1 for r in hard[len(wrong) :])


def test_exit_changes_lists_only_images_whose_exit_moved(tiny, items):
    served = serving(tiny)
    early = run_gallery(tiny, items, thresholds(0.0, 1.0), served)
    late = run_gallery(tiny, items, thresholds(1.0, 1.0), served)
    assert len(exit_changes(early, late)) == len(items)
    assert exit_changes(early, early) == []

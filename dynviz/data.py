"""Labelled image folders for evaluation and calibration.

Two layouts: class-named subfolders (``<root>/<class>/*.jpg``, class given by
its name or ImageNet synset), or ImageNet files named ``<synset>_*.JPEG``.
The 500-image ImageNet sample is split in two halves by a hash of each file
name: ``calib`` (temperatures, thresholds, distillation) and ``test`` (every
figure on a card), so that no figure is measured on what was fitted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dynviz.inputs import IMAGE_SUFFIXES

SPLITS = ("all", "calib", "test")


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: int


def split_of(path: Path) -> str:
    return "calib" if int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 2 == 0 else "test"


def labelled_files(root: str | Path, class_keys: tuple[tuple[str, ...], ...], split: str = "all") -> list[LabelledFile]:
    """Every image under ``root`` whose class is known, sorted by path.

    ``class_keys[i]`` holds the names a folder or file prefix may use for class i
    (e.g. its synset and its label)."""
    lookup = {key.lower(): index for index, keys in enumerate(class_keys) for key in keys}
    files = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        key = path.parent.name.lower() if path.parent.name.lower() in lookup else path.name.split("_")[0].lower()
        if key in lookup and split in ("all", split_of(path)):
            files.append(LabelledFile(path, lookup[key]))
    if not files:
        raise FileNotFoundError(f"{root}: no labelled images (class subfolders or <synset>_*.JPEG files)")
    return files

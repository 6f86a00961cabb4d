"""Labelled image sets for evaluation, calibration and training.

Three layouts are read:

- class-named subfolders (``<root>/<class>/*.jpg``, class given by its name or
  ImageNet synset), optionally under a split folder (``<root>/{train,test}/…``,
  the layout of the CIFAR-10 JPEG archive);
- ImageNet files named ``<synset>_*.JPEG`` in one folder;
- CIFAR-10's python batches (``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``);
- a folder of labelled clips with their ``labels.json`` (made by ``python -m dynviz make-clips``).

A flat folder with no split folders (the 500-image ImageNet sample) is split in
two halves by a hash of each file name: ``calib`` (temperatures, thresholds,
distillation) and ``test`` (every figure on a card), so that no figure is
measured on what was fitted.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dynviz.clips import LABELS_FILE, make_clips, read_labels
from dynviz.inputs import IMAGE_SUFFIXES, InputError, InputImage, load_image_file
from dynviz.video import InputVideo, load_input_file

SPLITS = ("all", "calib", "test", "train")
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


@dataclass(frozen=True)
class LabelledFile:
    path: Path
    label: int

    @property
    def name(self) -> str:
        return str(self.path)

    def load(self) -> InputImage:
        return load_image_file(self.path)


@dataclass(frozen=True)
class LabelledArray:
    """One image of a python-pickled CIFAR batch."""

    name: str
    label: int
    pixels: np.ndarray
    """[32, 32, 3] uint8."""

    def load(self) -> InputImage:
        return InputImage(self.name, Image.fromarray(self.pixels), hashlib.sha256(self.pixels.tobytes()).hexdigest())


@dataclass(frozen=True)
class LabelledClip:
    """A clip with its class and, for clips whose content changes, each frame's class."""

    path: Path
    label: int
    frame_labels: tuple[int, ...]
    cuts: tuple[int, ...]

    @property
    def name(self) -> str:
        return str(self.path)

    def load(self) -> InputVideo:
        video = load_input_file(self.path)
        if not isinstance(video, InputVideo):
            raise InputError(f"{self.path}: an image, where a clip was expected")
        return video


LabelledImage = LabelledFile | LabelledArray | LabelledClip


def split_of(path: Path) -> str:
    return "calib" if int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 2 == 0 else "test"


def labelled_images(
    root: str | Path, class_keys: tuple[tuple[str, ...], ...], split: str = "all"
) -> list[LabelledImage]:
    """The labelled images of ``split`` under ``root``, in a fixed order.

    ``class_keys[i]`` holds the names a folder or file prefix may use for class i
    (e.g. its synset and its label)."""
    root = Path(root)
    if (root / LABELS_FILE).is_file():
        return [LabelledClip(root / c.file, c.label, c.frame_labels, c.cuts) for c in read_labels(root)]
    batches = next((b for b in (root / "cifar-10-batches-py", root) if (b / "test_batch").is_file()), None)
    if batches is not None:
        parts = ("train", "test") if split == "all" else (split,)
        if any(part not in CIFAR_BATCHES for part in parts):
            raise ValueError(f"{root}: CIFAR python batches have the splits 'train' and 'test', not {split!r}")
        return [item for part in parts for item in read_cifar_batches(batches, part)]
    if split in ("train", "test") and (root / split).is_dir():
        return labelled_files(root / split, class_keys)
    return labelled_files(root, class_keys, split)


def class_of(path: Path, lookup: dict[str, int]) -> int | None:
    """The class a file's folder or ``<synset>_`` prefix names, if ``lookup`` knows it."""
    key = path.parent.name.lower() if path.parent.name.lower() in lookup else path.name.split("_")[0].lower()
    return lookup.get(key)


def class_lookup(class_keys: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    return {key.lower(): index for index, keys in enumerate(class_keys) for key in keys}


def training_photos(folders: list[Path], class_keys: tuple[tuple[str, ...], ...]) -> list[Path]:
    """Every image below ``folders`` that a recipe may learn from, sorted: all of them but the labelled ones of
    the ``test`` half, so that no figure measured on a test half (the ImageNet sample's, the validation
    images') is measured on an image a model was fitted to, whichever folder brought it."""
    lookup = class_lookup(class_keys)
    return sorted(
        path
        for folder in folders
        for path in Path(folder).rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and (class_of(path, lookup) is None or split_of(path) == "calib")
    )


def labelled_files(root: str | Path, class_keys: tuple[tuple[str, ...], ...], split: str = "all") -> list[LabelledFile]:
    """Every image under ``root`` whose class is known, sorted by path (``split``: a hash half, or all)."""
    lookup = class_lookup(class_keys)
    files = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label = class_of(path, lookup)
        if label is not None and split in ("all", split_of(path)):
            files.append(LabelledFile(path, label))
    if not files:
        raise FileNotFoundError(f"{root}: no labelled images (class subfolders or <synset>_*.JPEG files)")
    return files


def read_cifar_batches(folder: Path, part: str) -> list[LabelledArray]:
    """CIFAR-10's python batches (pickled dicts of uint8 rows), as labelled images."""
    items = []
    for batch_name in CIFAR_BATCHES[part]:
        with open(folder / batch_name, "rb") as handle:
            # The batches are the dataset authors' own pickle format: read only from a path the user named.
            batch = pickle.load(handle, encoding="bytes")
        pixels = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        items += [
            LabelledArray(f"{batch_name}#{i}", int(label), np.ascontiguousarray(pixels[i]))
            for i, label in enumerate(batch[b"labels"])
        ]
    return items


CLIP_SLIDESHOWS = 60
"""Slideshows made beside the shots when clips are made from a photo folder."""


def labelled_clips_from_photos(
    root: str | Path,
    class_keys: tuple[tuple[str, ...], ...],
    split: str,
    out: Path,
    slideshows: int = CLIP_SLIDESHOWS,
) -> list[LabelledClip]:
    """Clips made from the labelled photos of ``split`` under ``root`` (:mod:`dynviz.clips`), written to ``out``:
    a shot of every photo and ``slideshows`` slideshows, the same for the same photos and split."""
    photos = [(item.path, item.label) for item in labelled_files(root, class_keys, split)]
    seed = int(hashlib.sha256(split.encode()).hexdigest(), 16) % 2**32
    make_clips(photos, out, slideshows, seed)
    return labelled_images(out, class_keys)

"""Labelled clips made from photos, reproducibly: the video data of this project.

No video data set is reachable offline, so clips are made from labelled photos, two kinds:

- a **shot**: a slow pan or zoom over one photo (one label for the clip);
- a **slideshow**: 2–5 shots of different photos joined by hard cuts (a label per frame, the cuts known).

Every frame is then degraded a little, differently (sensor noise, a varying blur, a slow drift of
brightness), so that consecutive frames are never identical. A clip is a pure function of its photos and
its seed. ``python -m dynviz make-clips`` writes a folder of clips and their labels (``labels.json``), which
``eval`` reads; the bundled example clips are made by the same code (``--examples``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFilter

from dynviz.trace import build

SIZE = (320, 240)
FPS = 24
SHOT_FRAMES = 48
LABELS_FILE = "labels.json"
FOURCC = {".webm": "VP80", ".mp4": "mp4v", ".avi": "MJPG"}
"""What OpenCV's wheel writes for each container: VP8 WebM plays in every browser; MPEG-4 Part 2 writes fast."""


@dataclass(frozen=True)
class ClipLabels:
    """One made clip, as ``labels.json`` lists it."""

    file: str
    label: int
    """The clip's class: its photo's, or for a slideshow the class of most frames."""
    frame_labels: tuple[int, ...]
    cuts: tuple[int, ...]
    """Frames that start a new shot (after the first)."""
    sources: tuple[str, ...]
    """The photos it was made from, by file name."""


PAN, ZOOM = "pan", "zoom"


def shot(
    photo: Image.Image, frames: int, size: tuple[int, int], rng: random.Random, motion: str | None = None
) -> list[np.ndarray]:
    """A slow pan (a window sliding across the photo) or zoom (a window closing in on a point), at ``size``;
    which one, at random unless ``motion`` says."""
    width, height = photo.size
    aspect = size[0] / size[1]
    full_w = min(width, height * aspect)
    motion = motion or rng.choice((PAN, ZOOM))
    if motion == PAN:  # a window of 70–90% of the photo moving from one side towards the other
        scale = rng.uniform(0.7, 0.9)
        w, h = full_w * scale, full_w * scale / aspect
        start = (rng.uniform(0, width - w), rng.uniform(0, height - h))
        end = (rng.uniform(0, width - w), rng.uniform(0, height - h))
        boxes = [(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t, w, h) for t in _ramp(frames)]
    else:  # zoom: from the whole frame to 60–80% of it, about a point near the middle
        final = rng.uniform(0.6, 0.8)
        cx, cy = width / 2 + rng.uniform(-0.1, 0.1) * width, height / 2 + rng.uniform(-0.1, 0.1) * height
        boxes = []
        for t in _ramp(frames):
            w = full_w * (1 - (1 - final) * t)
            h = w / aspect
            boxes.append((min(max(cx - w / 2, 0), width - w), min(max(cy - h / 2, 0), height - h), w, h))
    return [
        np.asarray(photo.resize(size, Image.Resampling.BILINEAR, box=(x, y, x + w, y + h), reducing_gap=2.0))
        for x, y, w, h in boxes
    ]


def _ramp(frames: int) -> list[float]:
    return [i / max(frames - 1, 1) for i in range(frames)]


def degrade(frames: list[np.ndarray], rng: random.Random, noise_level: float = 3.0) -> list[np.ndarray]:
    """Sensor noise (σ = ``noise_level`` grey levels), a blur that comes and goes, and a slow drift of
    brightness: no two frames alike."""
    noise = np.random.default_rng(rng.randrange(2**32))
    gain_start, gain_end = rng.uniform(0.85, 1.1), rng.uniform(0.9, 1.15)
    blur_phase = rng.uniform(0, 6.28)
    out = []
    for i, (t, frame) in enumerate(zip(_ramp(len(frames)), frames)):
        radius = max(0.0, 1.2 * math.sin(blur_phase + i / 7))
        image = Image.fromarray(frame)
        if radius > 0.2:
            image = image.filter(ImageFilter.GaussianBlur(radius))
        pixels = np.asarray(image, np.float32) * (gain_start + (gain_end - gain_start) * t)
        pixels += noise.normal(0, noise_level, pixels.shape)
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return out


def slideshow(
    photos: Sequence[Image.Image], size: tuple[int, int], rng: random.Random, frames_per_shot: int = SHOT_FRAMES
) -> tuple[list[np.ndarray], list[int]]:
    """Shots of each photo in turn, joined by hard cuts: the frames, and the frames that start a shot."""
    frames, cuts = [], []
    for k, photo in enumerate(photos):
        if k:
            cuts.append(len(frames))
        frames += degrade(shot(photo, rng.randint(frames_per_shot // 2, frames_per_shot), size, rng), rng)
    return frames, cuts


def write_clip(frames: Sequence[np.ndarray], path: Path, fps: float = FPS) -> None:
    """RGB frames to ``path`` (its suffix picks the codec, :data:`FOURCC`)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[path.suffix.lower()]), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write {path.suffix} here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def make_clips(
    photos: Sequence[tuple[Path, int]],
    out: Path,
    slideshows: int,
    seed: int = 0,
    suffix: str = ".mp4",
    size: tuple[int, int] = SIZE,
) -> list[ClipLabels]:
    """A shot of every photo, and ``slideshows`` slideshows of 2–5 photos drawn from them, written to ``out``
    with ``labels.json``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    clips = []

    def load(path: Path) -> Image.Image:
        return Image.open(path).convert("RGB")

    for i, (path, label) in enumerate(photos):
        frames = degrade(shot(load(path), SHOT_FRAMES, size, rng), rng)
        name = f"shot_{i:04d}{suffix}"
        write_clip(frames, out / name)
        clips.append(ClipLabels(name, label, (label,) * len(frames), (), (path.name,)))
    for i in range(slideshows):
        chosen = rng.sample(list(photos), min(len(photos), rng.randint(2, 5)))
        frames, cuts = slideshow([load(path) for path, _ in chosen], size, rng)
        starts = [0, *cuts, len(frames)]
        frame_labels = tuple(label for (_, label), a, b in zip(chosen, starts, starts[1:]) for _ in range(a, b))
        name = f"slideshow_{i:04d}{suffix}"
        write_clip(frames, out / name)
        majority = max(set(frame_labels), key=frame_labels.count)
        clips.append(ClipLabels(name, majority, frame_labels, tuple(cuts), tuple(path.name for path, _ in chosen)))
    (out / LABELS_FILE).write_text(json.dumps([asdict(clip) for clip in clips], indent=1))
    return clips


@dataclass(frozen=True)
class ExampleClip:
    """A bundled example clip: the example photos it is made of, one shot each."""

    file: str
    title: str
    photos: tuple[str, ...]
    motions: tuple[str, ...]


EXAMPLE_CLIPS = (
    ExampleClip("cat_pan.webm", "Chelsea the cat: a slow pan", ("cat.jpg",), (PAN,)),
    ExampleClip("espresso_zoom.webm", "Espresso cup: a zoom", ("espresso.jpg",), (ZOOM,)),
    ExampleClip(
        "slideshow.webm",
        "Cup, cat, rocket: two cuts",
        ("espresso.jpg", "cat.jpg", "rocket_launch.jpg"),
        (PAN, ZOOM, PAN),
    ),
)
"""Made from the bundled example photos by ``python -m dynviz make-clips --examples``."""


def make_example_clips(folder: Path, seed: int = 0) -> None:
    """Write :data:`EXAMPLE_CLIPS` from the example photos in ``folder``, beside them."""
    rng = random.Random(seed)
    for clip in EXAMPLE_CLIPS:
        frames = []
        for photo, motion in zip(clip.photos, clip.motions):
            image = Image.open(folder / photo).convert("RGB")
            # less noise than the evaluation clips: noise is what a video codec compresses worst
            frames += degrade(shot(image, 3 * SHOT_FRAMES // 2, SIZE, rng, motion), rng, noise_level=0.8)
        write_clip(frames, folder / clip.file)


def read_labels(folder: Path) -> list[ClipLabels]:
    return build(list[ClipLabels], json.loads((folder / LABELS_FILE).read_text()))

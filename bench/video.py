"""Benchmark: a 10-second 720p 30-fps clip answered by the temporal models, decoding included, against Lite0 on
every frame.

    python bench/video.py [--photo PHOTO] [--seconds 10]

The clip is made here: a slow pan over ``PHOTO`` (a bundled example by default) at 1280×720, 30 frames a
second, written as MPEG-4 the way a phone would hand it over. Every model is built and run once on another
clip first (warm), then timed end to end: decoding (the worker process, frames capped at 720 px) and the
analysis at its default settings. Prints seconds, frames looked at, the FLOPs ratio and the realised time
ratio against the all-frames baseline. Target: ≤ 5 s for the dynamic models on this 2-core machine.
Accuracy is the cards' (``python -m dynviz eval NAME --data IMAGENET_SAMPLE --split test``).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from dynviz.clips import PAN, degrade, shot, write_clip  # noqa: E402
from dynviz.models.every_frame import EveryFrame  # noqa: E402
from dynviz.runtime import inference  # noqa: E402
from dynviz.units import format_flops  # noqa: E402
from dynviz.video import load_video  # noqa: E402
from dynviz.zoo import VIDEO, create_model, list_models  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "dynviz" / "examples"


def make_clip(photo: Path, seconds: float, path: Path, seed: int) -> bytes:
    rng = random.Random(seed)
    frames = degrade(shot(Image.open(photo).convert("RGB"), round(30 * seconds), (1280, 720), rng, PAN), rng)
    write_clip(frames, path, 30)
    return path.read_bytes()


def timed(model, data: bytes, name: str):
    start = time.perf_counter()
    video = load_video(data, name)
    decoded = time.perf_counter() - start
    with inference():
        trace = model.analyze(video)
    return trace, decoded, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=EXAMPLES / "cat.jpg")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        warm_up = make_clip(args.photo, 1.0, Path(folder) / "warm.mp4", seed=1)
        clip = make_clip(args.photo, args.seconds, Path(folder) / "clip.mp4", seed=0)
    print(f"clip: {args.seconds:.0f} s, 1280×720, 30 fps, {len(clip) / 2**20:.1f} MB (pan over {args.photo.name})")
    models = {name: create_model(name) for name in list_models(accepting=VIDEO)}
    models["lite0 on every frame"] = EveryFrame(create_model("lite0"))
    results = {}
    for name, model in models.items():
        timed(model, warm_up, "warm-up.mp4")
        results[name] = timed(model, clip, "clip.mp4")
    _, _, baseline_s = results["lite0 on every frame"]
    print(
        f"{'model':>22}  {'total s':>7}  {'decode s':>8}  {'frames':>7}  {'FLOPs':>8}  {'FLOPs ratio':>11}  {'time ratio':>10}"
    )
    for name, (trace, decoded, total) in results.items():
        row = trace.summary()
        print(
            f"{name:>22}  {total:7.2f}  {decoded:8.2f}  {row['frames_processed']:>3}/{row['frames']:<3}  "
            f"{format_flops(trace.cost.flops):>8}  {trace.cost.fraction:11.3f}  {total / baseline_s:10.3f}"
        )


if __name__ == "__main__":
    main()

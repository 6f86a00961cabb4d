"""Benchmark: batch-1 latency and FLOPs per model, and the early-exit models' realised speed-ups.

    python bench/early_exit.py --data DIR [--split test] [--cifar CIFAR_DIR] [--cifar-images N]

DIR is a labelled ImageNet folder (e.g. the 500-image sample). Prints, in one run on one
machine: each network's median batch-1 latency and FLOPs at its resolution, then the
cascade's mean latency and FLOPs against the static Lite2 on the same images (both through
``python -m dynviz analyze``, on the eager and the fused inference paths of :mod:`dynviz.fused`), so
the realised speed-up stands next to the FLOPs ratio.
With ``--cifar``, the same for MSDNet at its default operating point against MSDNet run to
its last exit, on the first N images of the CIFAR-10 test split.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.__main__ import main as cli  # noqa: E402
from dynviz.cost import module_macs  # noqa: E402
from dynviz.data import labelled_files, labelled_images  # noqa: E402
from dynviz.fused import inference_path  # noqa: E402
from dynviz.models.base import ImageNetClassifier  # noqa: E402
from dynviz.models.cifar import Cifar10Classifier  # noqa: E402
from dynviz.models.efficientnet_lite import NATIVE_RESOLUTION, efficientnet_lite  # noqa: E402
from dynviz.models.lite_cascade import STAGES  # noqa: E402
from dynviz.runtime import INFERENCE_THREADS, inference  # noqa: E402
from dynviz.units import format_flops  # noqa: E402
from dynviz.zoo import create_model  # noqa: E402


def median_latency_ms(net: Callable[[torch.Tensor], torch.Tensor], resolution: int, repeats: int = 30) -> float:
    x = torch.randn(1, 3, resolution, resolution)
    times = []
    with inference():
        for _ in range(5):
            net(x)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def per_network() -> None:
    print(f"torch {torch.__version__}, {INFERENCE_THREADS} thread(s) per inference")
    print(f"{'network':<20}{'FLOPs (mult-adds)':>20}{'batch-1 median, eager':>24}{'fused':>10}")
    nets = {scale: efficientnet_lite(scale) for scale in NATIVE_RESOLUTION}
    points = {(scale, res) for scale, res in NATIVE_RESOLUTION.items()} | {(s.scale, s.resolution) for s in STAGES}
    for scale, resolution in sorted(points):
        net = nets[scale]
        flops = module_macs(net, (1, 3, resolution, resolution))
        eager, fused = (
            median_latency_ms(path, resolution) for path in (net, inference_path(net, (1, 3, resolution, resolution)))
        )
        print(
            f"{scale + ' @ ' + str(resolution) + ' px':<20}{format_flops(flops):>20}{eager:>21.1f} ms{fused:>7.1f} ms"
        )


INTERLEAVED_CHUNK = 50
"""Images per turn when a dynamic model and its static twin are timed in alternation."""


def analyze_options(model: str, settings: tuple[str, ...]) -> list[str]:
    return ["--model", model, *[a for s in settings for a in ("--set", s)]]


PATHS = {"eager": "0", "fused": "1"}
"""Each inference path (:mod:`dynviz.fused`) and the ``DYNVIZ_COMPILE`` value that chooses it."""


def dynamic_vs_static(
    files: list[str],
    dynamic: str,
    static: str,
    static_settings: tuple[str, ...] = (),
    what: str = "",
    dynamic_settings: tuple[str, ...] = (),
) -> None:
    """Mean FLOPs and latency of ``dynamic`` (at its default, or ``dynamic_settings``) against ``static``
    (another model, or the same one with ``static_settings`` that disable its exits), through
    ``python -m dynviz analyze`` on the same files, on the eager and on the fused inference path. The four
    runs take turns chunk by chunk, after a warm-up run of each on the first chunk: on a shared machine a slow
    minute then weighs on all of them, not on one."""
    roles = {"static": analyze_options(static, static_settings), "dynamic": analyze_options(dynamic, dynamic_settings)}
    chunks = [files[i : i + INTERLEAVED_CHUNK] for i in range(0, len(files), INTERLEAVED_CHUNK)]
    traces: dict[tuple[str, str], list[dict]] = {(path, role): [] for path in PATHS for role in roles}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "traces.json"
        for index, chunk in enumerate([chunks[0], *chunks]):
            for path, role in traces:
                os.environ["DYNVIZ_COMPILE"] = PATHS[path]
                cli(["analyze", *chunk, *roles[role], "--out", str(out)])
                if index:  # chunk 0 is the warm-up
                    traces[path, role] += json.loads(out.read_text())
    os.environ.pop("DYNVIZ_COMPILE")
    flops = {role: statistics.fmean(t["cost"]["flops"] for t in traces["eager", role]) for role in roles}
    ms = {key: statistics.fmean(t["cost"]["latency_ms"] for t in kept) for key, kept in traces.items()}
    flops_ratio = flops["static"] / flops["dynamic"]
    names = {
        "static": "static " + static + (" (no early exit)" if static_settings else ""),
        "dynamic": dynamic + (" " + ", ".join(dynamic_settings) if dynamic_settings else " (default operating point)"),
    }
    print(f"\non {len(files)} images ({what}):")
    print(f"  {'':<44}{'FLOPs':>9}" + "".join(f"{path + ' mean':>14}" for path in PATHS))
    for role, name in names.items():
        print(f"  {name:<44}{format_flops(flops[role]):>9}" + "".join(f"{ms[path, role]:11.1f} ms" for path in PATHS))
    speedups = {path: ms[path, "static"] / ms[path, "dynamic"] for path in PATHS}
    print(
        f"  FLOPs ratio {flops_ratio:.2f}x; realised speed-up "
        + ", ".join(f"{path} {s:.2f}x (realised / theoretical = {s / flops_ratio:.2f})" for path, s in speedups.items())
    )


def imagenet_files(data: Path, split: str) -> list[str]:
    return [str(f.path) for f in labelled_files(data, ImageNetClassifier.class_keys(), split)]


def cifar_test_files(data: Path, count: int) -> list[str]:
    files = labelled_images(data, Cifar10Classifier.class_keys(), "test")
    return [str(f.path) for f in files[:: max(1, len(files) // count)][:count]]


def photos_and_cifar(description: str) -> tuple[list[str], list[str]]:
    """The test half of the ImageNet sample and a spread of CIFAR-10 test images, from the command line."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the ImageNet sample folder")
    parser.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 folder with test/<class>/*.jpg")
    parser.add_argument("--cifar-images", type=int, default=1000)
    args = parser.parse_args()
    return imagenet_files(args.data, "test"), cifar_test_files(args.cifar, args.cifar_images)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("all", "calib", "test"))
    parser.add_argument("--cifar", type=Path, help="CIFAR-10 folder with test/<class>/*.jpg")
    parser.add_argument("--cifar-images", type=int, default=1000)
    args = parser.parse_args()
    per_network()
    dynamic_vs_static(
        imagenet_files(args.data, args.split), "lite_cascade", "lite2", what=f"{args.data.name}, split {args.split}"
    )
    if args.cifar:
        never = tuple(f"{knob.name}={knob.high}" for knob in create_model("msdnet_cifar").knobs())
        files = cifar_test_files(args.cifar, args.cifar_images)
        dynamic_vs_static(files, "msdnet_cifar", "msdnet_cifar", never, what=f"{args.cifar.name} test split")

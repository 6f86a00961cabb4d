"""Benchmark: which stages should the Lite cascade chain? Accuracy and FLOPs of candidate cascades.

    python bench/cascade_stages.py --data SAMPLE_DIR --check VAL_DIR

Runs every candidate stage (Lite0 at 160, 192 and 224 px, Lite1 at 240, Lite2 at 260) once on the
calib and test halves of the ImageNet sample and the test half of a second labelled folder (e.g.
ImageNet validation images), then calibrates each candidate cascade on the sample's calib half
exactly as ``python -m dynviz train lite_cascade`` does (one temperature per stage, thresholds per
harm cap) and prints its accuracy and mean FLOPs (as a share of Lite2's) on both test halves.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.cost import module_macs  # noqa: E402
from dynviz.data import LabelledFile, labelled_files  # noqa: E402
from dynviz.models.base import ImageNetClassifier  # noqa: E402
from dynviz.models.efficientnet_lite import efficientnet_lite, run_view  # noqa: E402
from dynviz.progress import progress  # noqa: E402
from dynviz.runtime import inference  # noqa: E402
from dynviz.train.exits import HARM_CAPS, calibrate_exits, exit_index, harm_point  # noqa: E402

STAGES = (("lite0", 160), ("lite0", 192), ("lite0", 224), ("lite1", 240), ("lite2", 260))
CASCADES = (
    (("lite0", 160), ("lite1", 240), ("lite2", 260)),
    (("lite0", 192), ("lite1", 240), ("lite2", 260)),
    (("lite0", 224), ("lite1", 240), ("lite2", 260)),
    (("lite0", 224), ("lite2", 260)),
    (("lite0", 192), ("lite2", 260)),
    (("lite0", 160), ("lite0", 224), ("lite2", 260)),
)
Stage = tuple[str, int]


def stage_logits(
    nets: dict[str, nn.Module], files: list[LabelledFile], what: str
) -> tuple[dict[Stage, torch.Tensor], torch.Tensor]:
    rows: dict[Stage, list[torch.Tensor]] = {stage: [] for stage in STAGES}
    for file in progress(files, len(files), what):
        image = file.load().image
        for scale, resolution in STAGES:
            rows[(scale, resolution)].append(run_view(nets[scale], image, resolution).logits)
    return {stage: torch.stack(r) for stage, r in rows.items()}, torch.tensor([f.label for f in files])


def measure(
    cascade: tuple[Stage, ...],
    temperatures: torch.Tensor,
    thresholds: list[float],
    data: tuple[dict[Stage, torch.Tensor], torch.Tensor],
    costs: dict[Stage, int],
) -> tuple[float, float]:
    """(top-1, mean FLOPs as a share of Lite2's) of ``cascade`` with these thresholds on ``data``."""
    logits, labels = data
    probabilities = [(logits[stage] / t).softmax(-1) for stage, t in zip(cascade, temperatures)]
    exits = exit_index(torch.stack([p.max(-1).values for p in probabilities]), tuple(thresholds))
    answers = torch.stack([p.argmax(-1) for p in probabilities])[exits, torch.arange(len(labels))]
    cumulative = torch.tensor(list(itertools.accumulate(costs[stage] for stage in cascade)), dtype=torch.float64)
    return float((answers == labels).float().mean()), float(cumulative[exits].mean()) / costs[("lite2", 260)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ImageNet sample (its calib and test halves)")
    parser.add_argument("--check", type=Path, required=True, help="a second labelled folder (its test half)")
    args = parser.parse_args()
    keys = ImageNetClassifier.class_keys()
    nets = {scale: efficientnet_lite(scale) for scale in dict.fromkeys(scale for scale, _ in STAGES)}
    with inference():
        calib = stage_logits(nets, labelled_files(args.data, keys, "calib"), "sample, calib half")
        tests = {
            f"{folder.name} test half": stage_logits(nets, labelled_files(folder, keys, "test"), f"{folder.name}, test")
            for folder in (args.data, args.check)
        }
    costs = {(scale, r): module_macs(nets[scale], (1, 3, r, r)) for scale, r in STAGES}
    for name, (logits, labels) in tests.items():
        alone = ", ".join(f"{s} @ {r}: {(logits[(s, r)].argmax(-1) == labels).float().mean():.1%}" for s, r in STAGES)
        print(f"{name}, each stage alone: {alone}")
    for cascade in CASCADES:
        temperatures, thresholds = calibrate_exits(
            [calib[0][s] for s in cascade], calib[1], [costs[s] for s in cascade]
        )
        print(" → ".join(f"{s.capitalize()} @ {r} px" for s, r in cascade))
        for cap, row in zip(HARM_CAPS, thresholds.tolist()):
            figures = [measure(cascade, temperatures, row, data, costs) for data in tests.values()]
            print(f"  {harm_point(cap):>13}: " + "   ".join(f"{a:.1%} at {f:.2f}×" for a, f in figures))


if __name__ == "__main__":
    main()

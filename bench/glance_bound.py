"""Benchmark: how far can a glance-and-focus model on the published Lite0 get at a FLOPs budget? An upper bound.

    python bench/glance_bound.py --data SAMPLE_DIR [--check VAL_DIR] [--out bench/glance_bound.txt]

The glance is Lite0 at 160 px on the whole view (as ``gfnet_lite0``'s), or at 128 px (GFNet's own glance size). Suppose a second look answered as well as
Lite0 at 224 px on the whole view, yet cost only one 128-px patch (0.33× Lite0): no focus step of GFNet's can do
better than that with Lite0's weights as they are. Within a budget, the images the glance is least sure of look
again (as GFNet's confidence exits decide), or, for the oracle, exactly those the glance got wrong and the second
look gets right. The same with the second look charged at its true cost (Lite0 at 224 px: a resolution cascade).
Prints top-1 on each test half.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dynviz.data import labelled_files  # noqa: E402
from dynviz.models.gfnet import GLANCE_RESOLUTION, NATIVE, PATCH  # noqa: E402
from dynviz.models.lite_cascade import LiteCascade  # noqa: E402
from dynviz.progress import progress  # noqa: E402
from dynviz.runtime import inference  # noqa: E402
from dynviz.zoo import create_model  # noqa: E402

BUDGETS = (0.6, 0.7)
GLANCES = (GLANCE_RESOLUTION, PATCH)


@dataclass(frozen=True)
class Looks:
    glance_confidence: float
    glance_right: bool
    full_view_right: bool


def looks(root: Path, glance_side: int) -> tuple[list[Looks], float]:
    """Each test image's glance and full view, and the glance's share of Lite0's FLOPs."""
    lite0 = create_model("lite0_resized")
    rows, shares = [], []
    files = labelled_files(root, LiteCascade.class_keys(), split="test")
    for item in progress(files, len(files), f"{root.name}, glance at {glance_side} px"):
        image = item.load()
        with inference():
            glance = lite0.analyze(image, {"resolution": glance_side}, {})
            full = lite0.analyze(image, {"resolution": NATIVE}, {})
        rows.append(
            Looks(
                glance.prediction.confidence, glance.prediction.index == item.label, full.prediction.index == item.label
            )
        )
        shares.append(glance.cost.flops / full.cost.flops)
    return rows, sum(shares) / len(shares)


def report(root: Path, glance_side: int) -> list[str]:
    rows, glance_share = looks(root, glance_side)
    n = len(rows)
    lines = [
        f"{root.name} (test half, {n} images): Lite0 at {glance_side} px {sum(r.glance_right for r in rows) / n:.1%} "
        f"at {glance_share:.2f}x, at {NATIVE} px {sum(r.full_view_right for r in rows) / n:.1%}"
    ]
    least_sure_first = sorted(rows, key=lambda r: r.glance_confidence)
    fixable = sum(r.full_view_right and not r.glance_right for r in rows)
    for look_share, charged in (((PATCH / NATIVE) ** 2, f"one {PATCH}-px patch"), (1.0, f"Lite0 at {NATIVE} px")):
        for budget in BUDGETS:
            again = min(n, max(0, int(n * (budget - glance_share) / look_share)))
            routed = sum(r.full_view_right for r in least_sure_first[:again]) + sum(
                r.glance_right for r in least_sure_first[again:]
            )
            oracle = sum(r.glance_right for r in rows) + min(again, fixable)
            lines.append(
                f"  budget {budget:.1f}x, second look charged as {charged}: {again / n:.0%} look again; "
                f"least sure first {routed / n:.1%}, oracle {oracle / n:.1%}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the ImageNet sample (its test half)")
    parser.add_argument("--check", type=Path, help="a second labelled folder (its test half)")
    parser.add_argument("--out", type=Path, help="also write the figures here")
    args = parser.parse_args()
    lines = [line for root in (args.data, args.check) if root for side in GLANCES for line in report(root, side)]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

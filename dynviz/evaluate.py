"""Accuracy and mean cost per operating point on a labelled set: the figures on every card."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from dynviz.data import LabelledImage
from dynviz.inputs import InputError
from dynviz.models.base import DynamicModel
from dynviz.progress import progress
from dynviz.trace import ExitRecord, Trace
from dynviz.zoo import BaselineMatch, PointResult


@dataclass
class _Tally:
    top1: int = 0
    top5: int = 0
    flops: float = 0.0
    latency_ms: float = 0.0
    exits: Counter = field(default_factory=Counter)

    def add(self, trace: Trace, label: int) -> None:
        self.top1 += trace.prediction.index == label
        self.top5 += label in {c.index for c in trace.prediction.top[:5]}
        self.flops += trace.cost.flops
        self.latency_ms += trace.cost.latency_ms
        self.exits.update(r.index for r in trace.records_of(ExitRecord) if r.taken)


def evaluate(
    model: DynamicModel, files: list[LabelledImage], points: Mapping[str, dict[str, float]]
) -> list[PointResult]:
    """Run every operating point on every file; each input's computed parts are shared between points."""
    tallies = {name: _Tally() for name in points}
    evaluated = 0
    for item in progress(files, len(files), f"eval {model.name}"):
        try:
            image = item.load()
        except InputError as error:
            print(error, file=sys.stderr)
            continue
        evaluated += 1
        memo: dict = {}
        for name, settings in points.items():
            tallies[name].add(model.analyze(image, settings, memo), item.label)
    if not evaluated:
        raise ValueError("no image could be evaluated")
    exit_count = 1 + max((k for t in tallies.values() for k in t.exits), default=-1)
    return [
        PointResult(
            name,
            points[name],
            t.top1 / evaluated,
            t.top5 / evaluated,
            t.flops / evaluated,
            t.latency_ms / evaluated,
            tuple(t.exits[k] / evaluated for k in range(exit_count)),
        )
        for name, t in tallies.items()
    ]


def match_best_baseline(points: list[PointResult], baselines: list[PointResult]) -> BaselineMatch | None:
    """The cheapest operating point at least as accurate as the most accurate static baseline."""
    if not baselines:
        return None
    best = max(baselines, key=lambda b: (b.top1, -b.mean_flops))
    matching = [p for p in points if p.top1 >= best.top1]
    cheapest = min(matching, key=lambda p: p.mean_flops, default=None)
    return BaselineMatch(
        best.name,
        best.top1,
        best.mean_flops,
        cheapest.name if cheapest else None,
        cheapest.mean_flops if cheapest else None,
    )

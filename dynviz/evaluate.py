"""Accuracy and mean cost per operating point on a labelled set: the figures on every card."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynviz.cards import STATIC, VARYING, BaselineMatch, ClassUsage, OperatingPoint, PointResult
from dynviz.data import LabelledClip, LabelledImage
from dynviz.inputs import InputError
from dynviz.models.base import DynamicModel
from dynviz.progress import progress
from dynviz.runtime import inference
from dynviz.trace import PROCESSED, RECORD_TYPES, ExitRecord, FrameRecord, Trace

CUT_TOLERANCE = 2
"""A scene cut counts as found when a model flags it at most this many frames late."""


@dataclass
class _Tally:
    top1: int = 0
    top5: int = 0
    flops: float = 0.0
    latency_ms: float = 0.0
    exits: Counter = field(default_factory=Counter)
    frames: int = 0
    frames_right: int = 0
    """Frames answered, and answered right, by stream labelling (models that answer every frame)."""
    processed_share: float = 0.0
    clips: int = 0
    cuts: int = 0
    cuts_found: int = 0
    flagged: int = 0
    """Cuts the model flagged (a model that never flags any does not look for them)."""

    def add(self, trace: Trace, item: LabelledImage) -> None:
        label = item.label
        self.top1 += trace.prediction.index == label
        self.top5 += label in {c.index for c in trace.prediction.top[:5]}
        self.flops += trace.cost.flops
        self.latency_ms += trace.cost.latency_ms
        self.exits.update(r.index for r in trace.records_of(ExitRecord) if r.taken)
        if frames := trace.records_of(FrameRecord):
            self.clips += 1
            self.processed_share += sum(r.action == PROCESSED for r in frames) / len(frames)
            if isinstance(item, LabelledClip):
                self.add_frames(frames, item)

    def add_frames(self, frames: list[FrameRecord], clip: LabelledClip) -> None:
        if all(r.prediction is not None for r in frames):
            self.frames += len(frames)
            self.frames_right += sum(r.prediction.index == y for r, y in zip(frames, clip.frame_labels))
        found = [r.index for r in frames if r.cut]
        self.flagged += len(found)
        self.cuts += len(clip.cuts)
        self.cuts_found += sum(any(0 <= f - cut <= CUT_TOLERANCE for f in found) for cut in clip.cuts)


def unit_measure(trace: Trace, measure: str) -> dict[str, Any]:
    """Unit name → ``measure``, from every record kind that gates units and declares it: "usage", the share of the
    unit that ran; "gates", the probability of the one gate that decides it (:meth:`BlockRecord.gates`);
    "decisions", each of its gates' decision (:meth:`ChannelRecord.decisions`, :meth:`MaskRecord.decisions`)."""
    values: dict[str, Any] = {}
    for kind in RECORD_TYPES.values():
        if hasattr(kind, measure) and (records := trace.records_of(kind)):
            values |= getattr(kind, measure)(records)
    return values


@dataclass
class _UsageTally:
    sums: dict[int, dict[str, float]] = field(default_factory=dict)
    images: Counter = field(default_factory=Counter)
    gate_probabilities: dict[str, list[float]] = field(default_factory=dict)
    decisions_on: dict[str, np.ndarray] = field(default_factory=dict)
    """Unit → how many images each of its gates was on for."""
    decided: int = 0

    def add(self, trace: Trace, label: int) -> None:
        usage = unit_measure(trace, "usage")
        if usage:
            row = self.sums.setdefault(label, dict.fromkeys(usage, 0.0))
            for unit, share in usage.items():
                row[unit] += share
            self.images[label] += 1
        for unit, probability in unit_measure(trace, "gates").items():
            self.gate_probabilities.setdefault(unit, []).append(probability)
        if decisions := unit_measure(trace, "decisions"):
            self.decided += 1
            for unit, on in decisions.items():
                self.decisions_on[unit] = self.decisions_on.get(unit, 0) + np.array(on, dtype=np.int64)

    def varying_gates(self, units: tuple[str, ...]) -> tuple[float, ...] | None:
        if not self.decisions_on:
            return None
        shares = (self.decisions_on[unit] / self.decided for unit in units)
        return tuple(round(float(((share >= VARYING) & (share <= 1 - VARYING)).mean()), 4) for share in shares)

    def gate_spread(self, units: tuple[str, ...]) -> tuple[tuple[float, float, float] | None, ...] | None:
        if not self.gate_probabilities:
            return None
        return tuple(
            tuple(round(float(q), 4) for q in np.percentile(self.gate_probabilities[unit], (10, 50, 90)))
            if unit in self.gate_probabilities
            else None
            for unit in units
        )

    def result(self, point: str, labels: tuple[str, ...]) -> ClassUsage | None:
        if not self.sums:
            return None
        units = tuple(next(iter(self.sums.values())))
        present = sorted(self.sums)
        return ClassUsage(
            point,
            units,
            tuple(labels[c] for c in present),
            tuple(self.images[c] for c in present),
            tuple(tuple(round(self.sums[c][u] / self.images[c], 4) for u in units) for c in present),
            self.gate_spread(units),
            self.varying_gates(units),
        )


@dataclass(frozen=True)
class _Run:
    """One operating point of one model, and the name its result goes by."""

    model: DynamicModel
    point: OperatingPoint
    name: str

    @property
    def settings(self) -> dict[str, float]:
        return self.point.settings


def evaluate(
    model: DynamicModel,
    files: list[LabelledImage],
    points: Mapping[str, OperatingPoint],
    usage_point: str | None = None,
    baselines: Mapping[str, DynamicModel] | None = None,
) -> tuple[list[PointResult], list[PointResult], ClassUsage | None]:
    """Run every operating point of ``model``, and of each static model in ``baselines`` (by name), on every
    file: the results of ``model``'s points, then the baselines'. On each input every model takes its turn,
    so a slow spell of a shared machine falls on all of them alike and their latencies compare; each input's
    computed parts are shared between a model's points. Also returns the per-class usage of gated units at
    ``usage_point`` (None for models without gates)."""
    runs = [_Run(model, point, name) for name, point in points.items()]
    for baseline, static in (baselines or {}).items():
        static_points = static.operating_points()
        runs += [
            _Run(static, point, baseline if len(static_points) == 1 else f"{baseline}, {name}")
            for name, point in static_points.items()
        ]
    tallies = {run.name: _Tally() for run in runs}
    usage = _UsageTally()
    evaluated = 0
    for item in progress(files, len(files), f"eval {model.name}"):
        try:
            image = item.load()
        except InputError as error:
            print(error, file=sys.stderr)
            continue
        evaluated += 1
        memos: dict[int, dict] = {}
        for run in runs:
            with inference():
                trace = run.model.analyze(image, run.settings, memos.setdefault(id(run.model), {}))
            tallies[run.name].add(trace, item)
            if run.model is model and run.name == usage_point:
                usage.add(trace, item.label)
    if not evaluated:
        raise ValueError("no image could be evaluated")

    def result(run: _Run) -> PointResult:
        t = tallies[run.name]
        exit_count = 1 + max(
            (k for other in runs if other.model is run.model for k in tallies[other.name].exits), default=-1
        )
        return PointResult(
            run.name,
            run.settings,
            t.top1 / evaluated,
            t.top5 / evaluated,
            t.flops / evaluated,
            t.latency_ms / evaluated,
            tuple(t.exits[k] / evaluated for k in range(exit_count)),
            run.point.kind,
            run.point.group,
            frame_top1=t.frames_right / t.frames if t.frames else None,
            frames_processed=t.processed_share / t.clips if t.clips else None,
            cuts_found=t.cuts_found / t.cuts if t.cuts and t.flagged else None,
        )

    results = [result(run) for run in runs]
    return (
        results[: len(points)],
        results[len(points) :],
        usage.result(usage_point, model.labels) if usage_point else None,
    )


def match_best_baseline(points: list[PointResult], baselines: list[PointResult]) -> BaselineMatch | None:
    """The cheapest operating point at least as accurate as the most accurate static baseline (an ablation
    among the baselines, such as DVT's plain cascade, is a comparison, not the network to match)."""
    statics = [b for b in baselines if b.kind == STATIC]
    if not statics:
        return None
    best = max(statics, key=lambda b: (b.top1, -b.mean_flops))
    matching = [p for p in points if p.top1 >= best.top1]
    cheapest = min(matching, key=lambda p: p.mean_flops, default=None)
    return BaselineMatch(
        best.name,
        best.top1,
        best.mean_flops,
        cheapest.name if cheapest else None,
        cheapest.mean_flops if cheapest else None,
    )

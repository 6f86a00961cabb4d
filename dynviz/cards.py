"""Model cards: what each bundled model is, how it was trained and what it measured.

A card is ``pretrained/<name>.json`` beside the weights. Its figures are written
by the ``eval`` command and its recipe by the command that produced the
weights, never by hand. Reading cards needs no torch, so tables and pages that
only show cards load no network.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dynviz.trace import build
from dynviz.units import FLOPS_UNIT, format_flops

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"


@dataclass(frozen=True)
class About:
    """What a method is, for the card: written in code beside the method."""

    title: str
    family: str
    """Where it sits in the survey's taxonomy."""
    summary: str
    papers: tuple[str, ...]
    license: str
    data: str
    """What the weights were trained or calibrated on."""
    caveats: str = ""
    """What to know before reading the figures as the method's own (a model card's "caveats and recommendations",
    Mitchell et al., FAT* 2019); empty where there is nothing beyond the data line."""


@dataclass(frozen=True)
class Recipe:
    command: str
    seconds: float
    machine: str


BUDGET = "budget"
"""A point of a dynamic model's accuracy–cost curve: its decisions are the input's."""
ANYTIME = "anytime"
"""Every input leaves at one exit (anytime prediction): what that exit alone scores and costs."""
STATIC = "static"
"""A static network's only point (or one of its input resolutions)."""


@dataclass(frozen=True)
class OperatingPoint:
    """A knob setting a card measures, and where it belongs: which kind of point it is and, for a model with
    several curves (GFNet's two policies), which curve."""

    name: str
    settings: dict[str, float]
    kind: str = BUDGET
    group: str = ""


def anytime_point(k: int) -> str:
    """The name of the point that sends every input out at exit k."""
    return f"anytime: exit {k + 1}"


@dataclass(frozen=True)
class PointResult:
    """Accuracy and cost of one operating point on the evaluation split."""

    name: str
    settings: dict[str, float]
    top1: float
    top5: float
    mean_flops: float
    mean_latency_ms: float
    exit_rates: tuple[float, ...] = ()
    """Share of inputs answered at each exit (dynamic-exit models only)."""
    kind: str = BUDGET
    group: str = ""
    frame_top1: float | None = None
    """Clips: the share of frames answered right, for models that answer every frame (stream labelling)."""
    frames_processed: float | None = None
    """Clips: the mean share of a clip's frames that went through the backbone."""
    cuts_found: float | None = None
    """Clips with scene cuts: the share of cuts a model flagged at most two frames late."""


@dataclass(frozen=True)
class BaselineMatch:
    """Where the dynamic curve reaches the best static baseline's accuracy, if it does."""

    baseline: str
    baseline_top1: float
    baseline_flops: float
    point: str | None
    """The cheapest operating point at least as accurate; None when none is."""
    point_flops: float | None

    @property
    def flops_ratio(self) -> float | None:
        return None if self.point_flops is None else self.point_flops / self.baseline_flops

    def describe(self) -> str:
        best = f"the most accurate static network, {self.baseline} ({100 * self.baseline_top1:.1f}% top-1)"
        if self.point is None:
            return f"No operating point reaches {best}."
        return f"Reaches {best} at {self.flops_ratio:.2f}× its FLOPs, with “{self.point}”."


VARYING = 0.1
"""A gate decides by input when it is on for at least this share of the images, and off for as many."""


@dataclass(frozen=True)
class ClassUsage:
    """How much of each gated unit (block, channel group) ran, per class, at one operating point: the
    category-specific inference paths of ConvNet-AIG."""

    point: str
    units: tuple[str, ...]
    classes: tuple[str, ...]
    """Classes with at least one evaluated image."""
    images: tuple[int, ...]
    """Evaluated images per class."""
    rates: tuple[tuple[float, ...], ...]
    """[class][unit]: the mean share of the unit that ran."""
    gate_spread: tuple[tuple[float, float, float] | None, ...] | None = None
    """[unit]: the 10th, 50th and 90th percentiles of its gate's probability of running over the evaluated images,
    for a unit that one gate decides (a block; None for a block without a gate). A narrow range is a gate that
    decides about the same for every image: it thins the network rather than choosing by input."""
    varying_gates: tuple[float, ...] | None = None
    """[unit]: the share of the unit's gates (a layer's channels, a block's positions) that decide differently for
    different images, each on for at least :data:`VARYING` of them and off for as many. Near 0, the gates chose
    one subnetwork for every image."""


@dataclass(frozen=True)
class Evaluation:
    command: str
    data: str
    split: str
    images: int
    points: tuple[PointResult, ...]
    baselines: tuple[PointResult, ...] = ()
    """Static reference models on the same images."""
    match: BaselineMatch | None = None
    class_usage: ClassUsage | None = None
    """For gated models, at the default operating point."""
    unit: str = "images"
    """What ``images`` counts: "images", or "clips" for video models."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    about: About
    flops_full: float
    """Multiply–accumulates of the static counterpart at its native size."""
    default_point: str
    weights: str | None = None
    weights_sha256: str | None = None
    recipe: Recipe | None = None
    evaluation: Evaluation | None = None
    checks: tuple[Evaluation, ...] = ()
    """The same operating points on other labelled photos (``eval --check``): a second column, which shows
    whether a ranking on the main split holds on photos the weights were not fitted to."""

    def point(self, name: str) -> PointResult | None:
        points = self.evaluation.points if self.evaluation else ()
        return next((p for p in points if p.name == name), None)

    def measured_on(self, data: str, split: str) -> ModelCard | None:
        """This card with its check on ``data`` (``split``) as its evaluation; None where it has none."""
        check = next((c for c in self.checks if (c.data, c.split) == (data, split)), None)
        return None if check is None else dataclasses.replace(self, evaluation=check, checks=())

    def with_check(self, check: Evaluation) -> ModelCard:
        """This card with ``check`` in place of an earlier one on the same data and split. The check's per-class
        usage is left out (the page's per-class chart reads the evaluation; on 644 images of a thousand classes it
        made a gated card six times larger)."""
        kept = tuple(c for c in self.checks if (c.data, c.split) != (check.data, check.split))
        return dataclasses.replace(self, checks=(*kept, dataclasses.replace(check, class_usage=None)))

    def save(self) -> Path:
        path = PRETRAINED / f"{self.name}.json"
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path


def load_card(name: str) -> ModelCard | None:
    """``pretrained/<name>.json``, parsed once for each version of the file (pages read the cards at every
    rerun; ``eval --card`` may rewrite one while the app runs)."""
    path = PRETRAINED / f"{name}.json"
    try:
        modified = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    return _parsed_card(path, modified)


@functools.lru_cache(maxsize=256)
def _parsed_card(path: Path, modified: int) -> ModelCard:
    return build(ModelCard, json.loads(path.read_text()))


def validation_curve(card: ModelCard) -> tuple[tuple[float, ...], ...]:
    """Each exit's accuracy on the held-out training images after each training epoch, from the weights'
    metadata (``validation_history``, written by the CIFAR recipe); () where the weights hold none."""
    if card.weights is None:
        return ()
    path = PRETRAINED / card.weights
    try:
        return _validation_curve(path, path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return ()


@functools.lru_cache(maxsize=64)
def _validation_curve(path: Path, modified: int) -> tuple[tuple[float, ...], ...]:
    with path.open("rb") as weights:  # a safetensors file opens with its JSON header's length: no torch needed
        header = json.loads(weights.read(int.from_bytes(weights.read(8), "little")))
    history = header.get("__metadata__", {}).get("validation_history")
    return tuple(tuple(exits) for exits in json.loads(history)) if history else ()


def static_frontier(points: Iterable[PointResult]) -> list[PointResult]:
    """The static networks' points that no cheaper one matches, cheapest first: the best a static network does at
    each cost, the curve a dynamic network has to lie above to pay off (a dominated network, such as a vision
    transformer below the ResNets of its cost, is left out)."""
    frontier: list[PointResult] = []
    for point in sorted(points, key=lambda p: (p.mean_flops, -p.top1)):
        if not frontier or point.top1 > frontier[-1].top1:
            frontier.append(point)
    return frontier


@dataclass(frozen=True)
class ModelSummary:
    """One row of the model table (home page, ``python -m dynviz models``), from the card."""

    model: str
    title: str
    family: str
    top1: float | None
    """At the default operating point, on the card's evaluation split."""
    mean_flops: float | None
    flops_full: float | None
    evaluated_on: str
    checks: tuple[str, ...] = ()
    """The default point's top-1 on each check, with what it was measured on."""


def card_names() -> list[str]:
    """Every bundled model with a card, by name."""
    return sorted(path.stem for path in PRETRAINED.glob("*.json"))


def model_summaries() -> list[ModelSummary]:
    rows = []
    for name in card_names():
        card = load_card(name)
        point, evaluation = card.point(card.default_point), card.evaluation
        rows.append(
            ModelSummary(
                name,
                card.about.title,
                card.about.family,
                point.top1 if point else None,
                point.mean_flops if point else None,
                card.flops_full,
                f"{evaluation.data} ({evaluation.split}, {evaluation.images} {evaluation.unit})"
                if evaluation
                else "not evaluated",
                tuple(
                    f"{100 * p.top1:.1f}% on {c.data} ({c.split}, {c.images} {c.unit})"
                    for c in card.checks
                    if (p := next((q for q in c.points if q.name == card.default_point), None))
                ),
            )
        )
    return rows


def model_table() -> list[dict[str, str]]:
    """The model summaries formatted for people (home page, README)."""
    return [
        {
            "model": row.model,
            "what it is": row.title,
            "top-1 (default)": "" if row.top1 is None else f"{100 * row.top1:.1f}%",
            f"mean {FLOPS_UNIT}": "" if row.mean_flops is None else format_flops(row.mean_flops),
            "static FLOPs": "" if row.flops_full is None else format_flops(row.flops_full),
            "measured on": row.evaluated_on,
            "top-1 on other photos": "; ".join(row.checks),
            "family": row.family,
        }
        for row in model_summaries()
    ]


@dataclass(frozen=True)
class AgainstTwin:
    """A dynamic model's default operating point against its static twin, the network it would be without its
    decisions (the one that spends the card's ``flops_full`` on every input), both on the same images."""

    model: str
    survey_family: str
    """sample-wise, spatial-wise or temporal-wise (the survey's three families)."""
    twin: str
    point: PointResult
    twin_point: PointResult

    @property
    def flops_share(self) -> float:
        return self.point.mean_flops / self.twin_point.mean_flops

    @property
    def top1_change(self) -> float:
        return self.point.top1 - self.twin_point.top1


def twin_of(card: ModelCard) -> tuple[str, PointResult] | None:
    """The static twin's name and its point on ``card``'s evaluation images: the network measured beside it that
    spends ``flops_full`` (read from its own card where that one is measured on the same images, as it may have
    been retrained since), else the model's own last exit for every input (an early-exit network's whole self)."""
    evaluation = card.evaluation

    def spends_full(point: PointResult) -> bool:
        return math.isclose(point.mean_flops, card.flops_full, rel_tol=0.01)

    if baseline := next(filter(spends_full, evaluation.baselines), None):
        own = load_card(baseline.name)
        images = (evaluation.data, evaluation.split)
        if own and own.evaluation and (own.evaluation.data, own.evaluation.split) == images:
            return baseline.name, own.point(own.default_point)
        return baseline.name, baseline
    whole = (point for point in evaluation.points if point.kind == ANYTIME and spends_full(point))
    return next(((f"{card.name}, every exit", point) for point in whole), None)


def against_twins() -> list[AgainstTwin]:
    """Every evaluated dynamic model that has a static twin, against it."""
    rows = []
    for name in card_names():
        card = load_card(name)
        point = card.point(card.default_point)
        if point is None or point.kind == STATIC or (twin := twin_of(card)) is None:
            continue
        rows.append(AgainstTwin(name, card.about.family.split()[0], twin[0], point, twin[1]))
    return rows


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

"""The model zoo: a registry in the manner of timm, and the model cards.

``create_model(name)`` builds a registered model with its bundled weights;
``load_card(name)`` reads ``pretrained/<name>.json``. A card's figures are
written by the ``eval`` command and its recipe by the command that produced
the weights, never by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dynviz.cost import FLOPS_UNIT, format_flops
from dynviz.trace import build

PRETRAINED = Path(__file__).resolve().parent.parent / "pretrained"

_registry: dict[str, Callable[[], Any]] = {}
_emits: dict[str, tuple[type, ...]] = {}


def register_model(name: str, emits: tuple[type, ...] = ()) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a builder; ``emits`` names the trace record types its traces hold (pages filter on it)."""

    def add(builder: Callable[[], Any]) -> Callable[[], Any]:
        _registry[name] = builder
        _emits[name] = emits
        return builder

    return add


def _load_model_modules() -> None:
    import dynviz.models  # noqa: F401  (registers every model)


def list_models(emitting: type | None = None, unless: type | None = None) -> list[str]:
    """Registered names, or only those whose traces hold ``emitting`` records (and no ``unless`` records)."""
    _load_model_modules()
    return sorted(
        name
        for name in _registry
        if (emitting is None or emitting in _emits[name]) and (unless is None or unless not in _emits[name])
    )


def dynamic_models() -> list[str]:
    """Registered models whose traces hold decisions."""
    _load_model_modules()
    return sorted(name for name in _registry if _emits[name])


def create_model(name: str) -> Any:
    """Build ``name`` with its weights (checked against the card's sha256)."""
    _load_model_modules()
    if name not in _registry:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_registry))}")
    return _registry[name]()


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


@dataclass(frozen=True)
class Recipe:
    command: str
    seconds: float
    machine: str


ANYTIME = "anytime: exit "
"""Operating points named ANYTIME + k send every input out at exit k (anytime prediction)."""


def anytime_point(k: int) -> str:
    return f"{ANYTIME}{k + 1}"


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

    def point(self, name: str) -> PointResult | None:
        points = self.evaluation.points if self.evaluation else ()
        return next((p for p in points if p.name == name), None)

    def save(self) -> Path:
        path = PRETRAINED / f"{self.name}.json"
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        return path


def load_card(name: str) -> ModelCard | None:
    path = PRETRAINED / f"{name}.json"
    return build(ModelCard, json.loads(path.read_text())) if path.exists() else None


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


def model_summaries() -> list[ModelSummary]:
    rows = []
    for name in list_models():
        card = load_card(name)
        if card is None:
            rows.append(ModelSummary(name, "", "", None, None, None, "no card yet"))
            continue
        point, evaluation = card.point(card.default_point), card.evaluation
        rows.append(
            ModelSummary(
                name,
                card.about.title,
                card.about.family,
                point.top1 if point else None,
                point.mean_flops if point else None,
                card.flops_full,
                f"{evaluation.data} ({evaluation.split}, {evaluation.images} images)"
                if evaluation
                else "not evaluated",
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
            "family": row.family,
        }
        for row in model_summaries()
    ]


def weights_path(card: ModelCard) -> Path:
    """The card's weights file, refused if its bytes are not the ones the card names."""
    path = PRETRAINED / card.weights
    digest = sha256_of(path)
    if digest != card.weights_sha256:
        raise ValueError(f"{path.name}: sha256 {digest[:12]}… does not match its card ({card.weights_sha256[:12]}…)")
    return path


def load_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of ``pretrained/<name>.safetensors``, checked against its card."""
    card = load_card(name)
    if card is None or card.weights is None:
        raise FileNotFoundError(f"{name}: no weights yet; train them with python -m dynviz train {name}")
    with safe_open(weights_path(card), "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}, weights.metadata() or {}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def machine_description() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()} CPU, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"

"""What every bundled model shares: knobs, class names, predictions."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dynviz.cards import ANYTIME, BUDGET, STATIC, OperatingPoint
from dynviz.inputs import InputImage
from dynviz.trace import Box, Cost, ExitRecord, Prediction, TopClass, Trace

Memo = dict
"""Parts a model already computed for one input (e.g. cascade stages), so that a
new knob setting re-decides without recomputing them. Owned by the caller."""


@dataclass(frozen=True)
class Knob:
    """A decision knob, with the range a slider may offer."""

    name: str
    label: str
    low: float
    high: float
    step: float
    default: float
    help: str
    choices: tuple[str, ...] = ()
    """For a knob that picks one of named options: their names, the value being the index."""


def knob_values(knobs: Sequence[Knob], settings: dict[str, float] | None) -> dict[str, float]:
    """Every knob's value: from ``settings`` where given, else its default (the settings a trace records)."""
    return {knob.name: (settings or {}).get(knob.name, knob.default) for knob in knobs}


class DynamicModel(Protocol):
    """What the zoo hands out: every page, the CLI and the evaluation use only this. What only some models
    can do is declared below (:class:`ExplainsExits`, :class:`ExplainsGates`, :class:`MeasuresSpeed`): a page
    asks ``isinstance(model, ExplainsExits)`` before it offers that view."""

    name: str
    default_point: str
    """The operating point its knobs start at (and its card's headline figures)."""
    about: Any
    """The card's description of the method (:class:`dynviz.cards.About`)."""
    baselines: tuple[str, ...]
    """Static zoo models evaluated beside it, on the same images, for its card."""
    labels: tuple[str, ...]
    """Class names, by class index."""

    def knobs(self) -> list[Knob]: ...

    def operating_points(self) -> dict[str, OperatingPoint]:
        """The settings its card measures, by name."""
        ...

    def class_keys(self) -> tuple[tuple[str, ...], ...]: ...

    def analyze(
        self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None
    ) -> Trace: ...


@runtime_checkable
class ExplainsExits(Protocol):
    def explain_exit(self, image: InputImage, k: int, target: int) -> Any:
        """What captum needs to attribute exit ``k``'s score of class ``target`` (:class:`dynviz.explain.ExplainTarget`)."""


@runtime_checkable
class ExplainsGates(Protocol):
    def explain_gate(self, image: InputImage, block: int, executed: Sequence[bool]) -> Any:
        """What captum needs to attribute gate ``block``'s logit along the path ``executed``."""


@runtime_checkable
class MeasuresSpeed(Protocol):
    def measure_speed(self, image: InputImage, threshold: float) -> Any:
        """The realised latency of the executed path against the dense twin on ``image`` (a gated model's
        :class:`dynviz.models.gates.Speed`)."""


@functools.cache
def _imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(synset, label) per ImageNet-1k index, from the bundled class list."""
    text = resources.files("dynviz.assets").joinpath("imagenet_classes.tsv").read_text()
    return tuple((row[1], row[2].replace("_", " ")) for row in (line.split("\t") for line in text.splitlines()[1:]))


@functools.cache
def imagenet_labels() -> tuple[str, ...]:
    return tuple(label for _, label in _imagenet_classes())


def prediction_from_probabilities(probabilities: torch.Tensor, labels: tuple[str, ...], k: int = 5) -> Prediction:
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return Prediction(tuple(TopClass(int(i), labels[int(i)], float(v)) for v, i in zip(values, indices)))


class ImageNetClassifier:
    """Mixin for models answering in the 1000 ImageNet-1k classes."""

    @property
    def labels(self) -> tuple[str, ...]:
        return imagenet_labels()

    @staticmethod
    def served(net: nn.Module) -> nn.Module:
        """``net`` ready for inference."""
        return net.eval()

    @staticmethod
    def class_keys() -> tuple[tuple[str, ...], ...]:
        return _imagenet_classes()


@dataclass(frozen=True)
class NetworkInput:
    """An input image as one network sees it."""

    tensor: torch.Tensor
    """[1, 3, H, W], normalised."""
    box: Box
    """The part of the input image it covers, in input pixels."""
    notes: tuple[str, ...]
    """What was done to the input to fit the network."""


_decisions: ContextVar[list | None] = ContextVar("decisions", default=None)


@contextmanager
def collecting() -> Iterator[list[tuple[nn.Module, Any]]]:
    """Collect, in this block and thread, what the layers of a network decide in a forward pass: each layer
    that decides something for its input (offsets, routing weights, experts) says so with :func:`decided`,
    in the order the layers run. Nothing is kept on the (shared) modules themselves. A collection inside
    another hands its decisions on to the outer one too."""
    sink: list[tuple[nn.Module, Any]] = []
    token = _decisions.set(sink)
    try:
        yield sink
    finally:
        _decisions.reset(token)
        if (outer := _decisions.get()) is not None:
            outer.extend(sink)


def decided(layer: nn.Module, decision: Any) -> None:
    """Hand ``layer``'s decision to whoever is :func:`collecting` (nobody in training)."""
    if (sink := _decisions.get()) is not None:
        sink.append((layer, decision))


NEVER = 1.0
"""An exit threshold of 1.0 means "never stop here" (a saturated softmax can reach 1.0 exactly)."""


def forced_exit(exits: int, k: int) -> tuple[float, ...]:
    """Thresholds that send every input out at exit k: anytime prediction's view of exit k."""
    return tuple(0.0 if j == k else NEVER for j in range(exits - 1))


@dataclass(frozen=True)
class ExitPart:
    """An exit (or cascade stage) as built, before any input."""

    name: str
    resolution: int
    flops: int
    """What running it costs beyond the previous exit."""


class ExitOutput(Protocol):
    logits: torch.Tensor
    latency_ms: float


@dataclass(frozen=True)
class ExitDecision:
    records: tuple[ExitRecord, ...]
    answer: Prediction
    flops: float
    latency_ms: float
    breakdown: dict[str, float]


def run_exits(
    parts: Sequence[ExitPart],
    thresholds: Sequence[float],
    view_box: Box,
    compute: Callable[[int], ExitOutput],
    temperatures: torch.Tensor,
    labels: tuple[str, ...],
) -> ExitDecision:
    """Early exiting: compute exit k = 1, 2, … in turn; answer at the first whose calibrated confidence

        c_k = max_y softmax(z_k / T_k)(y)

    reaches its threshold τ_k (the last exit always answers). Exits after the answer are never computed.
    An exit's output may carry its own ``view_box`` (a focus step's patch); otherwise it saw ``view_box``."""
    records, answer, spent, latency, breakdown = [], None, 0.0, 0.0, {}
    for k, (part, threshold) in enumerate(zip(parts, [*thresholds, None])):
        computed = answer is None
        out = compute(k) if computed else None
        prediction = None
        if out is not None:
            spent, latency = spent + part.flops, latency + out.latency_ms
            breakdown[part.name] = part.flops
            prediction = prediction_from_probabilities((out.logits / temperatures[k]).softmax(-1), labels)
            if threshold is None or (threshold < NEVER and prediction.confidence >= threshold):
                answer = prediction
        records.append(
            ExitRecord(
                index=k,
                name=part.name,
                resolution=part.resolution,
                view_box=getattr(out, "view_box", view_box),
                computed=computed,
                taken=computed and answer is not None,
                threshold=threshold,
                confidence=prediction.confidence if prediction else None,
                prediction=prediction,
                flops=part.flops,
                flops_cumulative=spent if computed else spent + part.flops,
                latency_ms=out.latency_ms if out else None,
            )
        )
    return ExitDecision(tuple(records), answer, spent, latency, breakdown)


class ThresholdExits:
    """Knobs and operating points of a calibrated early-exit model: one threshold τ_k per early exit
    (the last exit has none: it always answers). Subclasses set ``point_thresholds`` (operating
    point → τ), ``default_point`` and ``exit_names()``."""

    point_thresholds: dict[str, tuple[float, ...]]
    default_point: str

    def exit_names(self) -> list[str]:
        raise NotImplementedError

    def knobs(self) -> list[Knob]:
        return self.threshold_knobs()

    def threshold_knobs(self) -> list[Knob]:
        """τ_k per early exit, each defaulting to the default point's."""
        defaults = self.point_thresholds[self.default_point]
        return [
            Knob(
                f"tau_{k + 1}",
                f"Exit threshold after {name}",
                0.0,
                NEVER,
                0.01,
                round(default, 3),
                f"Stop after exit {k + 1} when its calibrated confidence is at least this. {NEVER} never stops here.",
            )
            for k, (name, default) in enumerate(zip(self.exit_names()[:-1], defaults))
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        """Each point's thresholds as knob settings; a point whose every τ is 0 or "never" sends every input out
        at one exit, whatever its confidence: an anytime point, not one of the dynamic curve."""
        names = [knob.name for knob in self.threshold_knobs()]
        return {
            point: OperatingPoint(
                point,
                dict(zip(names, thresholds)),
                ANYTIME if all(t <= 0 or t >= NEVER for t in thresholds) else BUDGET,
            )
            for point, thresholds in self.point_thresholds.items()
        }

    def thresholds(self, settings: dict[str, float] | None) -> list[float]:
        """τ per early exit: from ``settings`` where given, else the default operating point's."""
        settings = settings or {}
        return [settings.get(knob.name, knob.default) for knob in self.threshold_knobs()]

    def applied(self, thresholds: list[float]) -> dict[str, float]:
        """The knob settings a trace was decided under."""
        return {f"tau_{k + 1}": t for k, t in enumerate(thresholds)}


@dataclass(frozen=True)
class StaticOutput:
    """One run of a static network on one input."""

    logits: torch.Tensor
    flops: int
    latency_ms: float
    part: str
    """What ran, e.g. "lite0 @ 224 px"."""
    notes: tuple[str, ...] = ()
    """What was done to the input to fit the network (e.g. resized to 32×32)."""


class StaticClassifier:
    """A static network behind the zoo's interface: one part that always runs, and no knobs, or only knobs
    of the input it is given (e.g. its resolution). Subclasses provide ``name``, ``labels`` and ``run``."""

    baselines: tuple[str, ...] = ()
    default_point = "static"

    def knobs(self) -> list[Knob]:
        return []

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {"static": OperatingPoint("static", {}, STATIC)}

    def run(self, image: InputImage, settings: dict[str, float]) -> StaticOutput:
        raise NotImplementedError

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        settings = knob_values(self.knobs(), settings)
        key = ("output", *settings.values())
        if key not in memo:
            memo[key] = self.run(image, settings)
        out: StaticOutput = memo[key]
        cost = Cost(out.flops, out.flops, {out.part: out.flops}, out.latency_ms)
        prediction = prediction_from_probabilities(out.logits.softmax(-1), self.labels)
        return Trace(self.name, image.name, image.size, prediction, cost, (), settings, image.notes + out.notes)

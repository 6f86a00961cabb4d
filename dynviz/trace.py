"""The trace: what a dynamic network decided for one input, and what it paid.

Every model answers ``analyze(image)`` with a :class:`Trace`; every view, the
CLI and the explanations read traces only. Two rules keep views model-agnostic:
geometry is in the input image's pixel coordinates, and cost is in one unit,
multiply–accumulates (what the dynamic-network papers call "FLOPs").
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

Box = tuple[float, float, float, float]
"""(x0, y0, x1, y1) in input-image pixels."""


def rounded(values: list[float], digits: int) -> tuple[float, ...]:
    """Per-unit scores as a record stores them: enough digits to read, few enough for a small JSON."""
    return tuple(round(v, digits) for v in values)


@dataclass(frozen=True)
class TopClass:
    index: int
    label: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    top: tuple[TopClass, ...]
    """Best first."""

    @property
    def label(self) -> str:
        return self.top[0].label

    @property
    def index(self) -> int:
        return self.top[0].index

    @property
    def confidence(self) -> float:
        return self.top[0].probability


@dataclass(frozen=True)
class Cost:
    """Multiply–accumulates spent on this input, against the static network it replaces."""

    flops: float
    flops_full: float
    """What the static counterpart spends on every input."""
    breakdown: dict[str, float]
    """Part name → multiply–accumulates spent in it (parts not run are absent)."""
    latency_ms: float
    baselines: dict[str, float] = field(default_factory=dict)
    """Other static reference models → their multiply–accumulates, for comparison."""

    @property
    def fraction(self) -> float:
        return self.flops / self.flops_full


class Record(Protocol):
    """One decision of a model for one input: a frozen dataclass with a unique ``kind``, registered with
    :func:`record_kind` where its family is defined, so that traces holding it round-trip through JSON."""

    kind: ClassVar[str]

    @staticmethod
    def summarize(records: list[Any]) -> dict[str, Any]:
        """The CLI row's columns for this kind's records of one trace."""


RECORD_TYPES: dict[str, type] = {}
"""Every record kind, by its ``kind``: filled by :func:`record_kind`."""


def record_kind(cls: type) -> type:
    """Register a record class under its ``kind`` (a family's module does this where it defines its record)."""
    if RECORD_TYPES.get(cls.kind, cls) is not cls:
        raise ValueError(f"record kind {cls.kind!r} is taken by {RECORD_TYPES[cls.kind].__name__}")
    RECORD_TYPES[cls.kind] = cls
    return cls


@record_kind
@dataclass(frozen=True)
class ExitRecord:
    """One exit (or cascade stage): computed or not, and whether it answered."""

    kind: ClassVar[str] = "exit"
    index: int
    name: str
    resolution: int
    view_box: Box
    """The region of the input image this stage looked at."""
    computed: bool
    taken: bool
    threshold: float | None
    """Confidence needed to stop here; None for the last exit, which always answers."""
    confidence: float | None
    prediction: Prediction | None
    flops: float
    """This stage's own cost."""
    flops_cumulative: float
    """Cost of reaching and running this exit."""
    latency_ms: float | None

    @staticmethod
    def summarize(records: list[ExitRecord]) -> dict[str, Any]:
        taken = next(r for r in records if r.taken)
        return {"exit": taken.index, "exit_name": taken.name, "exit_resolution": taken.resolution}


@record_kind
@dataclass(frozen=True)
class NodeRecord:
    """One node of a network's computation grid (MSDNet: a layer at one scale): computed, or
    skipped because the input left at an earlier exit."""

    kind: ClassVar[str] = "node"
    layer: int
    scale: int
    """0 = finest."""
    resolution: int
    """Side of its feature map, in pixels."""
    block: int
    """The exit whose block holds it (0-based)."""
    computed: bool
    flops: float

    @staticmethod
    def summarize(records: list[NodeRecord]) -> dict[str, Any]:
        return {"nodes_computed": sum(r.computed for r in records), "nodes": len(records)}


@record_kind
@dataclass(frozen=True)
class BlockRecord:
    """One residual block under an execution gate (layer skipping): run or skipped for this input."""

    kind: ClassVar[str] = "block"
    index: int
    name: str
    stage: int
    resolution: int
    """Side of its output feature map, in pixels of the network's input."""
    probability: float | None
    """The gate's probability of running it; None for a block without a gate (it always runs)."""
    executed: bool
    flops: float
    """What the block costs when it runs (its gate excluded)."""

    @staticmethod
    def summarize(records: list[BlockRecord]) -> dict[str, Any]:
        return {
            "blocks_executed": sum(r.executed for r in records),
            "blocks": len(records),
            "block_mask": "".join("1" if r.executed else "0" for r in records),
        }

    @staticmethod
    def gate_probabilities(records: list[BlockRecord]) -> list[float]:
        """Each gated decision's probability of running (a block without a gate decides nothing)."""
        return [r.probability for r in records if r.probability is not None]

    @staticmethod
    def gates(records: list[BlockRecord]) -> dict[str, float]:
        """Unit name → the probability of the one gate that decides it, for how each gate varies over a test set
        (a unit with many gates, a layer's channels or a block's positions, has no single one to follow)."""
        return {r.name: r.probability for r in records if r.probability is not None}

    @staticmethod
    def usage(records: list[BlockRecord]) -> dict[str, float]:
        """Unit name → how much of it ran (1 or 0), for per-class rates."""
        return {r.name: float(r.executed) for r in records}


@record_kind
@dataclass(frozen=True)
class ChannelRecord:
    """One layer's gated channels (channel skipping): which ran for this input."""

    kind: ClassVar[str] = "channels"
    layer: int
    name: str
    resolution: int
    probabilities: tuple[float, ...]
    """Each channel's gate probability of running."""
    active: tuple[bool, ...]
    flops: float
    """Spent in the layer's gated convolutions with these channels."""
    flops_full: float
    """What they cost with every channel."""

    @property
    def active_fraction(self) -> float:
        return sum(self.active) / len(self.active)

    @staticmethod
    def summarize(records: list[ChannelRecord]) -> dict[str, Any]:
        active, channels = sum(sum(r.active) for r in records), sum(len(r.active) for r in records)
        return {"active_channels": active, "channels": channels, "active_channel_fraction": round(active / channels, 4)}

    @staticmethod
    def gate_probabilities(records: list[ChannelRecord]) -> list[float]:
        return [p for r in records for p in r.probabilities]

    @staticmethod
    def usage(records: list[ChannelRecord]) -> dict[str, float]:
        return {r.name: r.active_fraction for r in records}

    @staticmethod
    def decisions(records: list[ChannelRecord]) -> dict[str, tuple[bool, ...]]:
        """Unit name → each of its gates' decision for this input, for how many of a unit's gates (a layer's
        channels, a block's positions) decide differently for different images (a block's one gate has its spread
        instead: :meth:`BlockRecord.gates`)."""
        return {r.name: r.active for r in records}


@record_kind
@dataclass(frozen=True)
class MaskRecord:
    """One residual block's spatial mask (pixel-level dynamic convolution): where it computed its output."""

    kind: ClassVar[str] = "mask"
    layer: int
    name: str
    resolution: int
    """Side of the block's output grid; the mask is resolution × resolution, row by row."""
    box: Box
    """The part of the input image the grid covers, in input pixels."""
    probabilities: tuple[float, ...]
    """Each position's probability of being computed."""
    computed: tuple[bool, ...]
    """Where the block's output was computed; elsewhere the input passed through its shortcut."""
    flops: float
    """Spent in the block's convolutions at the positions they computed."""
    flops_full: float
    """What they cost at every position."""

    @property
    def density(self) -> float:
        return sum(self.computed) / len(self.computed)

    @staticmethod
    def summarize(records: list[MaskRecord]) -> dict[str, Any]:
        computed, positions = sum(sum(r.computed) for r in records), sum(len(r.computed) for r in records)
        spent, full = sum(r.flops for r in records), sum(r.flops_full for r in records)
        return {
            "mask_density": round(computed / positions, 4),
            "masked_flops_fraction": round(spent / full, 4),
            "layer_densities": " ".join(f"{r.density:.2f}" for r in records),
        }

    @staticmethod
    def gate_probabilities(records: list[MaskRecord]) -> list[float]:
        return [p for r in records for p in r.probabilities]

    @staticmethod
    def usage(records: list[MaskRecord]) -> dict[str, float]:
        return {r.name: r.density for r in records}

    @staticmethod
    def decisions(records: list[MaskRecord]) -> dict[str, tuple[bool, ...]]:
        """Block name → whether each position was computed for this input (:meth:`ChannelRecord.decisions`)."""
        return {r.name: r.computed for r in records}


@record_kind
@dataclass(frozen=True)
class FocusRecord:
    """One focus step of glance and focus: the map the policy read, and the patch it chose."""

    kind: ClassVar[str] = "focus"
    step: int
    """1 for the first focus after the glance."""
    policy: str
    box: Box
    """The patch, in input pixels."""
    grid: int
    """The policy's map is grid × grid, row by row, over ``grid_box``."""
    grid_box: Box
    scores: tuple[float, ...]
    """The policy's score of each cell (a class-activation map, or the learned policy's logits)."""

    @staticmethod
    def summarize(records: list[FocusRecord]) -> dict[str, Any]:
        boxes = " | ".join(",".join(f"{v:.0f}" for v in r.box) for r in records)
        return {"focus_steps": len(records), "policy": records[0].policy, "crop_boxes": boxes}


def pairs(values: tuple[float, ...]) -> list[tuple[float, float]]:
    """Flattened (x, y) values → points."""
    return list(zip(values[::2], values[1::2]))


def mean_offset_length(points: tuple[float, ...], references: tuple[float, ...]) -> float:
    """The mean distance, in input pixels, between sampled points and the regular points they moved from
    (both flattened (x, y) pairs)."""
    moved = pairs(points)
    return sum(math.dist(p, r) for p, r in zip(moved, pairs(references))) / max(1, len(moved))


@record_kind
@dataclass(frozen=True)
class SamplingRecord:
    """One deformable convolution (DCNv2): where each output position sampled its input, and how much each
    sample counted. Positions run row by row over a ``resolution`` × ``resolution`` grid, taps row by row over
    the ``kernel`` × ``kernel`` kernel; points are (x, y) pairs in input-image pixels."""

    kind: ClassVar[str] = "sampling"
    layer: int
    name: str
    resolution: int
    box: Box
    """The part of the input image the grid covers, in input pixels."""
    kernel: int
    grid: tuple[float, ...]
    """[position][tap] (x, y): the regular kernel's points, where the samples would be without offsets."""
    points: tuple[float, ...]
    """[position][tap] (x, y): where the samples were taken (grid + learned offsets)."""
    modulation: tuple[float, ...]
    """[position][tap]: the learned weight Δm of each sample, in 0..1."""

    @property
    def taps(self) -> int:
        return self.kernel * self.kernel

    def position_points(self, position: int) -> list[tuple[float, float]]:
        """The sampled (x, y) of one output position, tap by tap."""
        return pairs(self.points[2 * position * self.taps : 2 * (position + 1) * self.taps])

    def position_grid(self, position: int) -> list[tuple[float, float]]:
        """The regular kernel's (x, y) of one output position, tap by tap."""
        return pairs(self.grid[2 * position * self.taps : 2 * (position + 1) * self.taps])

    def position_modulation(self, position: int) -> list[float]:
        return list(self.modulation[position * self.taps : (position + 1) * self.taps])

    @property
    def mean_offset(self) -> float:
        return mean_offset_length(self.points, self.grid)

    @staticmethod
    def summarize(records: list[SamplingRecord]) -> dict[str, Any]:
        return {"mean_offset_px": " ".join(f"{r.mean_offset:.2f}" for r in records)}


@record_kind
@dataclass(frozen=True)
class DeformableAttentionRecord:
    """One deformable attention layer (DAT): keys and values sampled at reference points moved by offsets that
    the queries predict, one set per group of heads. Points are (x, y) pairs in input-image pixels."""

    kind: ClassVar[str] = "deformable_attention"
    layer: int
    name: str
    resolution: int
    """The queries form a ``resolution`` × ``resolution`` grid over ``box``, row by row."""
    box: Box
    heads: int
    groups: int
    references: tuple[float, ...]
    """[key] (x, y): the uniform grid of reference points."""
    points: tuple[float, ...]
    """[group][key] (x, y): where each group's keys and values were sampled."""
    attention: tuple[float, ...]
    """[head][query][key]: each head's attention weights over the sampled keys (the class token's query is
    not kept)."""

    @property
    def keys(self) -> int:
        return len(self.references) // 2

    def group_points(self, group: int) -> list[tuple[float, float]]:
        return pairs(self.points[2 * group * self.keys : 2 * (group + 1) * self.keys])

    def weights(self, head: int, query: int) -> list[float]:
        first = (head * self.resolution**2 + query) * self.keys
        return list(self.attention[first : first + self.keys])

    @property
    def mean_offset(self) -> float:
        return mean_offset_length(self.points, self.references * self.groups)

    @staticmethod
    def summarize(records: list[DeformableAttentionRecord]) -> dict[str, Any]:
        return {"mean_attention_offset_px": " ".join(f"{r.mean_offset:.2f}" for r in records)}


def entropy(weights: tuple[float, ...]) -> float:
    """Shannon entropy (nats) of non-negative weights normalised to sum 1."""
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights if w > 0) if total > 0 else 0.0


@record_kind
@dataclass(frozen=True)
class RoutingRecord:
    """One input-conditioned convolution (CondConv): the weights this input gave each expert kernel."""

    kind: ClassVar[str] = "routing"
    layer: int
    name: str
    resolution: int
    weights: tuple[float, ...]
    """The routing weight r_k(x) of each expert kernel, in 0..1 (sigmoid: they need not sum to 1)."""

    @staticmethod
    def summarize(records: list[RoutingRecord]) -> dict[str, Any]:
        return {"routing_entropy": round(sum(entropy(r.weights) for r in records) / len(records), 4)}

    @staticmethod
    def usage(records: list[RoutingRecord]) -> dict[str, float]:
        return {f"{r.name} · expert {k + 1}": w for r in records for k, w in enumerate(r.weights)}


@record_kind
@dataclass(frozen=True)
class ExpertRecord:
    """One mixture-of-experts layer of a vision transformer: the expert each token went to."""

    kind: ClassVar[str] = "experts"
    layer: int
    name: str
    experts: int
    resolution: int
    """The image's tokens form a ``resolution`` × ``resolution`` grid over ``box``, row by row."""
    box: Box
    choices: tuple[int, ...]
    """[token] the expert (0-based) that ran for each image token, best first when several did (the
    class token's choice is ``class_choice``)."""
    gates: tuple[float, ...]
    """[token] the router's gate value of that expert."""
    class_choice: int
    per_token: int = 1
    """Experts run per token (top-k); ``choices`` holds the first of each token's."""
    flops: float = 0.0
    """Spent in this layer's experts."""

    @property
    def load(self) -> list[float]:
        """The share of image tokens each expert took."""
        return [self.choices.count(e) / len(self.choices) for e in range(self.experts)]

    @staticmethod
    def summarize(records: list[ExpertRecord]) -> dict[str, Any]:
        return {f"experts_layer{r.layer + 1}": "".join(str(c) for c in r.choices) for r in records}

    @staticmethod
    def usage(records: list[ExpertRecord]) -> dict[str, float]:
        return {f"{r.name} · expert {e + 1}": share for r in records for e, share in enumerate(r.load)}


@record_kind
@dataclass(frozen=True)
class TokenGridRecord:
    """One computed stage of a transformer cascade (DVT): its grid of tokens over the view, where its class
    token attended, and what the previous stage handed over."""

    kind: ClassVar[str] = "tokens"
    stage: int
    grid: int
    """The stage's tokens form a ``grid`` × ``grid`` grid over ``box``, row by row."""
    box: Box
    class_attention: tuple[float, ...]
    """[token] the class token's attention to each patch token in the stage's last layer (mean of the heads)."""
    handed_over: tuple[float, ...] = ()
    """[token] the reused relationships' bias on the class token's attention to each patch (mean of layers and
    heads): where the previous stage told this one to look; empty for a stage that reuses nothing."""

    @staticmethod
    def summarize(records: list[TokenGridRecord]) -> dict[str, Any]:
        return {"token_grids": " ".join(f"{r.grid}x{r.grid}" for r in records)}


PROCESSED, GLANCED, SKIPPED = "processed", "glanced", "skipped"
"""What a temporal model did with a frame: ran its backbone on it, only glanced at it (a cheap network or
test), or never looked."""


@record_kind
@dataclass(frozen=True)
class FrameRecord:
    """One frame of a clip: what a temporal model did with it (survey §5), in the order of the clip."""

    kind: ClassVar[str] = "frame"
    index: int
    time_s: float
    action: str
    """:data:`PROCESSED`, :data:`GLANCED` or :data:`SKIPPED`."""
    flops: float
    """Spent on this frame (glance, test and backbone)."""
    order: int | None = None
    """1-based place of the frame in the order the model processed frames; None when it was not processed."""
    box: Box | None = None
    """The part of the frame the backbone saw, in frame pixels; None when it did not look (or does not say)."""
    resolution: int = 0
    """Side of the backbone's view, in pixels (0 when it did not look, or does not say)."""
    prediction: Prediction | None = None
    """This frame's answer: computed on it, or, for stream labelling, the one carried over to it."""
    evidence: float | None = None
    """The clip answer's confidence once this frame was processed (models that stop when sure)."""
    change: float | None = None
    """The cheap test's score of change since the last processed frame (models that skip repeated content)."""
    glance: float | None = None
    """The glance's top-1 confidence on this frame (models that glance at every frame to choose where to look)."""
    cut: bool = False
    """A scene change was found at this frame."""

    @staticmethod
    def summarize(records: list[FrameRecord]) -> dict[str, Any]:
        return {
            "frames": len(records),
            "frames_processed": sum(r.action == PROCESSED for r in records),
            "frames_glanced": sum(r.action == GLANCED for r in records),
            "cuts": sum(r.cut for r in records),
        }

    @staticmethod
    def rows(input_name: str, records: list[FrameRecord]) -> list[dict[str, Any]]:
        """One row per frame (the CLI's ``--per-frame``): its answer where it has one, and what it cost."""
        return [
            {
                "input": input_name,
                "frame": r.index,
                "time_s": r.time_s,
                "label": r.prediction.label if r.prediction else None,
                "label_index": r.prediction.index if r.prediction else None,
                "confidence": round(r.prediction.confidence, 6) if r.prediction else None,
                "processed": r.action == PROCESSED,
                "flops": int(r.flops),
            }
            for r in records
        ]


@dataclass(frozen=True)
class Trace:
    model: str
    input_name: str
    input_size: tuple[int, int]
    """(width, height) of the input image."""
    prediction: Prediction
    cost: Cost
    records: tuple[Record, ...]
    settings: dict[str, float]
    """The knob values this trace was decided under."""
    notes: tuple[str, ...] = ()

    def records_of(self, kind: type) -> list:
        return [r for r in self.records if isinstance(r, kind)]

    @property
    def answered_at(self) -> ExitRecord | None:
        """The exit that answered, for early-exit models."""
        return next((r for r in self.records_of(ExitRecord) if r.taken), None)

    def summary(self) -> dict[str, Any]:
        """One flat row: the answer, the cost and each record kind's decision summary."""
        row: dict[str, Any] = {
            "input": self.input_name,
            "model": self.model,
            "label": self.prediction.label,
            "label_index": self.prediction.index,
            "confidence": round(self.prediction.confidence, 6),
            "flops": int(self.cost.flops),
            "flops_full": int(self.cost.flops_full),
            "latency_ms": round(self.cost.latency_ms, 3),
        }
        for kind in RECORD_TYPES.values():
            if records := self.records_of(kind):
                row |= kind.summarize(records)
        return row

    def gate_probabilities(self) -> list[float]:
        """The probability behind each decision that a gate threshold makes (a block, a channel, a position),
        from every record kind that declares ``gate_probabilities``."""
        return [
            p
            for kind in RECORD_TYPES.values()
            if hasattr(kind, "gate_probabilities") and (records := self.records_of(kind))
            for p in kind.gate_probabilities(records)
        ]

    def values(self) -> int:
        """How many values its records hold, each tuple's items counted: a measure of its memory that caches
        bound (a deformable layer's record holds every sampling point)."""
        return 1 + sum(
            1 + sum(len(v) if isinstance(v, tuple) else 1 for v in vars(record).values()) for record in self.records
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["records"] = [{"kind": r.kind, **dataclasses.asdict(r)} for r in self.records]
        return data

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        return build(cls, data)

    @classmethod
    def from_json(cls, text: str) -> Trace:
        return cls.from_dict(json.loads(text))


def build(hint: Any, value: Any) -> Any:
    """Rebuild typed dataclasses from JSON-shaped data, following the type hints."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Record:
        return build(RECORD_TYPES[value["kind"]], value)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(
            **{f.name: build(hints[f.name], value[f.name]) for f in dataclasses.fields(hint) if f.name in value}
        )
    if origin in (typing.Union, types.UnionType):
        return build(next(a for a in args if a is not type(None)), value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v) for v in value)
        return tuple(build(a, v) for a, v in zip(args, value))
    if origin is dict:
        return {k: build(args[1], v) for k, v in value.items()}
    if origin is list:
        return [build(args[0], v) for v in value]
    return value

"""One input through every bundled model: what each kind of dynamic network decided, and what it saved.

A row per model, read from its trace: the answer, the FLOPs it spent against
its static twin (the network it would be without its decisions), the measured
latency, and its decision in a few words. Each model belongs to the family of
the decisions it declares (an exit, skipped blocks, gated channels, pixel
masks, glance and focus), which also names the page that shows them in full.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from dynviz.trace import (
    GLANCED,
    PROCESSED,
    BlockRecord,
    ChannelRecord,
    DeformableAttentionRecord,
    ExitRecord,
    ExpertRecord,
    FocusRecord,
    FrameRecord,
    MaskRecord,
    NodeRecord,
    RoutingRecord,
    SamplingRecord,
    Trace,
    entropy,
)


@dataclass(frozen=True)
class Family:
    name: str
    page: str
    """The page that shows this family's decisions."""
    model_key: str
    """That page's model picker (a session-state key)."""
    view: str | None = None
    """For a page with several views, the one to open (session-state ``view_key`` = ``view``)."""
    view_key: str | None = None


STATIC = Family("static network", "pages/early_exit.py", "exit_model")
FAMILIES: tuple[tuple[type, Family], ...] = (
    # First match wins: a glance-and-focus trace also holds exits, RANet's exits hold resolutions.
    (FrameRecord, Family("frame selection", "pages/video.py", "video_model")),
    (FocusRecord, Family("glance and focus", "pages/spatial.py", "focus_model", "Regions", "spatial_view")),
    (MaskRecord, Family("pixel masks", "pages/spatial.py", "mask_model", "Pixel masks", "spatial_view")),
    (BlockRecord, Family("layer skipping", "pages/layer_skipping.py", "skip_model")),
    (ChannelRecord, Family("channel skipping", "pages/channel_gating.py", "channel_model")),
    (NodeRecord, Family("early exit", "pages/early_exit.py", "exit_model")),
    (SamplingRecord, Family("deformable sampling", "pages/deformable.py", "deformable_model")),
    (DeformableAttentionRecord, Family("deformable sampling", "pages/deformable.py", "deformable_model")),
    (RoutingRecord, Family("dynamic parameters", "pages/dynamic_parameters.py", "parameters_model")),
    (ExpertRecord, Family("dynamic parameters", "pages/dynamic_parameters.py", "parameters_model")),
)
EARLY_EXIT = Family("early exit", "pages/early_exit.py", "exit_model")
RESOLUTION = Family("resolution adaptation", "pages/spatial.py", "resolution_model", "Resolution", "spatial_view")


def family_of(records: Collection[type], declared: str = "") -> Family:
    """The family of a model whose traces hold ``records`` (the kinds it registered); exit models that declare
    themselves resolution-adaptive (their card's family, e.g. RANet's) go to the resolution view."""
    for kind, family in FAMILIES:
        if kind in records:
            return family
    if ExitRecord in records:
        return RESOLUTION if "resolution" in declared else EARLY_EXIT
    return STATIC


def decision_text(trace: Trace) -> str:
    """The decision in a few words, from the records the trace holds."""
    if frames := trace.records_of(FrameRecord):
        counts = Counter(r.action for r in frames)
        glanced = f", glanced at {counts[GLANCED]}" if counts[GLANCED] else ""
        cuts = sum(r.cut for r in frames)
        return f"looked at {counts[PROCESSED]} of {len(frames)} frames{glanced}" + (
            f", found {cuts} cuts" if cuts else ""
        )
    if focus := trace.records_of(FocusRecord):
        return f"glance, then {len(focus)} focus step{'s' if len(focus) != 1 else ''}"
    if masks := trace.records_of(MaskRecord):
        density = sum(sum(r.computed) for r in masks) / sum(len(r.computed) for r in masks)
        return f"computed {density:.0%} of the positions"
    if blocks := trace.records_of(BlockRecord):
        return f"ran {sum(r.executed for r in blocks)} of {len(blocks)} blocks"
    if channels := trace.records_of(ChannelRecord):
        share = sum(sum(r.active) for r in channels) / sum(len(r.active) for r in channels)
        return f"ran {share:.0%} of the gated channels"
    if sampled := trace.records_of(SamplingRecord) + trace.records_of(DeformableAttentionRecord):
        return f"moved its samples {sum(r.mean_offset for r in sampled) / len(sampled):.1f} px on average"
    if routings := trace.records_of(RoutingRecord):
        return f"mixed its kernels (routing entropy {sum(entropy(r.weights) for r in routings) / len(routings):.2f})"
    if experts := trace.records_of(ExpertRecord):
        busiest = sum(max(r.load) for r in experts) / len(experts)
        return f"routed its tokens to experts ({busiest:.0%} to the busiest)"
    if exits := trace.records_of(ExitRecord):
        taken = next(r for r in exits if r.taken)
        return f"answered at exit {taken.index + 1} of {len(exits)} ({taken.resolution} px)"
    return "ran everything (static)"


@dataclass(frozen=True)
class Comparison:
    """One model's row."""

    model: str
    family: Family
    answer: str
    confidence: float
    flops: float
    flops_full: float
    """What its static twin spends on every input."""
    latency_ms: float
    decision: str
    notes: tuple[str, ...]

    @property
    def saved(self) -> float:
        """The share of its static twin's FLOPs it did not spend (negative: it spent more)."""
        return 1 - self.flops / self.flops_full


def compare(traces: Iterable[Trace], families: dict[str, Family]) -> list[Comparison]:
    """A row per trace, the largest saving first; ``families``: each model's (:func:`family_of`)."""
    rows = [
        Comparison(
            trace.model,
            families[trace.model],
            trace.prediction.label,
            trace.prediction.confidence,
            trace.cost.flops,
            trace.cost.flops_full,
            trace.cost.latency_ms,
            decision_text(trace),
            trace.notes,
        )
        for trace in traces
    ]
    return sorted(rows, key=lambda row: (-row.saved, row.model))


def savings_by_family(rows: Iterable[Comparison]) -> dict[str, float]:
    """Each family's mean saving over its models on this input, in the order families first appear."""
    shares: dict[str, list[float]] = {}
    for row in rows:
        shares.setdefault(row.family.name, []).append(row.saved)
    return {family: sum(values) / len(values) for family, values in shares.items()}

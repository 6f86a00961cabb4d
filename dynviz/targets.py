"""What the project aims for with each bundled model, and how far its card says it got.

A target is a point a model should reach (top-1 at least so much, at no more than a share of a
reference network's FLOPs) or a static curve it should lie above (more accurate than the static
networks at its own cost). Each comes from an issue of the project. Whether it is met, and by how
much it is missed, is read from the cards' measured points (written by ``eval``), never typed by
hand, so a retrained model's card updates its report. Reading targets needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynviz.cards import ANYTIME, BUDGET, ModelCard, PointResult, anytime_point, load_card, static_frontier
from dynviz.units import format_flops


@dataclass(frozen=True)
class TargetReport:
    model: str
    claim: str
    issue: int
    met: bool | None
    """None where the cards cannot tell (a card missing, or measured on other images than its reference)."""
    how_far: str

    @property
    def verdict(self) -> str:
        return {True: "met", False: "missed", None: "not comparable"}[self.met]


@dataclass(frozen=True)
class PointTarget:
    """Top-1 at least ``top1`` (or within ``within_points`` of ``reference``'s default point), at no more than
    ``flops_share`` of the reference's mean FLOPs where given, by one of the model's points ``among`` (a kind of
    point, or one point's name; every point where empty)."""

    model: str
    issue: int
    reference: str | None = None
    within_points: float = 0.0
    top1: float | None = None
    flops_share: float | None = None
    among: str = ""

    @property
    def claim(self) -> str:
        which = {"": "", ANYTIME: "best exit ", BUDGET: "budgeted curve "}.get(self.among, f"“{self.among}” ")
        if self.top1 is not None:
            accuracy = f"≥ {100 * self.top1:.1f}%"
        elif self.within_points:
            accuracy = f"within {self.within_points:g} pt of {self.reference}"
        else:
            accuracy = f"≥ {self.reference}'s top-1"
        cost = "" if self.flops_share is None else f" at ≤ {self.flops_share:g}× its FLOPs"
        return f"{which}{accuracy}{cost}"

    def report(self, card: ModelCard | None, reference: ModelCard | None) -> TargetReport:
        unknown = _not_comparable(card, reference if self.reference else card)
        if unknown:
            return TargetReport(self.model, self.claim, self.issue, None, unknown)
        needed, reference_flops = self.top1, None
        if self.reference is not None:
            base = reference.point(reference.default_point)
            reference_flops = base.mean_flops
            if needed is None:
                needed = base.top1 - self.within_points / 100
        max_flops = None if self.flops_share is None else self.flops_share * reference_flops
        points = [p for p in card.evaluation.points if self.among in ("", p.kind, p.name)]
        affordable = [p for p in points if max_flops is None or p.mean_flops <= max_flops * (1 + 1e-9)]
        accurate = [p for p in points if p.top1 >= needed - 1e-9]
        best = max(affordable, key=lambda p: p.top1, default=None)
        cheapest = min(accurate, key=lambda p: p.mean_flops, default=None)
        if best is not None and best.top1 >= needed - 1e-9:
            return TargetReport(self.model, self.claim, self.issue, True, _at(best, reference_flops))
        parts = [f"needs {100 * needed:.1f}%"]
        if best is None:
            parts.append(f"no point within {self.flops_share:g}×")
        else:
            within = "" if max_flops is None else f" within {self.flops_share:g}×"
            parts.append(f"best{within}: {_at(best, reference_flops)}, {100 * (needed - best.top1):.1f} pt short")
        if max_flops is not None:
            parts.append(f"reached only at {_at(cheapest, reference_flops)}" if cheapest else "no point reaches it")
        return TargetReport(self.model, self.claim, self.issue, False, "; ".join(parts))


@dataclass(frozen=True)
class CurveTarget:
    """Above the static curve of ``statics`` (the frontier of their cards' points, :func:`static_frontier`,
    joined by straight lines): the model's default point more accurate than the static networks at its own cost (its
    best point ``among`` its kind where the default lies outside the curve). Points cheaper or dearer than every
    static point are not compared (no extrapolation)."""

    model: str
    issue: int
    statics: tuple[str, ...]
    among: str = BUDGET

    @property
    def claim(self) -> str:
        return f"above the static curve of {', '.join(self.statics)}"

    def report(self, card: ModelCard | None, statics: list[ModelCard | None]) -> TargetReport:
        for static in statics:
            if unknown := _not_comparable(card, static):
                return TargetReport(self.model, self.claim, self.issue, None, unknown)
        frontier = static_frontier(p for static in statics for p in static.evaluation.points)
        curve = [(p.mean_flops, p.top1) for p in frontier]
        margins = [
            (p.top1 - level, p)
            for p in card.evaluation.points
            if p.kind == self.among and (level := _level(curve, p.mean_flops)) is not None
        ]
        outside = sum(p.kind == self.among for p in card.evaluation.points) - len(margins)
        span = f"the static curve spans {format_flops(curve[0][0])} to {format_flops(curve[-1][0])}"
        if not margins:
            return TargetReport(self.model, self.claim, self.issue, None, f"no point within its FLOPs ({span})")
        margin, best = max(margins, key=lambda m: m[0])
        default = next((m for m, p in margins if p.name == card.default_point), None)
        text = f"{_signed(margin)} at best, {_at(best, None)}"
        if default is not None and best.name != card.default_point:
            text = f"{_signed(default)} at the default point; " + text
        if outside:
            text += f"; {outside} points outside its FLOPs not compared ({span})"
        deciding = default if default is not None else margin
        return TargetReport(self.model, self.claim, self.issue, deciding > 0, text)


Target = PointTarget | CurveTarget

_RESNETS = ("resnet8_cifar", "resnet14_cifar", "resnet20_cifar", "resnet32_cifar", "resnet56_cifar")
TARGETS: tuple[Target, ...] = (
    # Issue 18: the CIFAR-10 zoo trained to within about a point of its papers.
    PointTarget("resnet20_cifar", 18, top1=0.905),
    PointTarget("resnet32_cifar", 18, top1=0.915),
    PointTarget("resnet56_cifar", 18, top1=0.923),
    PointTarget("msdnet_cifar", 18, top1=0.925, among=ANYTIME),
    PointTarget("msdnet_cifar", 18, top1=0.86, among=anytime_point(0)),
    PointTarget("msdnet_cifar", 18, reference="resnet56_cifar", flops_share=0.6, among=BUDGET),
    PointTarget("ranet_cifar", 18, reference="resnet32_cifar", among=ANYTIME),
    PointTarget("skip_resnet_cifar", 18, reference="resnet32_cifar", within_points=1, flops_share=0.6),
    PointTarget("channel_gate_resnet_cifar", 18, reference="resnet32_cifar", within_points=1.5, flops_share=0.5),
    PointTarget("dynconv_resnet_cifar", 18, reference="resnet32_cifar", within_points=1.5, flops_share=0.5),
    *(
        CurveTarget(name, 18, _RESNETS)
        for name in (
            "msdnet_cifar",
            "ranet_cifar",
            "skip_resnet_cifar",
            "channel_gate_resnet_cifar",
            "dynconv_resnet_cifar",
        )
    ),
    # Issue 22: dynamic Lite0 models that beat the static baselines on photos.
    *(
        PointTarget(name, 22, reference="lite0", within_points=1.5, flops_share=0.75)
        for name in ("lite0_skip", "lite0_channels", "lite0_dynconv")
    ),
    PointTarget("gfnet_lite0", 22, reference="lite0", within_points=1, flops_share=0.6),
    PointTarget("lite_cascade", 22, reference="lite2", within_points=0.5, flops_share=0.65),
    *(
        CurveTarget(name, 22, ("lite0_resized",))
        for name in ("lite0_skip", "lite0_channels", "lite0_dynconv", "gfnet_lite0")
    ),
)


def _cards(target: Target) -> list[ModelCard | None]:
    """``target``'s model's card, then its references' cards."""
    references = target.statics if isinstance(target, CurveTarget) else tuple(filter(None, (target.reference,)))
    return [load_card(name) for name in (target.model, *references)]


def _report_on(target: Target, cards: list[ModelCard | None]) -> TargetReport:
    card, *references = cards
    if isinstance(target, CurveTarget):
        return target.report(card, references)
    return target.report(card, references[0] if references else None)


@dataclass(frozen=True)
class CheckedReport:
    """A target on the cards' evaluation split, and the same target on every check that its model and all its
    references were measured on (issue 22: "the same ratios are checked on photos the project does not have")."""

    main: TargetReport
    checks: tuple[tuple[str, TargetReport], ...]
    """(what the check measured on, e.g. "imagenet-val (test, 644 images)", its report)."""


def checked_report(target: Target) -> CheckedReport:
    """``target`` against the bundled cards, and against every check they all hold."""
    cards = _cards(target)
    checks = []
    if all(cards):
        for data, split in sorted(set.intersection(*({(c.data, c.split) for c in card.checks} for card in cards))):
            measured = [card.measured_on(data, split) for card in cards]
            evaluation = measured[0].evaluation
            checks.append((f"{data} ({split}, {evaluation.images} {evaluation.unit})", _report_on(target, measured)))
    return CheckedReport(_report_on(target, cards), tuple(checks))


def reports_for(model: str) -> list[CheckedReport]:
    return [checked_report(target) for target in TARGETS if target.model == model]


def target_table() -> list[dict[str, str]]:
    """Every target and how far its model got, formatted for people (README, ``python -m dynviz targets``)."""
    rows = []
    for checked in map(checked_report, TARGETS):
        r = checked.main
        on_other_photos = "; ".join(f"{c.verdict} on {where}: {c.how_far}" for where, c in checked.checks)
        rows.append(
            {
                "model": r.model,
                "target": r.claim,
                "issue": str(r.issue),
                "met?": r.verdict,
                "how far": r.how_far,
                "on other photos": on_other_photos,
            }
        )
    return rows


def _not_comparable(card: ModelCard | None, reference: ModelCard | None) -> str | None:
    if card is None or card.evaluation is None:
        return "the model has no evaluated card"
    if reference is None or reference.evaluation is None:
        return "the reference has no evaluated card"
    if (card.evaluation.data, card.evaluation.split) != (reference.evaluation.data, reference.evaluation.split):
        return f"measured on other images than {reference.name}"
    return None


def _at(point: PointResult, reference_flops: float | None) -> str:
    share = "" if reference_flops is None else f", {point.mean_flops / reference_flops:.2f}×"
    return f"{100 * point.top1:.1f}% at {format_flops(point.mean_flops)}{share} (“{point.name}”)"


def _signed(margin: float) -> str:
    return f"{100 * margin:+.1f} pt".replace("-", "−")


def _level(curve: list[tuple[float, float]], flops: float) -> float | None:
    """The static curve's top-1 at ``flops``, between the two static points around it; None outside the curve.
    ``curve`` is a frontier (:func:`static_frontier`), so no two of its points have the same FLOPs."""
    for (f0, a0), (f1, a1) in zip(curve, curve[1:]):
        if f0 <= flops <= f1:
            return a0 + (a1 - a0) * (flops - f0) / (f1 - f0)
    return curve[0][1] if len(curve) == 1 and flops == curve[0][0] else None

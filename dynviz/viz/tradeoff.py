"""The trade-off chart: accuracy against mean FLOPs, from the cards' measured points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from dynviz.cards import ANYTIME, AgainstTwin, ModelCard, PointResult, static_frontier
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.style import STATIC, THRESHOLD, exit_color, legend_below, model_colors, titled

FOCUS_BELOW = 10
"""Points of accuracy shown below the least accurate static network or default operating point."""


def _hover(model: str, point: PointResult) -> str:
    return f"{model} · {point.name}: {100 * point.top1:.1f}% at {format_flops(point.mean_flops)} FLOPs"


@dataclass(frozen=True)
class LabelBox:
    """A rectangle in the chart's pixels (y up)."""

    left: float
    bottom: float
    right: float
    top: float

    def overlap(self, other: LabelBox) -> float:
        width = min(self.right, other.right) - max(self.left, other.left)
        height = min(self.top, other.top) - max(self.bottom, other.bottom)
        return max(width, 0.0) * max(height, 0.0)


PLOT_PIXELS = (760, 340)
"""The plotting area of a chart in the page's main column, wide layout (width, height): where labels are placed."""
CHARACTER_WIDTH, LINE_HEIGHT, MARKER_PIXELS = 0.56, 1.2, 6
"""A label's mean character width and its line height, in font sizes; a marker's radius in pixels."""
LABEL_SIDES = ("top center", "bottom center", "middle right", "middle left")


def padded(values: list[float]) -> tuple[float, float]:
    """An axis's range over ``values`` as plotly's autorange pads it (about 5% a side)."""
    pad = 0.05 * (max(values) - min(values)) or 0.5
    return min(values) - pad, max(values) + pad


def label_positions(
    labelled: dict[str, tuple[float, float]],
    others: Sequence[tuple[float, float]] = (),
    lines: tuple[float | None, float | None] = (None, None),
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    font_size: float = 12,
) -> dict[str, str]:
    """Where each labelled point's label goes (a plotly ``textposition``): above it, unless that label would print
    over an earlier label, a point (labelled or among ``others``), a reference line (``lines``: x, y) or the plot's
    edge; then below, right or left, whichever overlaps least. Points are placed left to right. ``x_range``,
    ``y_range``: the axes' ranges where the chart sets them (else the points' own, padded as plotly pads them);
    ``font_size``: the labels' (plotly's default is 12)."""
    points = [*labelled.values(), *others]
    x_range = x_range or padded([x for x, _ in points])
    y_range = y_range or padded([y for _, y in points])
    x_scale = PLOT_PIXELS[0] / (x_range[1] - x_range[0])
    y_scale = PLOT_PIXELS[1] / (y_range[1] - y_range[0])

    def pixel(x: float, y: float) -> tuple[float, float]:
        return (x - x_range[0]) * x_scale, (y - y_range[0]) * y_scale

    pixels = {name: pixel(x, y) for name, (x, y) in labelled.items()}
    plot = LabelBox(0, 0, *PLOT_PIXELS)
    fixed = [
        LabelBox(x - MARKER_PIXELS, y - MARKER_PIXELS, x + MARKER_PIXELS, y + MARKER_PIXELS)
        for x, y in (pixel(*point) for point in points)
    ]
    if lines[0] is not None:
        vertical = pixel(lines[0], y_range[0])[0]
        fixed.append(LabelBox(vertical - 1, 0, vertical + 1, PLOT_PIXELS[1]))
    if lines[1] is not None:
        horizontal = pixel(x_range[0], lines[1])[1]
        fixed.append(LabelBox(0, horizontal - 1, PLOT_PIXELS[0], horizontal + 1))

    def label_box(name: str, side: str) -> LabelBox:
        (x, y), gap = pixels[name], MARKER_PIXELS + 1
        width, height = CHARACTER_WIDTH * font_size * len(name), LINE_HEIGHT * font_size
        return {
            "top center": LabelBox(x - width / 2, y + gap, x + width / 2, y + gap + height),
            "bottom center": LabelBox(x - width / 2, y - gap - height, x + width / 2, y - gap),
            "middle right": LabelBox(x + gap, y - height / 2, x + gap + width, y + height / 2),
            "middle left": LabelBox(x - gap - width, y - height / 2, x - gap, y + height / 2),
        }[side]

    def clash(box: LabelBox, placed: list[LabelBox]) -> float:
        outside = (box.right - box.left) * (box.top - box.bottom) - box.overlap(plot)
        return outside + sum(box.overlap(other) for other in (*fixed, *placed))

    placed: list[LabelBox] = []
    positions = {}
    for name in sorted(pixels, key=lambda n: pixels[n]):
        positions[name] = min(LABEL_SIDES, key=lambda side: clash(label_box(name, side), placed))
        placed.append(label_box(name, positions[name]))
    return positions


def tradeoff_chart(
    cards: list[ModelCard],
    static_cards: list[ModelCard],
    highlight: tuple[str, str] | None = None,
    static_points: dict[str, PointResult] | None = None,
    colors: dict[str, str] | None = None,
) -> go.Figure:
    """Each dynamic model's curve (its budgeted operating points) and its anytime exits, and each static
    network from its own card (a single point, or a dotted curve for one measured at several settings) or
    from ``static_points`` (name → its point, e.g. the baselines a video model's card measured beside it),
    joined by the best static network at each cost (:func:`static_frontier`: what a dynamic curve must beat);
    ``highlight`` = (model, point) is ringed; ``colors``: each model's (:func:`model_colors`). Every card should be
    measured on the same inputs."""
    colors = colors or model_colors([card.name for card in cards])
    figure = go.Figure()
    for card in cards:
        color = colors[card.name]
        points = card.evaluation.points
        curves: dict[str, list[PointResult]] = {}
        for point in points:  # one curve per group (GFNet's policies); anytime points apart
            if point.kind != ANYTIME:
                curves.setdefault(point.group, []).append(point)
        anytime = [p for p in points if p.kind == ANYTIME]
        series_list = [
            (
                sorted(curve, key=lambda p: p.mean_flops),
                f"{card.name}{': ' + group if group else ''} (dynamic)",
                "lines+markers",
                "circle" if j == 0 else "square",
            )
            for j, (group, curve) in enumerate(curves.items())
        ]
        for series, label, mode, symbol in (*series_list, (anytime, f"{card.name}: one exit for all", "markers", "x")):
            if series:
                figure.add_scatter(
                    x=[p.mean_flops / 1e6 for p in series],
                    y=[100 * p.top1 for p in series],
                    mode=mode,
                    marker=dict(symbol=symbol, size=9, color=color),
                    line=dict(color=color),
                    name=label,
                    hovertext=[_hover(card.name, p) for p in series],
                    hoverinfo="text",
                )
        if highlight and highlight[0] == card.name and (chosen := card.point(highlight[1])):
            figure.add_scatter(
                x=[chosen.mean_flops / 1e6],
                y=[100 * chosen.top1],
                mode="markers",
                marker=dict(symbol="circle-open", size=22, color=THRESHOLD, line=dict(width=3)),
                name=f"chosen: {chosen.name}",
                hovertext=[_hover(card.name, chosen)],
                hoverinfo="text",
            )
    statics: dict[str, PointResult] = dict(static_points or {})
    for static in static_cards:
        series = sorted(static.evaluation.points, key=lambda p: p.mean_flops)
        if len(series) == 1:
            statics[static.name] = series[0]
            continue
        figure.add_scatter(
            x=[p.mean_flops / 1e6 for p in series],
            y=[100 * p.top1 for p in series],
            mode="lines+markers",
            marker=dict(symbol="diamond", size=8, color=STATIC),
            line=dict(color=STATIC, dash="dot"),
            name=f"{static.name} (static, each setting)",
            hovertext=[_hover(static.name, p) for p in series],
            hoverinfo="text",
        )
    frontier = static_frontier([*statics.values(), *(p for c in static_cards for p in c.evaluation.points)])
    if len(frontier) > 1:
        figure.add_scatter(
            x=[p.mean_flops / 1e6 for p in frontier],
            y=[100 * p.top1 for p in frontier],
            mode="lines",
            line=dict(color=STATIC, width=1, dash="dash"),
            name="best static network at each cost",
            hoverinfo="skip",
        )
    curves = [(x, y) for trace in figure.data for x, y in zip(trace.x, trace.y)]
    labelled = {name: (p.mean_flops / 1e6, 100 * p.top1) for name, p in statics.items()}
    # Open on where the networks differ: a gated curve's cheapest points (10–40% on CIFAR-10) would squeeze the
    # static networks and the default points into a few pixels. Plotly's autoscale (double-click) shows all.
    defaults = [p for card in cards if (p := card.point(card.default_point))]
    y_range = None
    if shown := [100 * p.top1 for p in (*statics.values(), *defaults)]:
        top = max(y for _, y in (*curves, *labelled.values()))
        y_range = (max(0.0, min(shown) - FOCUS_BELOW), min(100.0, top + 2))
        figure.update_yaxes(range=y_range)
    if statics:
        sides = label_positions(labelled, others=curves, y_range=y_range)
        figure.add_scatter(
            x=[x for x, _ in labelled.values()],
            y=[y for _, y in labelled.values()],
            mode="markers+text",
            marker=dict(symbol="diamond", size=11, color=STATIC),
            text=list(labelled),
            textposition=[sides[name] for name in labelled],
            name="static networks",
            hovertext=[_hover(name, p) for name, p in statics.items()],
            hoverinfo="text",
        )
    unit = cards[0].evaluation.unit.removesuffix("s") if cards else "image"
    figure.update_xaxes(title=f"mean {FLOPS_UNIT} per {unit}, M")
    figure.update_yaxes(title="top-1 accuracy, %")
    titled(figure, "How much accuracy for how much computation?", height=520)
    return legend_below(figure, gap=0.18)  # a legend of every model's curves takes several rows


def training_curves(
    curves: dict[str, tuple[tuple[float, ...], ...]], colors: dict[str, str] | None = None
) -> go.Figure:
    """Validation accuracy after each training epoch, one line per model (name → each epoch's accuracy per
    exit; the last exit's is drawn), in ``colors`` (:func:`model_colors`)."""
    colors = colors or model_colors(list(curves))
    figure = go.Figure()
    for name, history in curves.items():
        figure.add_scatter(
            x=list(range(1, len(history) + 1)),
            y=[100 * exits[-1] for exits in history],
            mode="lines",
            name=name,
            line=dict(color=colors[name]),
            hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.1f}}%<extra></extra>",
        )
    figure.update_xaxes(title="epoch")
    figure.update_yaxes(title="validation top-1 (%)")
    titled(figure, "How did each model learn? (validation accuracy after each epoch)", height=480)
    return legend_below(figure, gap=0.2)  # one entry per model on the data: several rows


SURVEY_FAMILIES = ("sample-wise", "spatial-wise", "temporal-wise")
LABEL_SIZE = 10
"""Home's chart labels every model: a smaller font than plotly's 12 keeps nineteen names apart."""


def twins_chart(rows: list[AgainstTwin]) -> go.Figure:
    """Every dynamic model's default operating point against its static twin: the share of the twin's FLOPs it
    spends and the accuracy it gains or loses, coloured by the survey's family."""
    points = {row.model: (100 * row.flops_share, 100 * row.top1_change) for row in rows}
    widest = max(max(x for x, _ in points.values()), 100)  # the x-axis starts at 0 and shows the twin's 100%
    sides = label_positions(points, lines=(100, 0), x_range=(0.0, 1.05 * widest), font_size=LABEL_SIZE)
    figure = go.Figure()
    for index, family in enumerate(SURVEY_FAMILIES):
        members = [row for row in rows if row.survey_family == family]
        if not members:
            continue
        figure.add_scatter(
            x=[100 * row.flops_share for row in members],
            y=[100 * row.top1_change for row in members],
            mode="markers+text",
            text=[row.model for row in members],
            textposition=[sides[row.model] for row in members],
            textfont=dict(size=LABEL_SIZE),
            marker=dict(size=10, color=exit_color(index)),
            name=family,
            hovertext=[
                f"{row.model}: {100 * row.point.top1:.1f}% at {format_flops(row.point.mean_flops)}<br>"
                f"{row.twin}: {100 * row.twin_point.top1:.1f}% at {format_flops(row.twin_point.mean_flops)}"
                for row in members
            ],
            hoverinfo="text",
        )
    figure.add_vline(x=100, line=dict(color=STATIC, dash="dot"))
    figure.add_hline(y=0, line=dict(color=STATIC, dash="dot"))
    figure.add_annotation(
        x=0,
        y=1,
        xref="paper",
        yref="paper",
        xanchor="left",
        yanchor="top",
        showarrow=False,
        text="cheaper and more accurate than its twin",
        font=dict(color=STATIC),
    )
    figure.update_xaxes(title=f"{FLOPS_UNIT} spent, % of its static twin's", rangemode="tozero")
    figure.update_yaxes(title="top-1 against its static twin, points")
    return titled(figure, "Does each dynamic network pay off against the static network it is built on?", 480)

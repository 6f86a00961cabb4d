"""Renderers for gate records: which blocks ran, which channels ran, and how that differs by class."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dynviz.cards import VARYING, ClassUsage
from dynviz.trace import BlockRecord, ChannelRecord, Trace
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.style import SKIPPED, STATIC, THRESHOLD, exit_color, titled

RAN = exit_color(2)
ONLY_FIRST, ONLY_SECOND = exit_color(0), exit_color(1)


def block_grid(trace: Trace, usage: ClassUsage | None = None, measured_on: str = "") -> go.Figure:
    """The blocks over depth: the gate's probability against θ (top), and with a card's ``usage``, where each gate's
    probability lies over the images it was ``measured_on``; the FLOPs each block spent (bottom)."""
    records = trace.records_of(BlockRecord)
    names = [r.name for r in records]
    colors = [RAN if r.executed else SKIPPED for r in records]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.55, 0.45])
    figure.add_bar(
        x=names,
        y=[1.0 if r.probability is None else r.probability for r in records],
        marker_color=colors,
        marker_pattern_shape=["." if r.probability is None else "" for r in records],
        text=[_verdict(r) for r in records],
        textposition="inside",
        # Dark on the skipped grey and on the dotted, mostly white bars of ungated blocks; white on the green.
        textfont_color=["white" if r.executed and r.probability is not None else "#262730" for r in records],
        hovertext=[_block_hover(r) for r in records],
        hoverinfo="text",
        name="gate probability of running",
        row=1,
        col=1,
    )
    if usage is not None and usage.gate_spread is not None:
        _add_gate_spread(figure, usage, measured_on)
    threshold = trace.settings.get("threshold")
    if threshold is not None:
        figure.add_hline(
            y=threshold,
            line=dict(color=THRESHOLD, dash="dash"),
            annotation=dict(text=f"θ = {threshold:g}"),
            annotation_position="right",  # beside the plot, clear of the bars
            row=1,
            col=1,
        )
    figure.add_bar(
        x=names,
        y=[r.flops if r.executed else 0 for r in records],
        marker_color=RAN,
        name=f"{FLOPS_UNIT} spent",
        hovertext=[f"{r.name}: {format_flops(r.flops)} FLOPs" for r in records],
        hoverinfo="text",
        row=2,
        col=1,
    )
    figure.add_bar(
        x=names,
        y=[0 if r.executed else r.flops for r in records],
        marker_color=SKIPPED,
        marker_pattern_shape="/",
        name=f"{FLOPS_UNIT} saved",
        hovertext=[f"{r.name}: skipped, saved {format_flops(r.flops)} FLOPs" for r in records],
        hoverinfo="text",
        row=2,
        col=1,
    )
    figure.update_layout(barmode="stack")
    figure.update_yaxes(range=[0, 1.05], title="p(run)", row=1, col=1)
    figure.update_yaxes(title="FLOPs", row=2, col=1)
    figure.update_xaxes(title="block (input side first)", row=2, col=1)
    ran = sum(r.executed for r in records)
    titled(figure, f"Which blocks ran? {ran} of {len(records)}, stage by stage", height=480)
    return figure.update_layout(margin_r=60)  # room for the θ label


def _add_gate_spread(figure: go.Figure, usage: ClassUsage, measured_on: str) -> None:
    gated = [(unit, p) for unit, p in zip(usage.units, usage.gate_spread) if p is not None]
    low, middle, high = (np.array([p[i] for _, p in gated]) for i in range(3))
    figure.add_scatter(
        x=[unit for unit, _ in gated],
        y=middle,
        mode="markers",
        marker=dict(symbol="line-ew-open", size=14, color=STATIC, line_width=2),
        error_y=dict(type="data", symmetric=False, array=high - middle, arrayminus=middle - low, color=STATIC, width=6),
        name="p(run) on the card's images: 10th–90th percentile, median",
        hovertext=[
            f"{unit}: on {measured_on}, p(run) lies in {lo:.2f}–{hi:.2f} for 80% of them (median {mid:.2f})"
            for (unit, _), lo, mid, hi in zip(gated, low, middle, high)
        ],
        hoverinfo="text",
        row=1,
        col=1,
    )


def _verdict(record: BlockRecord) -> str:
    if record.probability is None:
        return "always"
    return f"{record.probability:.2f}<br>{'ran' if record.executed else 'skipped'}"


def _block_hover(record: BlockRecord) -> str:
    gate = "no gate (changes shape)" if record.probability is None else f"p(run) = {record.probability:.3f}"
    state = "ran" if record.executed else "skipped"
    return f"{record.name}, stage {record.stage + 1}, {record.resolution}×{record.resolution}: {gate}, {state}"


MAX_NAMED_CLASSES = 40
"""Beyond this many classes (an ImageNet test set: hundreds of classes, an image or two each), rows are not named
but sorted, the cheapest path first, and a row's class shows on hover."""


def class_usage_heatmap(usage: ClassUsage, unit: str, measure: str | None = None) -> go.Figure:
    """Per class, the share of each unit that ran at the card's default point (ConvNet-AIG's Fig. 5); with
    ``measure``, the mean of that measure per unit instead (a routing weight, a share of tokens)."""
    hover = f"%{{z:.0%}} of the {unit} ran" if measure is None else f"{measure} %{{z:.2f}}"
    rows = list(zip(usage.rates, usage.classes, usage.images))
    named = len(rows) <= MAX_NAMED_CLASSES
    if not named:
        rows.sort(key=lambda row: sum(row[0]))
    figure = go.Figure(
        go.Heatmap(
            z=[list(rates) for rates, _, _ in rows],
            x=list(usage.units),
            y=[f"{c} ({n})" for _, c, n in rows],
            zmin=0,
            zmax=1,
            colorscale="Greens",
            colorbar=dict(title=measure or "ran"),
            hovertemplate=f"%{{y}}, %{{x}}: {hover}<extra></extra>",
        )
    )
    figure.update_xaxes(title=f"{unit} (input side first)")
    if named:
        figure.update_yaxes(title="true class (images)", autorange="reversed", dtick=1)
    else:
        figure.update_yaxes(
            title=f"{len(rows)} true classes, fewest {unit}s first (hover: the class)",
            autorange="reversed",
            showticklabels=False,
        )
    # Many units turn their names upright below the map; the rows keep 18 px each above them.
    names_below = 7 * max(map(len, usage.units)) if len(usage.units) > 12 else 40
    height = max(320, min(900 if named else 520, 80 + 18 * len(rows) + names_below))
    question = f"Share of each {unit} that ran" if measure is None else f"Mean {measure} of each {unit}"
    return titled(figure, f"Does each class take its own path? {question}", height=height)


def _channel_matrix(records: list[ChannelRecord], values: list[list[float]]) -> np.ndarray:
    """Layers × channels, padded with NaN where a layer has fewer channels."""
    matrix = np.full((len(records), max(len(r.active) for r in records)), np.nan)
    for row, value in enumerate(values):
        matrix[row, : len(value)] = value
    return matrix


def channel_heatmap(trace: Trace) -> go.Figure:
    """Every gated channel of every layer: on or off for this input, with its gate probability."""
    records = trace.records_of(ChannelRecord)
    active = _channel_matrix(records, [[float(a) for a in r.active] for r in records])
    probability = _channel_matrix(records, [list(r.probabilities) for r in records])
    figure = go.Figure(
        go.Heatmap(
            z=active,
            customdata=probability,
            y=[r.name for r in records],
            colorscale=[[0, SKIPPED], [1, RAN]],
            zmin=0,
            zmax=1,
            showscale=False,
            xgap=0,
            ygap=1,
            hovertemplate="%{y}, channel %{x}: p(run) = %{customdata:.3f}<extra></extra>",
        )
    )
    figure.update_xaxes(title="channel (green: computed, grey: skipped)")
    figure.update_yaxes(title="layer", autorange="reversed")
    height = max(320, min(800, 60 + 22 * len(records)))
    return titled(figure, "Which channels ran, layer by layer?", height=height)


def active_fraction_chart(trace: Trace, usage: ClassUsage | None = None, measured_on: str = "") -> go.Figure:
    """Share of each layer's channels that ran, with the FLOPs the layer spent and saved; with a card's ``usage``,
    the share of each layer's channel gates that decide differently for the images it was ``measured_on``."""
    records = trace.records_of(ChannelRecord)
    figure = go.Figure()
    figure.add_bar(
        x=[r.name for r in records],
        y=[r.active_fraction for r in records],
        marker_color=RAN,
        text=[f"{sum(r.active)}/{len(r.active)}" for r in records],
        textposition="outside",
        hovertext=[
            f"{r.name}: {sum(r.active)} of {len(r.active)} channels; {format_flops(r.flops)} of "
            f"{format_flops(r.flops_full)} FLOPs"
            for r in records
        ],
        hoverinfo="text",
        name="share of channels computed",
    )
    figure.add_scatter(
        x=[r.name for r in records],
        y=[r.flops / r.flops_full for r in records],
        mode="markers",
        marker=dict(color=STATIC, symbol="diamond"),
        name="share of the layer's FLOPs spent",
    )
    if usage is not None and usage.varying_gates is not None:
        figure.add_trace(
            deciding_by_input(
                usage,
                [r.name for r in records],
                [r.name for r in records],
                [f"{len(r.active)} channel gates are on for some and off for" for r in records],
                measured_on,
                "share of the layer's gates that decide by input (card)",
            )
        )
    figure.update_yaxes(range=[0, 1.15], tickformat=".0%", title="share")
    figure.update_xaxes(title="layer (input side first)")
    return titled(figure, "How much of each layer ran?")


def deciding_by_input(
    usage: ClassUsage, units: list[str], x: list[str], gates: list[str], measured_on: str, name: str
) -> go.Scatter:
    """Circles at the card's share of each unit's gates that decide by input (:attr:`ClassUsage.varying_gates`),
    over ``x``; ``gates`` says, per unit, what its gates are and do ("16 channel gates are on for some and off
    for")."""
    varying = dict(zip(usage.units, usage.varying_gates))
    return go.Scatter(
        x=x,
        y=[varying[unit] for unit in units],
        mode="markers",
        marker=dict(color=THRESHOLD, symbol="circle-open", size=9, line_width=2),
        name=name,
        hovertext=[
            f"{unit}: {varying[unit]:.0%} of its {what} others of {measured_on} (each for {VARYING:.0%}–"
            f"{1 - VARYING:.0%} of them)"
            for unit, what in zip(units, gates)
        ],
        hoverinfo="text",
    )


def channel_difference(first: Trace, second: Trace) -> go.Figure:
    """Channels on for both inputs, for one only, or for neither: what the gates decided differently."""
    a, b = first.records_of(ChannelRecord), second.records_of(ChannelRecord)
    codes = [[float(x) + 2 * float(y) for x, y in zip(ra.active, rb.active)] for ra, rb in zip(a, b)]
    scale = [
        [0.0, SKIPPED],
        [0.25, SKIPPED],
        [0.25, ONLY_FIRST],
        [0.5, ONLY_FIRST],
        [0.5, ONLY_SECOND],
        [0.75, ONLY_SECOND],
        [0.75, RAN],
        [1.0, RAN],
    ]
    figure = go.Figure(
        go.Heatmap(
            z=_channel_matrix(a, codes),
            y=[r.name for r in a],
            zmin=-0.5,
            zmax=3.5,
            colorscale=scale,
            colorbar=dict(
                tickvals=[0, 1, 2, 3],
                ticktext=["neither", f"only {first.input_name}", f"only {second.input_name}", "both"],
            ),
            ygap=1,
            hovertemplate="%{y}, channel %{x}<extra></extra>",
        )
    )
    differ = sum(c in (1.0, 2.0) for row in codes for c in row)
    total = sum(len(row) for row in codes)
    figure.update_xaxes(title="channel")
    figure.update_yaxes(title="layer", autorange="reversed")
    height = max(320, min(800, 60 + 22 * len(a)))
    return titled(figure, f"Which channels differ between the two inputs? {differ} of {total}", height=height)

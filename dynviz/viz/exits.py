"""Renderers for exit records: where did it stop, and what did it cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from dynviz.trace import ExitRecord, NodeRecord, Prediction, TokenGridRecord, Trace
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.image import RELEVANCE, photo
from dynviz.viz.spatial import grid_overlay
from dynviz.viz.style import SKIPPED, STATIC, THRESHOLD, exit_color, titled


def exit_timeline(trace: Trace) -> go.Figure:
    """Confidence at each computed stage against its threshold; stages never run in grey."""
    records = trace.records_of(ExitRecord)
    names = [f"{r.index + 1}. {r.name}" for r in records]
    figure = go.Figure()
    figure.add_bar(
        x=names,
        y=[r.confidence if r.computed else 1.0 for r in records],
        marker_color=[exit_color(r.index) if r.computed else SKIPPED for r in records],
        marker_pattern_shape=["" if r.computed else "/" for r in records],
        opacity=1.0,
        text=[_stage_text(r) for r in records],
        textposition="inside",
        # At the bar's foot: the threshold tick sits high up the bar, where a centred label would run under it.
        insidetextanchor="start",
        hovertext=[_stage_hover(r) for r in records],
        hoverinfo="text",
        name="calibrated confidence",
    )
    thresholds = [(n, r.threshold) for n, r in zip(names, records) if r.threshold is not None]
    if thresholds:
        figure.add_scatter(
            x=[n for n, _ in thresholds],
            y=[t for _, t in thresholds],
            mode="markers",
            marker=dict(symbol="line-ew-open", size=60, color=THRESHOLD, line=dict(width=3, color=THRESHOLD)),
            name="exit threshold",
        )
    figure.update_yaxes(range=[0, 1.05], title="top-1 confidence (calibrated)")
    figure.update_xaxes(title="stage (network @ input resolution)")
    return titled(figure, "Where did it stop?")


def _stage_text(record: ExitRecord) -> str:
    if not record.computed:
        return "not run"
    verdict = "answered here" if record.taken else "not sure: go on"
    return f"{record.prediction.label}<br>{record.confidence:.2f}<br>{verdict}"


def _stage_hover(record: ExitRecord) -> str:
    if not record.computed:
        return f"{record.name}: skipped, saved {format_flops(record.flops)} FLOPs"
    return f"{record.name}: {record.prediction.label} ({record.confidence:.2f}), {format_flops(record.flops)} FLOPs"


def cost_bars(trace: Trace) -> go.Figure:
    """This input's FLOPs, stage by stage, next to the static networks'."""
    figure = go.Figure()
    records = {r.name: r for r in trace.records_of(ExitRecord)}
    for part, flops in trace.cost.breakdown.items():
        color = exit_color(records[part].index) if part in records else exit_color(0)
        figure.add_bar(
            y=["this input"],
            x=[flops / 1e9],
            orientation="h",
            name=part,
            marker_color=color,
            text=format_flops(flops),
            textposition="inside",
        )
    for name, flops in trace.cost.baselines.items():
        figure.add_bar(
            y=[f"static {name}"],
            x=[flops / 1e9],
            orientation="h",
            name=f"static {name}",
            marker_color=STATIC,
            showlegend=False,
            text=format_flops(flops),
            textposition="inside",
        )
    figure.update_xaxes(title=f"{FLOPS_UNIT}, G")
    titled(figure, "What did it cost?", height=260)
    # Stacked bars list their legend last-first by default: the stages read in the order they ran.
    figure.update_layout(barmode="stack", legend_traceorder="normal")
    return figure


def top_classes(prediction: Prediction, color_index: int = 0) -> go.Figure:
    top = list(reversed(prediction.top))
    figure = go.Figure(
        go.Bar(
            x=[c.probability for c in top],
            y=[c.label for c in top],
            orientation="h",
            marker_color=exit_color(color_index),
        )
    )
    figure.update_xaxes(range=[0, 1], title="probability")
    return titled(figure, "What did it answer? (top-5)", height=260)


def exit_table(trace: Trace) -> pd.DataFrame:
    """One row per stage, for display and CSV download."""
    return pd.DataFrame(
        {
            "stage": r.index + 1,
            "name": r.name,
            "resolution_px": r.resolution,
            "computed": r.computed,
            "answered": r.taken,
            "threshold": r.threshold,
            "confidence": r.confidence,
            "top1": r.prediction.label if r.prediction else None,
            "flops": int(r.flops),
            "flops_cumulative": int(r.flops_cumulative),
            "latency_ms": r.latency_ms,
        }
        for r in trace.records_of(ExitRecord)
    )


def computation_grid(trace: Trace) -> go.Figure:
    """MSDNet's picture, for this input: every layer at every scale it keeps, coloured by the exit whose
    block holds it when it was computed, grey when the input left before it."""
    nodes = trace.records_of(NodeRecord)
    exits = trace.records_of(ExitRecord)
    figure = go.Figure()
    figure.add_scatter(
        x=[n.layer for n in nodes],
        y=[f"{n.resolution}×{n.resolution}" for n in nodes],
        mode="markers",
        marker=dict(
            symbol="square",
            size=26,
            color=[exit_color(n.block) if n.computed else SKIPPED for n in nodes],
            line=dict(width=1, color="white"),
        ),
        hovertext=[
            f"layer {n.layer}, {n.resolution}² features: {'computed' if n.computed else 'skipped'}, "
            f"{format_flops(n.flops)} FLOPs"
            for n in nodes
        ],
        hoverinfo="text",
        showlegend=False,
    )
    coarsest = f"{min(n.resolution for n in nodes)}×{min(n.resolution for n in nodes)}"
    last_layer = {block: max(n.layer for n in nodes if n.block == block) for block in {n.block for n in nodes}}
    figure.add_scatter(
        x=[last_layer[r.index] + 0.5 for r in exits],
        y=[coarsest] * len(exits),
        mode="markers+text",
        marker=dict(
            symbol="triangle-right",
            size=16,
            color=[exit_color(r.index) if r.computed else SKIPPED for r in exits],
            line=dict(width=2, color=[THRESHOLD if r.taken else "white" for r in exits]),
        ),
        text=[f"exit {r.index + 1}" + (" ✓" if r.taken else "") for r in exits],
        textposition="bottom center",
        hovertext=[_stage_hover(r) for r in exits],
        hoverinfo="text",
        name="classifier (exit)",
    )
    figure.update_xaxes(title="depth (layer)", dtick=1)
    figure.update_yaxes(
        title="scale (feature map)",
        categoryorder="array",
        categoryarray=sorted({f"{n.resolution}×{n.resolution}" for n in nodes}, key=lambda s: int(s.split("×")[0])),
    )
    return titled(figure, "What did the network compute? (scales × depth)", height=300)


TOKEN_MAP_HEIGHT = 340


def token_map(image: Image.Image, record: TokenGridRecord, hint: bool = False) -> go.Figure:
    """A cascade stage's grid of tokens over the photo, each token shaded by where the stage's class token
    attended (or, with ``hint``, by what the previous stage's reused attention told it)."""
    values = np.array(record.handed_over if hint else record.class_attention).reshape(record.grid, record.grid)
    what = "reused attention bias" if hint else "class-token attention"
    title = (
        f"Stage {record.stage + 1}: what did<br>the previous stage hand over?"
        if hint
        else f"Stage {record.stage + 1}: {record.grid}×{record.grid} tokens;<br>where did its class token look?"
    )
    figure = photo(image, title)
    x0, y0, x1, y1 = record.box
    # Only the square the network saw: the stages stand side by side in narrow columns.
    figure.update_xaxes(range=[x0, x1]).update_yaxes(range=[y1, y0]).update_layout(height=TOKEN_MAP_HEIGHT)
    for i in range(record.grid + 1):  # the token grid
        x, y = x0 + (x1 - x0) * i / record.grid, y0 + (y1 - y0) * i / record.grid
        figure.add_shape(type="line", x0=x, x1=x, y0=y0, y1=y1, line=dict(color="white", width=1))
        figure.add_shape(type="line", x0=x0, x1=x1, y0=y, y1=y, line=dict(color="white", width=1))
    low, high = values.min(), values.max()
    shaded = (values - low) / (high - low) if high > low else np.zeros_like(values)
    hover = np.vectorize(lambda v: f"{what} {v:.3f}")(values)
    return grid_overlay(figure, shaded, record.box, RELEVANCE, hover, zmin=0, zmax=1, showscale=False)

"""Renderers for spatial decisions: where a pixel mask computed, where glance and focus looked."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from dynviz.cards import ClassUsage
from dynviz.trace import Box, ExitRecord, FocusRecord, MaskRecord, Trace
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.viz.gates import deciding_by_input
from dynviz.viz.image import RELEVANCE, boxed_picture, photo, with_box
from dynviz.viz.style import SKIPPED, exit_color, titled

COMPUTED = exit_color(2)
# Skipped positions dim the photo; computed ones are tinted, so both stay readable on the user's image.
MASK_COLORS = [
    [0.0, "rgba(90,90,90,0.65)"],
    [0.5, "rgba(90,90,90,0.65)"],
    [0.5, "rgba(44,160,44,0.35)"],
    [1.0, "rgba(44,160,44,0.35)"],
]


def grid_overlay(
    figure: go.Figure, values: np.ndarray, box: Box, colorscale, hover: np.ndarray, **heatmap
) -> go.Figure:
    """``values`` (rows × cols) drawn over ``box`` of the photo, one cell per value."""
    x0, y0, x1, y1 = box
    rows, cols = values.shape
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    figure.add_heatmap(
        z=values,
        x0=x0 + dx / 2,
        dx=dx,
        y0=y0 + dy / 2,
        dy=dy,
        colorscale=colorscale,
        text=hover,
        hoverinfo="text",
        **heatmap,
    )
    return figure


def mask_overlay(image: Image.Image, record: MaskRecord, show: bool = True) -> go.Figure:
    """Where one block computed its output, on the photo."""
    side = record.resolution
    figure = photo(
        image,
        f"Where did {record.name} compute? {sum(record.computed)} of {side * side} positions "
        f"({record.density:.0%}), on a {side}×{side} grid",
    )
    if not show:
        return figure
    computed = np.array(record.computed, dtype=float).reshape(side, side)
    probabilities = np.array(record.probabilities).reshape(side, side)
    hover = np.vectorize(lambda p, c: f"p(compute) = {p:.2f}<br>{'computed' if c else 'skipped: shortcut only'}")(
        probabilities, computed
    )
    return grid_overlay(figure, computed, record.box, MASK_COLORS, hover, zmin=0, zmax=1, showscale=False)


def mask_density_chart(trace: Trace, usage: ClassUsage | None = None, measured_on: str = "") -> go.Figure:
    """Per masked block: the share of positions computed and the FLOPs spent against the dense price; with a card's
    ``usage``, the share of each block's positions whose mask decides differently for the images it was
    ``measured_on`` (on a second axis)."""
    records = trace.records_of(MaskRecord)
    names = [f"{r.name} ({r.resolution}²)" for r in records]
    figure = go.Figure()
    figure.add_bar(
        x=names,
        y=[r.flops for r in records],
        marker_color=COMPUTED,
        name=f"{FLOPS_UNIT} spent",
        text=[f"{r.density:.0%}" for r in records],
        textposition="outside",
        hovertext=[
            f"{r.name}: {r.density:.0%} of positions, {format_flops(r.flops)} of {format_flops(r.flops_full)} FLOPs"
            for r in records
        ],
        hoverinfo="text",
    )
    figure.add_bar(
        x=names,
        y=[r.flops_full - r.flops for r in records],
        marker_color=SKIPPED,
        marker_pattern_shape="/",
        name=f"{FLOPS_UNIT} saved",
        hoverinfo="skip",
    )
    if usage is not None and usage.varying_gates is not None:
        figure.add_trace(
            deciding_by_input(
                usage,
                [r.name for r in records],
                names,
                [f"{len(r.computed)} positions are computed for some and skipped for" for r in records],
                measured_on,
                "positions deciding by input (card; right axis)",
            ).update(yaxis="y2")
        )
        figure.update_layout(
            yaxis2=dict(
                overlaying="y",
                side="right",
                range=[0, 1.05],
                tickvals=[0, 0.25, 0.5, 0.75, 1],
                tickformat=".0%",
                showgrid=False,
                title="positions deciding by input",
            )
        )
    figure.update_layout(barmode="stack", yaxis_title="FLOPs")
    figure.update_xaxes(title="masked block (input side first; label: share of positions computed)")
    density = sum(sum(r.computed) for r in records) / sum(len(r.computed) for r in records)
    return titled(figure, f"How sparse was each block? {density:.0%} of positions computed overall", height=380)


def focus_steps(image: Image.Image, trace: Trace) -> tuple[Image.Image, str]:
    """The glance's view and each focus patch, numbered in the order they were looked at, and what it shows."""
    steps = [r for r in trace.records_of(ExitRecord) if r.computed]
    focus = len(steps) - 1
    looks = f", then {focus} focus step{'s' if focus > 1 else ''}" if focus else " only"
    boxes = [
        (step.view_box, "glance" if step.index == 0 else f"{step.index}", exit_color(step.index)) for step in steps
    ]
    return boxed_picture(image, boxes), f"Where did it look? The glance{looks}"


def policy_map(image: Image.Image, record: FocusRecord) -> go.Figure:
    """The policy's score of each candidate patch, on a cell around that patch's centre, and the patch it chose."""
    values = np.array(record.scores).reshape(record.grid, record.grid)
    hover = np.vectorize(lambda s: f"score {s:.3g}")(values)
    span = values.max() - values.min()
    shown = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    figure = photo(image, f"Focus {record.step}: each patch's score<br>({record.policy} policy)")
    grid_overlay(
        figure,
        shown,
        record.grid_box,
        RELEVANCE,
        hover,
        zmin=0,
        zmax=1,
        colorbar=dict(title="score<br>(lowest 0,<br>highest 1)", len=0.8),
    )
    return with_box(figure, record.box, f"{record.step}", exit_color(record.step))

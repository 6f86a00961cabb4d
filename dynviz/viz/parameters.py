"""Renderers for dynamic parameters: where deformable layers sampled, which kernels and experts an input chose."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw

from dynviz.trace import (
    DeformableAttentionRecord,
    ExpertRecord,
    RoutingRecord,
    SamplingRecord,
    pairs,
)
from dynviz.viz.image import colors_on, displayed, photo
from dynviz.viz.spatial import grid_overlay
from dynviz.viz.style import EXIT_COLORS, SKIPPED, legend_below, titled

WEIGHT_SCALE = "Viridis"
REDS = ((0.0, (255, 245, 240)), (0.5, (251, 106, 74)), (1.0, (103, 0, 13)))
"""Plotly's "Reds" in three stops, for pictures drawn on the server."""
CHOSEN = "#00bfff"
MAGNIFICATIONS = (1, 2, 5, 10, 20, 50, 100)
"""How much longer than the offsets a field's arrows may be drawn, so that short ones can be seen."""
ARROW_HEAD = 7.0
"""Length of an arrowhead in a picture's pixels."""


def cell_centre(box: tuple[float, float, float, float], resolution: int, position: int) -> tuple[float, float]:
    """The centre, in input pixels, of cell ``position`` (row by row) of a grid over ``box``."""
    cell = (box[2] - box[0]) / resolution
    return box[0] + (position % resolution + 0.5) * cell, box[1] + (position // resolution + 0.5) * cell


def nearest_position(record: SamplingRecord, x: float, y: float) -> int:
    """The output position of ``record`` whose cell holds (x, y), clamped to the grid."""
    cell = (record.box[2] - record.box[0]) / record.resolution
    column = min(max(int((x - record.box[0]) // cell), 0), record.resolution - 1)
    row = min(max(int((y - record.box[1]) // cell), 0), record.resolution - 1)
    return row * record.resolution + column


def effective_points(records: list[SamplingRecord], position: int) -> list[tuple[float, float, float]]:
    """Where ``position`` of the last layer of ``records`` (stacked deformable layers, first to last) reads the
    first layer's input: each of its samples is followed back through the layer before, whose nearest output
    position's samples it takes, shifted by how far the sample lies from that position's centre (the DCN
    paper's Fig. 1 and 5: k² points per layer, 729 for three 3×3 layers). (x, y, product of modulations)."""
    last = records[-1]
    points = [(x, y, m) for (x, y), m in zip(last.position_points(position), last.position_modulation(position))]
    for record in reversed(records[:-1]):
        followed = []
        for x, y, weight in points:
            below = nearest_position(record, x, y)
            cx, cy = cell_centre(record.box, record.resolution, below)
            for (px, py), m in zip(record.position_points(below), record.position_modulation(below)):
                followed.append((px + x - cx, py + y - cy, weight * m))
        points = followed
    return points


def network_photo(image: Image.Image, box, title: str) -> go.Figure:
    """The photo, with the square the network saw outlined (a CIFAR network sees a 32×32 copy of it)."""
    figure = photo(image, title)
    figure.add_shape(type="rect", x0=box[0], y0=box[1], x1=box[2], y1=box[3], line=dict(color="white", dash="dot"))
    return figure


def _rings(figure: go.Figure, points, name: str) -> None:
    """Where samples would be without offsets: grey rings."""
    figure.add_scatter(
        x=[x for x, _ in points],
        y=[y for _, y in points],
        mode="markers",
        name=name,
        marker=dict(size=9, color="rgba(0,0,0,0)", line=dict(color=SKIPPED, width=2)),
        hoverinfo="skip",
    )


def _chosen(figure: go.Figure, box, resolution: int, position: int, name: str) -> None:
    """A cross on the chosen cell of the grid (a position, a query)."""
    x, y = cell_centre(box, resolution, position)
    figure.add_scatter(x=[x], y=[y], mode="markers", name=name, marker=dict(symbol="x", size=12, color="#00bfff"))


def _arrows(figure: go.Figure, starts, ends, color: str, width: float = 1.5) -> None:
    """Arrows from ``starts`` to ``ends`` as one trace: segments separated by gaps, an arrowhead marker at each
    end turned along its segment. (An annotation per arrow costs plotly a validation on the server and the
    browser a DOM element each: a field of 256 arrows took half a second of each.)"""
    xs, ys, sizes = [], [], []
    for (x0, y0), (x1, y1) in zip(starts, ends):
        xs += [x0, x1, None]
        ys += [y0, y1, None]
        sizes += [0, 4 + 3 * width, 0]
    figure.add_scatter(
        x=xs,
        y=ys,
        mode="lines+markers",
        line=dict(color=color, width=width),
        marker=dict(symbol="arrow", angleref="previous", size=sizes, color=color),
        hoverinfo="skip",
        showlegend=False,
    )


def _weighted_points(figure: go.Figure, points, weights, name: str, hover: str, size: float = 11) -> None:
    figure.add_scatter(
        x=[x for x, _ in points],
        y=[y for _, y in points],
        mode="markers",
        name=name,
        marker=dict(
            size=size,
            color=weights,
            colorscale=WEIGHT_SCALE,
            cmin=0,
            cmax=1,
            line=dict(color="white", width=1),
            colorbar=dict(title=hover, len=0.7),
        ),
        hovertemplate="(%{x:.1f}, %{y:.1f}) px<br>" + hover + " %{marker.color:.2f}<extra></extra>",
    )


def sampling_figure(image: Image.Image, record: SamplingRecord, position: int) -> go.Figure:
    """One output position of one deformable layer: its regular 3×3 grid (grey) and where each sample moved
    (arrows), coloured by the sample's modulation."""
    regular, moved = record.position_grid(position), record.position_points(position)
    figure = network_photo(image, record.box, f"{record.name}: where did this position's {record.taps} samples move?")
    _rings(figure, regular, "regular grid")
    _arrows(figure, regular, moved, "white")
    _weighted_points(figure, moved, record.position_modulation(position), "sampled", "modulation")
    return figure


def stacked_picture(image: Image.Image, records: list[SamplingRecord], position: int) -> tuple[Image.Image, str]:
    """The effective sampling locations of stacked deformable layers for one position (:func:`effective_points`),
    on the photo, the larger and darker the more the path's modulations let through, and what it shows. Drawn on the
    server: hundreds of points with nothing to hover cost a browser a chart's drawing at every rerun."""
    points = effective_points(records, position)
    weights = np.array([w for _, _, w in points])
    top = weights.max() if len(weights) and weights.max() > 0 else 1.0
    picture, scale = displayed(image)
    draw = ImageDraw.Draw(picture, "RGBA")
    _view_box(draw, records[-1].box, scale)
    colors = colors_on(REDS, weights / top)
    for index in np.argsort(weights):  # the heaviest paths on top
        x, y, weight = points[index]
        radius = (3 + 9 * weight / top) / 2
        draw.ellipse(
            (x * scale - radius, y * scale - radius, x * scale + radius, y * scale + radius), (*colors[index], 204)
        )
    x, y = cell_centre(records[-1].box, records[-1].resolution, position)
    arm = 6
    for sign in (1, -1):  # a cross on the position
        draw.line((x * scale - arm, y * scale - sign * arm, x * scale + arm, y * scale + sign * arm), CHOSEN, 3)
    return picture, f"Effective sampling locations through {len(records)} stacked layers: {len(points)} points"


def offset_picture(image: Image.Image, record: SamplingRecord) -> tuple[Image.Image, str]:
    """The mean offset of every output position, as an arrow from the position's centre, and what it shows. Offsets
    are often a fraction of a cell, too short to see on the photo: the arrows are drawn :func:`magnified` so that
    the longest spans about a cell, and the caption says by how much."""
    offsets = []
    for position in range(record.resolution**2):
        regular, moved = record.position_grid(position), record.position_points(position)
        dx = sum(m[0] - r[0] for r, m in zip(regular, moved)) / record.taps
        dy = sum(m[1] - r[1] for r, m in zip(regular, moved)) / record.taps
        offsets.append((cell_centre(record.box, record.resolution, position), (dx, dy)))
    cell = (record.box[2] - record.box[0]) / record.resolution
    factor = magnified(max(math.hypot(dx, dy) for _, (dx, dy) in offsets), cell)
    picture, scale = displayed(image)
    draw = ImageDraw.Draw(picture)
    _view_box(draw, record.box, scale)
    for (x, y), (dx, dy) in offsets:
        end = ((x + factor * dx) * scale, (y + factor * dy) * scale)
        _arrow(draw, (x * scale, y * scale), end, "#ff4b4b", 2)
    drawn = f" (arrows drawn {factor}× as long)" if factor > 1 else ""
    return picture, f"{record.name}: which way does each position look? Mean offset {record.mean_offset:.1f} px{drawn}"


def magnified(longest: float, cell: float) -> int:
    """The largest of :data:`MAGNIFICATIONS` that keeps the ``longest`` arrow within a ``cell`` (1 without arrows)."""
    return max((m for m in MAGNIFICATIONS if longest * m <= cell), default=1) if longest > 0 else 1


def _view_box(draw: ImageDraw.ImageDraw, box, scale: float) -> None:
    """The square the network saw, on a picture."""
    draw.rectangle(tuple(v * scale for v in box), outline="white", width=1)


def _arrow(draw: ImageDraw.ImageDraw, start, end, color: str, width: int) -> None:
    """A line from ``start`` to ``end`` (a picture's pixels) with a filled head at ``end``; nothing for a move of
    less than a pixel."""
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    if length < 1:
        return
    along, across = ((x1 - x0) / length, (y1 - y0) / length), ((y0 - y1) / length, (x1 - x0) / length)
    head = min(ARROW_HEAD, length)
    base = (x1 - along[0] * head, y1 - along[1] * head)
    half = 0.5 * head
    draw.line((x0, y0, *base), fill=color, width=width)
    draw.polygon(
        [
            (x1, y1),
            (base[0] + across[0] * half, base[1] + across[1] * half),
            (base[0] - across[0] * half, base[1] - across[1] * half),
        ],
        fill=color,
    )


def position_picker(figure: go.Figure, box, resolution: int) -> go.Figure:
    """Invisible markers on every cell of the grid, so that a click on the photo picks a position."""
    centres = [cell_centre(box, resolution, p) for p in range(resolution**2)]
    figure.add_scatter(
        x=[x for x, _ in centres],
        y=[y for _, y in centres],
        customdata=list(range(resolution**2)),
        mode="markers",
        name="pick a position",
        marker=dict(size=14, color="rgba(255,255,255,0.01)"),
        hovertemplate="position %{customdata}: click to pick<extra></extra>",
    )
    return figure


def attention_figure(image: Image.Image, record: DeformableAttentionRecord, query: int, head: int) -> go.Figure:
    """One query of one head: the reference points (grey), where its group's keys were sampled (arrows) and
    how much the query attends to each (colour and size)."""
    group = head * record.groups // record.heads
    references = pairs(record.references)
    moved = record.group_points(group)
    weights = record.weights(head, query)
    top = max(weights) or 1.0
    title = f"{record.name}, head {head + 1}: which sampled keys does this query attend to?"
    figure = network_photo(image, record.box, title)
    _rings(figure, references, "reference points")
    _arrows(figure, references, moved, "white", width=1)
    figure.add_scatter(
        x=[x for x, _ in moved],
        y=[y for _, y in moved],
        mode="markers",
        name="sampled keys",
        marker=dict(
            size=[6 + 18 * w / top for w in weights],
            color=weights,
            colorscale=WEIGHT_SCALE,
            line=dict(color="white", width=1),
            colorbar=dict(title="attention", len=0.7),
        ),
        hovertemplate="key at (%{x:.1f}, %{y:.1f}) px<br>attention %{marker.color:.3f}<extra></extra>",
    )
    _chosen(figure, record.box, record.resolution, query, "query")
    return figure


def routing_heatmap(records: list[RoutingRecord], title: str) -> go.Figure:
    """Layers × experts: the routing weight this input gave each expert kernel."""
    experts = max(len(r.weights) for r in records)
    figure = go.Figure(
        go.Heatmap(
            z=[list(r.weights) for r in records],
            x=[f"expert {k + 1}" for k in range(experts)],
            y=[r.name for r in records],
            zmin=0,
            zmax=1,
            colorscale=WEIGHT_SCALE,
            colorbar=dict(title="routing weight"),
            hovertemplate="%{y}, %{x}: %{z:.2f}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", title="layer (input side first)")
    return titled(figure, title, height=max(320, 60 + 22 * len(records)))


def expert_colors(experts: int) -> list[str]:
    return [EXIT_COLORS[e % len(EXIT_COLORS)] for e in range(experts)]


def expert_tokens(image: Image.Image, record: ExpertRecord) -> go.Figure:
    """The image's tokens coloured by the expert each went to (hover: the gate)."""
    side = record.resolution
    colors = expert_colors(record.experts)
    scale = [
        [bound, f"rgba{(*_rgb(colors[e]), 0.45)}"]
        for e in range(record.experts)
        for bound in (e / record.experts, (e + 1) / record.experts)
    ]
    choices = np.array(record.choices, dtype=float).reshape(side, side)
    gates = np.array(record.gates).reshape(side, side)
    hover = np.vectorize(lambda e, g: f"expert {int(e) + 1}, gate {g:.2f}")(choices, gates)
    figure = network_photo(image, record.box, f"{record.name}: which expert did each token go to?")
    grid_overlay(
        figure,
        (choices + 0.5) / record.experts,
        record.box,
        scale,
        hover,
        zmin=0,
        zmax=1,
        showscale=False,
    )
    for e in range(record.experts):  # a legend entry per expert
        figure.add_scatter(
            x=[None], y=[None], mode="markers", name=f"expert {e + 1}", marker=dict(color=colors[e], size=10)
        )
    return legend_below(figure, gap=0.02)


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def expert_load(records: list[ExpertRecord]) -> go.Figure:
    """Per mixture layer, the share of the image's tokens each expert took."""
    colors = expert_colors(records[0].experts)
    figure = go.Figure(
        [
            go.Bar(
                x=[r.name for r in records],
                y=[r.load[e] for r in records],
                name=f"expert {e + 1}",
                marker_color=colors[e],
                hovertemplate=f"%{{x}}: expert {e + 1} took %{{y:.0%}} of the tokens<extra></extra>",
            )
            for e in range(records[0].experts)
        ]
    )
    figure.update_yaxes(title="share of the image's tokens", tickformat=".0%", range=[0, 1])
    titled(figure, "How was the load spread over the experts?")
    return legend_below(figure.update_layout(barmode="stack", legend_traceorder="normal"))

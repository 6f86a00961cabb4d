"""Renderers of the Compare page: a small picture of each model's decision, and the savings per family."""

from __future__ import annotations

import base64
import io

import plotly.graph_objects as go
from PIL import Image, ImageColor, ImageDraw

from dynviz.compare import Comparison
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
    RoutingRecord,
    SamplingRecord,
    TokenGridRecord,
    Trace,
    pairs,
)
from dynviz.viz.parameters import expert_colors
from dynviz.viz.style import SKIPPED, STATIC, exit_color, titled

HEIGHT = 72
STRIP = 10
COMPUTED = exit_color(0)


def decision_picture(image: Image.Image, trace: Trace) -> Image.Image:
    """The photo with the decision drawn on it (focus boxes; pixel masks, skipped positions greyed; where the
    last deformable layer sampled; tokens tinted by their expert; the last token grid), above a strip of the
    units the network could run: exits, blocks, gated layers, experts or a clip's frames, coloured when they
    ran (experts and kernels: filled by their share). ``image`` is the input (for a clip, one of its frames)
    or a smaller copy of it."""
    scale = HEIGHT / trace.input_size[1]  # geometry is in the input's pixels; ``image`` may be a smaller copy
    width = max(1, round(trace.input_size[0] * scale))
    picture = image.convert("RGB").resize((width, HEIGHT), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(picture, "RGBA")
    if masks := trace.records_of(MaskRecord):
        first = masks[0]  # the finest grid: the first block's
        for cell, computed in zip(grid_cells(first.box, first.resolution, scale), first.computed):
            if not computed:
                draw.rectangle(cell, fill=(199, 199, 199, 200))
    for record in trace.records_of(FocusRecord):
        box = tuple(v * scale for v in record.box)
        draw.rectangle(box, outline=exit_color(record.step), width=2)
    for record in trace.records_of(FrameRecord):  # a clip: the box the first frame looked at was seen through
        if record.order == 1 and record.box is not None:
            draw.rectangle(tuple(v * scale for v in record.box), outline=COMPUTED, width=2)
    if experts := trace.records_of(ExpertRecord):  # the first mixture layer's tokens, tinted by their expert
        first = experts[0]
        colors = expert_colors(first.experts)  # the Dynamic parameters page's colour for each expert
        for cell, expert in zip(grid_cells(first.box, first.resolution, scale), first.choices):
            draw.rectangle(cell, fill=(*ImageColor.getrgb(colors[expert]), 110))
    if stages := trace.records_of(TokenGridRecord):  # the token grid of the last stage that ran
        last = stages[-1]
        for cell in grid_cells(last.box, last.grid, scale):
            draw.rectangle(cell, outline=(255, 255, 255, 160))
    for x, y, weight in sampled_points(trace):
        x, y = x * scale, y * scale
        draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(*ImageColor.getrgb(COMPUTED), round(60 + 195 * weight)))
    cells = strip_cells(trace)
    canvas = Image.new("RGB", (width, HEIGHT + STRIP + 2), "white")
    canvas.paste(picture, (0, 0))
    strip = ImageDraw.Draw(canvas)
    bottom = HEIGHT + 1 + STRIP
    for i, (color, filled) in enumerate(cells):
        x0 = i * width / len(cells)
        x1 = max(x0, (i + 1) * width / len(cells) - 1)  # a 1-pixel gap between cells
        strip.rectangle((x0, HEIGHT + 2, x1, bottom), fill=SKIPPED)
        if filled > 0:  # the share that ran, from the bottom up
            strip.rectangle((x0, bottom - (STRIP - 1) * filled, x1, bottom), fill=color)
    return canvas


def grid_cells(box: tuple[float, ...], side: int, scale: float) -> list[tuple[float, float, float, float]]:
    """The cells of a ``side`` × ``side`` grid over ``box`` (input pixels), row by row, scaled to the picture."""
    left, top, right, bottom = (v * scale for v in box)
    width, height = (right - left) / side, (bottom - top) / side
    return [
        (left + col * width, top + row * height, left + (col + 1) * width, top + (row + 1) * height)
        for row in range(side)
        for col in range(side)
    ]


def sampled_points(trace: Trace) -> list[tuple[float, float, float]]:
    """(x, y, weight) in input pixels where the last deformable layer read its input: every position's
    samples weighted by their modulation (DCN), or every group's sampled keys (deformable attention)."""
    if sampling := trace.records_of(SamplingRecord):
        last = sampling[-1]
        return [(x, y, m) for (x, y), m in zip(pairs(last.points), last.modulation)]
    if attention := trace.records_of(DeformableAttentionRecord):
        return [(x, y, 1.0) for x, y in pairs(attention[-1].points)]
    return []


def strip_cells(trace: Trace) -> list[tuple[str, float]]:
    """(colour, share that ran) per unit, in the order the network meets them."""
    if frames := trace.records_of(FrameRecord):  # a clip's frames: looked at, glanced at (half) or skipped
        return [(COMPUTED, {PROCESSED: 1.0, GLANCED: 0.5}.get(r.action, 0.0)) for r in frames]
    if blocks := trace.records_of(BlockRecord):
        return [(COMPUTED, float(r.executed)) for r in blocks]
    if channels := trace.records_of(ChannelRecord):
        return [(COMPUTED, r.active_fraction) for r in channels]
    if masks := trace.records_of(MaskRecord):
        return [(COMPUTED, r.density) for r in masks]
    if exits := trace.records_of(ExitRecord):
        return [(exit_color(r.index), float(r.computed)) for r in exits]
    if experts := trace.records_of(ExpertRecord):  # every layer's experts, filled by the share of tokens each ran
        return [(color, share) for r in experts for color, share in zip(expert_colors(r.experts), r.load)]
    if routings := trace.records_of(RoutingRecord):  # each expert kernel's routing weight, mean over the layers
        colors = expert_colors(len(routings[0].weights))
        return [(color, sum(r.weights[e] for r in routings) / len(routings)) for e, color in enumerate(colors)]
    return [(STATIC, 1.0)]


def data_url(picture: Image.Image) -> str:
    """A PNG as a data URL, for an image column of a table."""
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def savings_chart(savings: dict[str, float], title: str = "How much did each family save on this input?") -> go.Figure:
    """Bars of each family's mean saving against its static twins' FLOPs (negative: spent more)."""
    families = sorted(savings, key=lambda f: savings[f])
    values = [100 * savings[f] for f in families]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=families,
            orientation="h",
            marker_color=[STATIC if f == "static network" else COMPUTED for f in families],
            text=[f"{v:.1f}%" if v >= 0 else "" for v in values],
            textposition="outside",
            cliponaxis=False,
        )
    )
    # A bar that grows left has the families' names beyond its end: its figure goes right of the zero line.
    for family, value in zip(families, values):
        if value < 0:
            figure.add_annotation(x=0, y=family, text=f"{value:.1f}%", xanchor="left", xshift=4, showarrow=False)
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    figure.update_xaxes(  # room on the right for the longest bar's figure, in a half-width column too
        title="FLOPs saved against the static twin (%)", zeroline=True, range=[low - 0.04 * span, high + 0.22 * span]
    )
    return titled(figure, title, height=80 + 34 * len(families))


def rows_table(rows: list[Comparison], pictures: dict[str, str]) -> list[dict]:
    """The table's rows: one per model, pictures as data URLs."""
    return [
        {
            "model": row.model,
            "decision": pictures[row.model],
            "FLOPs saved": 100 * row.saved,
            "answer": row.answer,
            "confidence": 100 * row.confidence,
            "what it decided": row.decision,
            "latency (ms)": row.latency_ms,
            "family": row.family.name,
            "spent (M)": row.flops / 1e6,
            "static twin (M)": row.flops_full / 1e6,
        }
        for row in rows
    ]

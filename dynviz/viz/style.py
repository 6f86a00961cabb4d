"""One visual language for every page: computed parts solid and coloured, skipped
parts grey; the same colour always means the same exit or stage."""

from __future__ import annotations

import plotly.graph_objects as go

EXIT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SKIPPED = "#c7c7c7"
STATIC = "#7f7f7f"
THRESHOLD = "#111111"


MODEL_COLORS = EXIT_COLORS + ("#bcbd22", "#862a16", "#0d2a63", "#fb00d1", "#6c7c32", "#b68100", "#00a08b", "#a777f1")
"""A colour per model on a chart of many (the trade-offs: a dozen CIFAR-10 models), none of them grey (static)."""


def exit_color(index: int) -> str:
    return EXIT_COLORS[index % len(EXIT_COLORS)]


def model_colors(names: list[str]) -> dict[str, str]:
    """Each model's colour, by its place in ``names``: the same model in the same colour on every chart of a page."""
    return {name: MODEL_COLORS[i % len(MODEL_COLORS)] for i, name in enumerate(names)}


def titled(figure: go.Figure, title: str, height: int = 320) -> go.Figure:
    """Every chart asks its question in its title."""
    figure.update_layout(
        title=title,
        height=height,
        margin=dict(l=10, r=10, t=60, b=10),
        legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"),
    )
    return figure


def legend_below(figure: go.Figure, gap: float = 0.12) -> go.Figure:
    """The legend under the plot, for a legend of several entries: above it, where :func:`titled` puts it, a legend
    that wraps onto a second row in a narrow column covers the title."""
    return figure.update_layout(legend=dict(orientation="h", y=-gap, yanchor="top", x=0, xanchor="left"))

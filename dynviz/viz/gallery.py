"""Renderers for a gallery of decisions: which exit each class takes, and thumbnails to pick from."""

from __future__ import annotations

import base64

import pandas as pd
import plotly.graph_objects as go

from dynviz.gallery import GalleryResult
from dynviz.viz.style import exit_color, titled


def class_exit_heatmap(table: pd.DataFrame) -> go.Figure:
    """Images per (class, exit): category-specific depth, the dataset-level picture of early exiting."""
    figure = go.Figure(
        go.Heatmap(
            z=table.values.tolist(),
            x=list(table.columns),
            y=list(table.index),
            colorscale="Blues",
            text=table.values.tolist(),
            texttemplate="%{text}",
            colorbar=dict(title="images"),
            hovertemplate="%{y} at %{x}: %{z} images<extra></extra>",
        )
    )
    figure.update_xaxes(title="exit that answered (cheapest first)")
    figure.update_yaxes(title="true class", autorange="reversed")
    return titled(figure, "Which exit does each class take?", height=420)


def exit_shares(groups: dict[int, list[GalleryResult]], exits: int) -> go.Figure:
    counts = [len(groups.get(k, [])) for k in range(exits)]
    figure = go.Figure(
        go.Bar(
            x=[f"exit {k + 1}" for k in range(exits)],
            y=counts,
            marker_color=[exit_color(k) for k in range(exits)],
            text=counts,
            textposition="outside",
        )
    )
    figure.update_yaxes(title="images")
    figure.update_xaxes(title="exit that answered")
    return titled(figure, "Where did the images leave?", height=300)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def result_table(results: list[GalleryResult], labels: tuple[str, ...], thumbnails: list[bytes]) -> pd.DataFrame:
    """One row per image with its thumbnail (``thumbnails``: each result's, as PNG), for ``st.dataframe`` with an
    image column."""
    return pd.DataFrame(
        {
            "image": data_uri(png),
            "file": r.item.image.name,
            "true class": labels[r.item.label] if r.item.label is not None else "",
            "answer": r.trace.prediction.label,
            "right": r.correct,
            "exit": r.exit + 1,
            "confidence": round(r.confidence, 3),
        }
        for r, png in zip(results, thumbnails, strict=True)
    )

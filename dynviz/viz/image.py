"""The user's own photo, at its own aspect ratio, with overlays in its pixel coordinates."""

from __future__ import annotations

import base64
import io
import weakref

import plotly.graph_objects as go
from PIL import Image

from dynviz.explain import Heatmap
from dynviz.inputs import REDUCING_GAP
from dynviz.trace import Box
from dynviz.viz.style import exit_color, titled

# Transparent where nothing is relevant, so the photo stays visible under the map.
RELEVANCE = [[0.0, "rgba(255,255,0,0)"], [0.3, "rgba(255,200,0,0.25)"], [1.0, "rgba(220,0,0,0.75)"]]
DISPLAY_SIDE = 640
"""Longest side sent to the browser; coordinates stay in the input's pixels."""


_previews: dict[int, Image.Image] = {}
"""Each photo's preview, by the photo's id while it lives (Pillow's images compare by value: no hashing). Single
dict operations need no lock: two threads that shrink one photo at once both store the same picture."""


def preview(image: Image.Image) -> Image.Image:
    """``image`` with its longest side at most :data:`DISPLAY_SIDE`: what is sent to the browser. Made once per
    image and kept while the image is: a page draws its photo in several charts at every rerun, and shrinking a
    12-megapixel photo took 75 ms each time."""
    scale = max(image.size) / DISPLAY_SIDE
    if scale <= 1:
        return image
    shown = _previews.get(id(image))
    if shown is None:
        shown = image.resize((round(image.width / scale), round(image.height / scale)), reducing_gap=REDUCING_GAP)
        _previews[id(image)] = shown
        weakref.finalize(image, _previews.pop, id(image), None)
    return shown


def jpeg_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def photo(image: Image.Image, title: str) -> go.Figure:
    """The photo as a plotly figure whose axes are the input's pixels. The picture travels as one JPEG (a
    numeric array of its pixels was megabytes of JSON per chart)."""
    shown = preview(image)
    scale = image.width / shown.width
    figure = go.Figure(
        go.Image(source=jpeg_url(shown), x0=scale / 2, y0=scale / 2, dx=scale, dy=scale, hoverinfo="skip")
    )
    figure.update_xaxes(range=[0, image.width], showticklabels=False, showgrid=False, zeroline=False)
    figure.update_yaxes(range=[image.height, 0], showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x")
    return titled(figure, title, height=420)


def with_box(figure: go.Figure, box: Box, label: str, color: str) -> go.Figure:
    x0, y0, x1, y1 = box
    figure.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=color, width=3))
    figure.add_annotation(
        x=x0,
        y=y0,
        text=label,
        showarrow=False,
        xanchor="left",
        yanchor="bottom",
        font=dict(color="white"),
        bgcolor=color,
    )
    return figure


def with_heatmap(figure: go.Figure, heatmap: Heatmap, name: str) -> go.Figure:
    x0, y0, x1, y1 = heatmap.box
    rows, cols = heatmap.values.shape
    dx, dy = (x1 - x0) / cols, (y1 - y0) / rows
    figure.add_heatmap(
        z=heatmap.values,
        x0=x0 + dx / 2,
        dx=dx,
        y0=y0 + dy / 2,
        dy=dy,
        colorscale=RELEVANCE,
        zmin=0,
        zmax=1,
        name=name,
        colorbar=dict(title="relevance", len=0.8),
        hoverinfo="skip",
    )
    return figure


def attribution_figure(image: Image.Image, heatmap: Heatmap, title: str, name: str) -> go.Figure:
    """The photo with the part the network saw outlined and an attribution map (``name``) over it."""
    figure = with_box(photo(image, title), heatmap.box, "seen by the network", exit_color(0))
    return with_heatmap(figure, heatmap, name)


def network_view(image: Image.Image, box: Box, resolution: int, display_side: int = 160) -> Image.Image:
    """What a network saw: ``box`` of the input at ``resolution``², enlarged with visible pixels."""
    view = image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
    return view.resize((display_side, display_side), Image.Resampling.NEAREST) if resolution < display_side else view


def thumbnail(image: Image.Image, side: int = 64) -> Image.Image:
    """Small images shown with visible pixels (CIFAR's 32×32), large ones reduced."""
    resample = Image.Resampling.NEAREST if max(image.size) < side else Image.Resampling.LANCZOS
    return image.resize((side, side), resample)

"""The user's own photo, at its own aspect ratio, with overlays in its pixel coordinates."""

from __future__ import annotations

import base64
import io
import weakref

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageFont

from dynviz.explain import Heatmap
from dynviz.inputs import REDUCING_GAP
from dynviz.trace import Box
from dynviz.viz.style import exit_color, titled

RELEVANCE_STOPS = ((0.0, (255, 255, 0, 0.0)), (0.3, (255, 200, 0, 0.25)), (1.0, (220, 0, 0, 0.75)))
"""(value, RGBA) of the relevance scale: transparent where nothing is relevant, so the photo stays visible under
the map."""
RELEVANCE = [[at, f"rgba({r},{g},{b},{a})"] for at, (r, g, b, a) in RELEVANCE_STOPS]
"""The same scale as a plotly colorscale."""
DISPLAY_SIDE = 640
"""Longest side sent to the browser; coordinates stay in the input's pixels."""
SMALLEST_PICTURE = 320
"""A smaller input (a CIFAR-10 image) is drawn enlarged, its pixels visible, to at least this longest side."""
LEGEND_HEIGHT = 28


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


def colors_on(scale: tuple[tuple[float, tuple[float, ...]], ...], values: np.ndarray) -> np.ndarray:
    """The colour (uint8, one more axis) of each value in 0..1 on ``scale``'s (value, RGB or RGBA) stops, where an
    alpha is in 0..1 as in CSS."""
    stops = [at for at, _ in scale]
    channels = [[color[c] * (255 if c == 3 else 1) for _, color in scale] for c in range(len(scale[0][1]))]
    clipped = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(clipped, stops, channel) for channel in channels], -1).round().astype(np.uint8)


def displayed(image: Image.Image) -> tuple[Image.Image, float]:
    """The photo as a picture for the browser (:func:`preview`; a small input enlarged, its pixels visible) to draw
    on, and its scale: the picture's pixels per input pixel."""
    shown = preview(image).convert("RGB")
    if max(shown.size) < SMALLEST_PICTURE:
        factor = -(-SMALLEST_PICTURE // max(shown.size))
        shown = shown.resize((shown.width * factor, shown.height * factor), Image.Resampling.NEAREST)
    return shown, shown.width / image.width


def boxed_picture(
    image: Image.Image, boxes: list[tuple[Box, str, str]], heatmap: Heatmap | None = None, name: str = ""
) -> Image.Image:
    """The photo as the browser gets it, with each (box, label, colour) outlined and labelled and, given one, an
    attribution map (``name``) over the part it covers, above a legend of its scale. Drawn here rather than as a
    chart: nothing on it is worth hovering over, and a plotly photo with a heatmap cost the browser 140 ms at each
    redraw where an image costs 10 ms (docs/serving.md)."""
    shown, scale = displayed(image)
    if heatmap is not None:
        left, top, right, bottom = (round(v * scale) for v in heatmap.box)
        values = Image.fromarray(heatmap.values.astype(np.float32), "F").resize(
            (max(1, right - left), max(1, bottom - top)), Image.Resampling.BILINEAR
        )
        overlay = Image.fromarray(colors_on(RELEVANCE_STOPS, np.asarray(values)), "RGBA")
        shown.paste(overlay, (left, top), overlay)
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default(size=14)
    for box, label, color in boxes:
        left, top, right, bottom = (v * scale for v in box)
        draw.rectangle((left, top, right, bottom), outline=color, width=3)
        tag = draw.textbbox((left + 5, top + 4), label, font=font)
        draw.rectangle((tag[0] - 3, tag[1] - 2, tag[2] + 3, tag[3] + 2), fill=color)
        draw.text((left + 5, top + 4), label, fill="white", font=font)
    return shown if heatmap is None else with_legend(shown, name, font)


def with_legend(picture: Image.Image, name: str, font: ImageFont.ImageFont) -> Image.Image:
    """``picture`` above the relevance scale, from its lowest value (left) to its highest, over white."""
    canvas = Image.new("RGB", (picture.width, picture.height + LEGEND_HEIGHT), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    middle = picture.height + LEGEND_HEIGHT // 2
    start = 4 + draw.textlength(f"{name}: low ", font=font)
    width = min(160, max(40, picture.width - start - 50))
    bar = Image.fromarray(colors_on(RELEVANCE_STOPS, np.linspace(0, 1, round(width))[None, :].repeat(10, 0)), "RGBA")
    canvas.paste(bar, (round(start), middle - 5), bar)
    draw.rectangle((round(start), middle - 5, round(start) + round(width), middle + 5), outline="#7f7f7f")
    draw.text((4, middle), f"{name}: low", fill="black", font=font, anchor="lm")
    draw.text((start + width + 6, middle), "high", fill="black", font=font, anchor="lm")
    return canvas


def attribution_picture(image: Image.Image, heatmap: Heatmap, name: str) -> Image.Image:
    """The photo with the part the network saw outlined and an attribution map (``name``) over it."""
    return boxed_picture(image, [(heatmap.box, "seen by the network", exit_color(0))], heatmap, name)


def network_view(image: Image.Image, box: Box, resolution: int, display_side: int = 160) -> Image.Image:
    """What a network saw: ``box`` of the input at ``resolution``², enlarged with visible pixels."""
    view = image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP)
    return view.resize((display_side, display_side), Image.Resampling.NEAREST) if resolution < display_side else view


def thumbnail(image: Image.Image, side: int = 64) -> Image.Image:
    """Small images shown with visible pixels (CIFAR's 32×32), large ones reduced."""
    resample = Image.Resampling.NEAREST if max(image.size) < side else Image.Resampling.LANCZOS
    return image.resize((side, side), resample)

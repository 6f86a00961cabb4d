"""Renderers for frame records: which frames a temporal model looked at, in what order, why it stopped or
skipped, and what the clip cost against the static network on every frame."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image, ImageDraw, ImageOps

from dynviz.clips import write_clip
from dynviz.trace import GLANCED, PROCESSED, FrameRecord, Trace
from dynviz.trace import SKIPPED as NOT_LOOKED  # viz.style's SKIPPED is a colour
from dynviz.units import FLOPS_UNIT, format_flops
from dynviz.video import InputVideo
from dynviz.viz.style import SKIPPED, STATIC, THRESHOLD, exit_color, titled

LOOKED = exit_color(0)
GLANCE = exit_color(1)
CUT = exit_color(3)
ACTION_COLOR = {PROCESSED: LOOKED, GLANCED: GLANCE}
ACTION_WORDS = {PROCESSED: "looked at", GLANCED: "glanced only", NOT_LOOKED: "skipped"}
STRIP_FRAMES = 40
"""At most this many thumbnails in the frame strip: a longer clip shows every n-th frame, and every frame
the model processed."""
CLIP_SIDE = 480
"""Long side of the annotated clip sent to the browser."""


def strip_frames(records: list[FrameRecord], limit: int = STRIP_FRAMES) -> list[int]:
    """The frames the strip shows: all of a short clip; of a long one, evenly spaced frames and every
    processed one and every cut, up to ``limit`` (processed and cut frames first)."""
    if len(records) <= limit:
        return list(range(len(records)))
    notable = [r.index for r in records if r.action == PROCESSED or r.cut][:limit]
    spare = limit - len(notable)
    even = [round(i * (len(records) - 1) / max(spare - 1, 1)) for i in range(spare)] if spare > 0 else []
    return sorted(set(notable) | set(even))


def frame_strip(video: InputVideo, trace: Trace, columns: int = 10) -> Image.Image:
    """Thumbnails of the clip in time order, framed in the colour of what the model did with each: looked at
    (with its place in the visiting order), glanced at, or skipped (faded). A red bar marks a cut."""
    records = trace.records_of(FrameRecord)
    shown = strip_frames(records)
    height, width = video.thumbnails.shape[1:3]
    pad, label = 4, 14
    rows = -(-len(shown) // columns)
    sheet = Image.new("RGB", (columns * (width + 2 * pad), rows * (height + 2 * pad + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for slot, index in enumerate(shown):
        record = records[index]
        x, y = (slot % columns) * (width + 2 * pad), (slot // columns) * (height + 2 * pad + label)
        thumbnail = Image.fromarray(video.thumbnails[index])
        if record.action not in ACTION_COLOR:
            thumbnail = Image.blend(
                ImageOps.grayscale(thumbnail).convert("RGB"), Image.new("RGB", thumbnail.size, "white"), 0.5
            )
        color = ACTION_COLOR.get(record.action, SKIPPED)
        draw.rectangle((x, y, x + width + 2 * pad - 1, y + height + 2 * pad - 1), fill=color)
        sheet.paste(thumbnail, (x + pad, y + pad))
        if record.cut:
            draw.rectangle((x, y, x + 3, y + height + 2 * pad), fill=CUT)
        caption = f"{index}" + (f"  #{record.order}" if record.action == PROCESSED and record.order else "")
        draw.text((x + pad, y + height + 2 * pad), caption, fill="black")
    return sheet


def decision_charts(trace: Trace) -> list[go.Figure]:
    """Why it stopped, chose or skipped, one chart per kind of decision its frames record: the clip's confidence
    after each frame looked at against the stop threshold (early exiting), each frame's glance confidence
    (frame selection), each frame's change against the change threshold (skipping)."""
    records = trace.records_of(FrameRecord)
    charts = []
    if any(r.evidence is not None for r in records):
        charts.append(_stop_chart(trace, records))
    if any(r.glance is not None for r in records):
        charts.append(_glance_chart(records))
    if any(r.change is not None for r in records):
        charts.append(_change_chart(trace, records))
    return charts


def _stop_chart(trace: Trace, records: list[FrameRecord]) -> go.Figure:
    figure = go.Figure()
    looked = sorted((r for r in records if r.evidence is not None), key=lambda r: r.order)
    figure.add_scatter(
        x=[r.order for r in looked],
        y=[r.evidence for r in looked],
        mode="lines+markers",
        hovertext=[
            f"frame {r.index} ({r.time_s:.2f} s): {r.prediction.label}; clip so far {r.evidence:.2f}" for r in looked
        ],
        hoverinfo="text",
        marker_color=LOOKED,
        name="confidence of the frames seen so far",
    )
    if "tau" in trace.settings:
        figure.add_hline(
            y=trace.settings["tau"], line={"color": THRESHOLD, "dash": "dash"}, annotation_text="stop threshold τ"
        )
    figure.update_xaxes(title="frames looked at (in the order visited)", dtick=1)
    figure.update_yaxes(range=[0, 1.05], title="top-1 confidence (calibrated)")
    return titled(figure, "When was it sure enough to stop?")


def _glance_chart(records: list[FrameRecord]) -> go.Figure:
    figure = go.Figure()
    figure.add_bar(
        x=[r.index for r in records],
        y=[r.glance for r in records],
        marker_color=[ACTION_COLOR.get(r.action, SKIPPED) for r in records],
        hovertext=[
            f"frame {r.index} ({r.time_s:.2f} s): glance {r.glance:.2f}, {ACTION_WORDS[r.action]}" for r in records
        ],
        hoverinfo="text",
        name="the glance's confidence (blue: chosen for a full look)",
    )
    figure.update_xaxes(title="frame")
    figure.update_yaxes(title="top-1 confidence of the glance", range=[0, 1.05])
    return titled(figure, "Which frames did the glance find most telling?")


def _change_chart(trace: Trace, records: list[FrameRecord]) -> go.Figure:
    figure = go.Figure()
    figure.add_bar(
        x=[r.index for r in records],
        y=[r.change or 0.0 for r in records],
        marker_color=[CUT if r.cut else ACTION_COLOR.get(r.action, SKIPPED) for r in records],
        hovertext=[f"frame {r.index} ({r.time_s:.2f} s): {ACTION_WORDS[r.action]}, change {r.change}" for r in records],
        hoverinfo="text",
        name="change since the last frame looked at",
    )
    if "delta" in trace.settings:
        figure.add_hline(
            y=trace.settings["delta"], line={"color": THRESHOLD, "dash": "dash"}, annotation_text="change threshold δ"
        )
    figure.update_xaxes(title="frame")
    figure.update_yaxes(
        title="mean absolute change of the thumbnail", range=[0, max(0.3, *(r.change or 0 for r in records))]
    )
    return titled(figure, "Which frames changed enough to look again? (red: a cut)")


def cumulative_flops(trace: Trace) -> go.Figure:
    """FLOPs spent up to each frame of the clip, against the static network run on every frame."""
    records = trace.records_of(FrameRecord)
    spent = np.cumsum([r.flops for r in records])
    per_frame = trace.cost.flops_full / max(len(records), 1)
    figure = go.Figure()
    frames = [r.index for r in records]
    figure.add_scatter(
        x=frames,
        y=per_frame * (np.arange(len(records)) + 1),
        mode="lines",
        line={"color": STATIC, "dash": "dot"},
        name="static network on every frame",
    )
    figure.add_scatter(x=frames, y=spent, mode="lines", line={"color": LOOKED}, name=trace.model)
    figure.update_xaxes(title="frame")
    figure.update_yaxes(title=f"{FLOPS_UNIT} spent so far")
    return titled(
        figure,
        f"What did the clip cost? {format_flops(trace.cost.flops)} against {format_flops(trace.cost.flops_full)}",
    )


def label_timeline(trace: Trace) -> go.Figure:
    """Each frame's answer along the clip (stream labelling): one row per label, cuts marked."""
    records = [r for r in trace.records_of(FrameRecord) if r.prediction is not None]
    labels = list(dict.fromkeys(r.prediction.label for r in records))
    figure = go.Figure()
    figure.add_scatter(
        x=[r.index for r in records],
        y=[r.prediction.label for r in records],
        mode="markers",
        marker={
            "color": [ACTION_COLOR.get(r.action, SKIPPED) for r in records],
            "symbol": "line-ns-open",
            "size": 14,
            "line": {"width": 3},
        },
        hovertext=[
            f"frame {r.index}: {r.prediction.label} ({r.prediction.confidence:.2f}), {ACTION_WORDS[r.action]}"
            for r in records
        ],
        hoverinfo="text",
        name="answer (blue: computed here; orange: carried over)",
    )
    for r in trace.records_of(FrameRecord):
        if r.cut:
            figure.add_vline(x=r.index - 0.5, line={"color": CUT, "width": 2})
    figure.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    figure.update_xaxes(title="frame")
    return titled(figure, "What was on screen, frame by frame? (red lines: cuts found)", height=160 + 28 * len(labels))


def frame_table(trace: Trace) -> pd.DataFrame:
    """One row per frame: the CLI's ``--per-frame`` columns, then the decision's own."""
    records = trace.records_of(FrameRecord)
    table = pd.DataFrame(FrameRecord.rows(trace.input_name, records))
    table["action"] = [r.action for r in records]
    table["order"] = [r.order for r in records]
    table["evidence"] = [r.evidence for r in records]
    table["change"] = [r.change for r in records]
    table["glance"] = [r.glance for r in records]
    table["cut"] = [r.cut for r in records]
    return table


def annotated_clip(video: InputVideo, trace: Trace) -> bytes:
    """The clip with the decisions drawn on it, as WebM (VP8, which Chromium plays): a coloured frame around
    each frame the model looked at, the box it saw, its place in the visiting order and the answer."""
    records = trace.records_of(FrameRecord)
    scale = min(1.0, CLIP_SIDE / max(video.size))
    size = (round(video.size[0] * scale) // 2 * 2, round(video.size[1] * scale) // 2 * 2)
    frames = []
    for record in records:
        frame = video.frame(record.index).image.resize(size, Image.Resampling.BILINEAR)
        if record.action not in ACTION_COLOR:
            frame = Image.blend(frame, ImageOps.grayscale(frame).convert("RGB"), 0.6)
        draw = ImageDraw.Draw(frame)
        color = ACTION_COLOR.get(record.action, SKIPPED)
        draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=color, width=6)
        if record.box is not None and record.action == PROCESSED:
            draw.rectangle(tuple(v * scale for v in record.box), outline="white", width=2)
        words = ACTION_WORDS[record.action] + (
            f" #{record.order}" if record.action == PROCESSED and record.order else ""
        )
        if record.prediction is not None:
            words += f": {record.prediction.label}"
        if record.cut:
            words = "CUT · " + words
        draw.rectangle((0, size[1] - 18, size[0], size[1]), fill=color)
        draw.text((6, size[1] - 16), f"{record.index}  {words}", fill="white")
        frames.append(np.asarray(frame))
    rate = len(records) / max(video.times[-1], 1e-3) if len(records) > 1 else 1.0  # the clip's own pace
    with tempfile.TemporaryDirectory(prefix="dynviz-annotated-") as folder:
        path = Path(folder) / "annotated.webm"
        write_clip(frames, path, min(max(rate, 1.0), 60.0))
        return path.read_bytes()

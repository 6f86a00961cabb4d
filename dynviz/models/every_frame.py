"""The all-frames baseline: an image model given a video runs on every frame.

It answers per frame (stream labelling) and for the clip with the mean of its per-frame probabilities;
its cost is what every temporal-wise dynamic model (survey §5) is measured against."""

from __future__ import annotations

from typing import Any

from dynviz.cards import STATIC, OperatingPoint
from dynviz.cost import stopwatch
from dynviz.inputs import InputError, InputImage
from dynviz.models.base import Knob, Memo
from dynviz.models.frames import mean_prediction
from dynviz.progress import report
from dynviz.trace import PROCESSED, Cost, FrameRecord, Trace
from dynviz.video import InputVideo
from dynviz.zoo import VIDEO, accepts


class EveryFrame:
    """``model`` (any image model of the zoo) on every frame of a clip."""

    def __init__(self, model: Any):
        self.model = model
        self.name = f"{model.name} on every frame"
        self.about = model.about
        self.labels = model.labels
        self.baselines = ()
        self.default_point = "static"

    def knobs(self) -> list[Knob]:
        return self.model.knobs()

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {"static": OperatingPoint("static", {}, STATIC)}

    def class_keys(self) -> tuple[tuple[str, ...], ...]:
        return self.model.class_keys()

    def analyze(self, video: InputVideo, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        records, frame_traces = [], []
        with stopwatch() as watch:
            for i in range(video.frame_count):
                report(i / video.frame_count, f"{self.model.name} on frame {i} of {video.frame_count}")
                frame = self.model.analyze(video.frame(i), settings, memo.setdefault(("frame", i), {}))
                frame_traces.append(frame)
                records.append(
                    FrameRecord(
                        i, video.times[i], PROCESSED, frame.cost.flops, order=i + 1, prediction=frame.prediction
                    )
                )
        spent = sum(t.cost.flops for t in frame_traces)
        full = sum(t.cost.flops_full for t in frame_traces)
        cost = Cost(spent, full, {self.model.name: spent}, watch.ms, {self.name: spent})
        answer = mean_prediction([t.prediction for t in frame_traces], self.labels)
        return Trace(
            self.name, video.name, video.size, answer, cost, tuple(records), frame_traces[0].settings, video.notes
        )


def analyst(name: str, model: Any, item: InputImage | InputVideo) -> Any:
    """Who analyses ``item``: ``model`` (registered as ``name``) itself, or, for a video given to an image model,
    that model on every frame. An image given to a video model is an :class:`~dynviz.inputs.InputError`."""
    takes_video = accepts(name) == VIDEO
    if isinstance(item, InputVideo):
        return model if takes_video else EveryFrame(model)
    if takes_video:
        raise InputError(f"{item.name}: an image, and {name} analyses videos (give it a clip)")
    return model

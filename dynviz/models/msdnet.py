"""MSDNet: multi-scale dense networks with early exits (Huang et al., ICLR 2018).

Survey §3.1 (sample-wise dynamic depth: early exiting within one network).

Early classifiers in a chain-structured network fail for two reasons: their
features are too fine to classify, and training them hurts the later layers.
MSDNet answers both with a two-dimensional layout:

- **scales** s = 1..S: feature maps at 32², 16² and 8² on CIFAR. The first layer
  builds all of them (strided convolutions); every exit classifier reads only
  the coarsest scale, where features are already abstract;
- **dense connectivity** across depth: layer ℓ at scale s concatenates

      x_s^ℓ = [ x_s^{ℓ-1},  h_s(x_s^{ℓ-1}),  h̃_s(x_{s-1}^{ℓ-1}) ]

  (h: bottleneck 1×1 → 3×3 convolution; h̃: the same with stride 2 from the
  finer scale), so later layers reuse every earlier feature and need not be
  disturbed by the early classifiers' needs;
- scale **pruning** ("max") and 1×1 **transitions**: deep in the network the
  finest scales are dropped, as no exit can read them any more.

Exits k = 1..K sit after blocks of layers (``base`` layers, then ``step`` more
per block). Inference is budgeted early exiting: exit k answers when its
temperature-calibrated confidence passes τ_k, so an input costs

    FLOPs(x) = Σ_{j ≤ k*(x)} (block_j + classifier_j).

The τ_k are the paper's budgeted batch classification: per FLOPs budget, the
thresholds most accurate within it on validation images (searched, where the paper
fixes a geometric schedule of exit shares; :mod:`dynviz.train.multi_exit`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from dynviz.cards import About
from dynviz.models.base import Memo
from dynviz.models.cifar import CIFAR_SIZE
from dynviz.models.multi_exit import ENSEMBLE_STAGE_PAPER, ENSEMBLE_TAUGHT_DATA, CalibratedExits, every_exit
from dynviz.trace import Box, ExitRecord, NodeRecord
from dynviz.zoo import register_model

ABOUT = About(
    title="MSDNet: multi-scale dense network with 7 exits (CIFAR-10)",
    family="sample-wise · dynamic depth · early exiting (intermediate classifiers)",
    summary=(
        "One network, seven classifiers along its depth. Features are kept at three scales (32², 16², 8²) and "
        "densely connected across depth, so every classifier reads coarse, abstract features from the first "
        "block on. An image stops at the first exit whose calibrated confidence reaches that exit's threshold: "
        "easy images pay for one block, hard ones for all seven."
    ),
    papers=(
        "Huang et al., Multi-scale dense networks for resource efficient image classification, ICLR 2018",
        "Li et al., Improved techniques for training adaptive deep networks, ICCV 2019 (in-place distillation)",
        ENSEMBLE_STAGE_PAPER,
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §3.1",
    ),
    license="Weights: trained by this project (same license as the code)",
    data=ENSEMBLE_TAUGHT_DATA,
)


@dataclass(frozen=True)
class MSDNetConfig:
    """The paper's CIFAR layout; ``tiny()`` is a fast one for tests."""

    exits: int = 7
    base: int = 4
    """Layers before the first exit."""
    step: int = 2
    """Layers between two exits."""
    channels: int = 16
    growth: int = 6
    scale_factors: tuple[int, ...] = (1, 2, 4)
    """Channel multiplier of each scale (grFactor); bottleneck widths use the same (bnFactor)."""
    reduction: float = 0.5
    classifier_width: int = 128
    classes: int = 10

    @property
    def scales(self) -> int:
        return len(self.scale_factors)

    @property
    def layers(self) -> int:
        return self.base + self.step * (self.exits - 1)

    def scales_at(self, layer: int) -> tuple[int, int]:
        """(scales in, scales out) of layer ``layer`` = 1..L under the paper's 'max' pruning."""
        interval = math.ceil(self.layers / self.scales)
        return (
            self.scales - max(0, layer - 2) // interval,
            self.scales - (layer - 1) // interval,
        )

    @classmethod
    def tiny(cls) -> MSDNetConfig:
        return cls(exits=3, base=2, step=1, channels=4, growth=2, classifier_width=8)


def conv_bn_relu(width_in: int, width_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width_in, width_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(width_out),
        nn.ReLU(inplace=True),
    )


def bottleneck(width_in: int, width_out: int, bottleneck_factor: int, stride: int) -> nn.Sequential:
    inner = min(width_in, bottleneck_factor * width_out)
    return nn.Sequential(conv_bn_relu(width_in, inner, 1), conv_bn_relu(inner, width_out, 3, stride))


class ScaleUnit(nn.Module):
    """One node of the grid: new features at one scale, from that scale (h) and the finer one (h̃)."""

    def __init__(self, width_same: int, width_finer: int | None, growth: int, factors: tuple[int, int]):
        super().__init__()
        from_finer = width_finer is not None
        self.same = bottleneck(width_same, growth // 2 if from_finer else growth, factors[1], 1)
        self.finer = bottleneck(width_finer, growth // 2, factors[0], 2) if from_finer else None

    def forward(self, same: torch.Tensor, finer: torch.Tensor | None) -> torch.Tensor:
        new = [self.same(same)] + ([self.finer(finer)] if self.finer is not None else [])
        return torch.cat([same, *new], 1)


class MSDLayer(nn.Module):
    """One layer across the scales it keeps. When it drops the finest scale, its new finest
    scale is still fed by the dropped one (``discard``)."""

    def __init__(self, config: MSDNetConfig, width: int, scales_in: int, scales_out: int):
        super().__init__()
        self.offset = config.scales - scales_out  # index of its finest output scale
        self.discard = scales_in - scales_out
        f = config.scale_factors
        self.units = nn.ModuleList(
            ScaleUnit(
                width * f[s],
                width * f[s - 1] if s > self.offset or self.discard else None,
                config.growth * f[s],
                (f[s - 1] if s > 0 else f[s], f[s]),
            )
            for s in range(self.offset, config.scales)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.discard:  # the dropped finest scale only feeds the next one down
            features = features[self.discard - 1 :]
            return [unit(features[i + 1], features[i]) for i, unit in enumerate(self.units)]
        return [unit(features[i], features[i - 1] if i else None) for i, unit in enumerate(self.units)]


class Transition(nn.Module):
    """1×1 convolutions that compress every kept scale after a scale is dropped."""

    def __init__(self, config: MSDNetConfig, width_in: int, width_out: int, scales: int):
        super().__init__()
        offset = config.scales - scales
        factors = config.scale_factors[offset:]
        self.convs = nn.ModuleList(conv_bn_relu(width_in * f, width_out * f, 1) for f in factors)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(x) for conv, x in zip(self.convs, features)]


class FirstLayer(nn.Module):
    """Builds every scale from the image: a 3×3 convolution, then strided ones."""

    def __init__(self, config: MSDNetConfig):
        super().__init__()
        widths = [config.channels * f for f in config.scale_factors]
        self.convs = nn.ModuleList(
            conv_bn_relu(3 if s == 0 else widths[s - 1], widths[s], 3, 1 if s == 0 else 2) for s in range(len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for conv in self.convs:
            x = conv(x)
            features.append(x)
        return features


class Classifier(nn.Module):
    """An exit on the coarsest scale: two strided 3×3 convolutions, pooling, a linear layer."""

    def __init__(self, width_in: int, width: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(width_in, width, 3, 2), conv_bn_relu(width, width, 3, 2))
        self.linear = nn.Linear(width, classes)

    def forward(self, coarsest: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(coarsest).mean((2, 3)))


@dataclass(frozen=True)
class GridNode:
    """Where a node of the scales × depth grid sits, for the picture of what was computed."""

    layer: int
    """0 for the first layer, then 1..L."""
    scale: int
    block: int
    module: str
    """Qualified name of the module that computes it (for its FLOPs)."""


class MSDNet(nn.Module):
    def __init__(self, config: MSDNetConfig = MSDNetConfig()):
        super().__init__()
        self.config = config
        blocks, classifiers, nodes = [], [], []
        nodes += [GridNode(0, s, 0, f"blocks.0.0.convs.{s}") for s in range(config.scales)]
        width, layer = config.channels, 0
        for k in range(config.exits):
            parts: list[nn.Module] = [FirstLayer(config)] if k == 0 else []
            for _ in range(config.base if k == 0 else config.step):
                layer += 1
                scales_in, scales_out = config.scales_at(layer)
                nodes += [
                    GridNode(layer, config.scales - scales_out + i, k, f"blocks.{k}.{len(parts)}.units.{i}")
                    for i in range(scales_out)
                ]
                parts.append(MSDLayer(config, width, scales_in, scales_out))
                width += config.growth
                if scales_out < scales_in and config.reduction:
                    compressed = math.floor(config.reduction * width)
                    parts.append(Transition(config, width, compressed, scales_out))
                    width = compressed
            blocks.append(nn.Sequential(*parts))
            classifiers.append(Classifier(width * config.scale_factors[-1], config.classifier_width, config.classes))
        self.blocks = nn.ModuleList(blocks)
        self.classifiers = nn.ModuleList(classifiers)
        self.nodes = tuple(nodes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def start(x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def exit_features(features: list[torch.Tensor]) -> torch.Tensor:
        """Every exit reads the coarsest scale."""
        return features[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return every_exit(self, x)


class MSDNetClassifier(CalibratedExits):
    """MSDNet behind the zoo's interface: calibrated exits, operating points, traces of the grid."""

    name = "msdnet_cifar"
    about = ABOUT
    network = MSDNet
    config = MSDNetConfig

    def exit_layer(self, k: int) -> int:
        return self.net.config.base + self.net.config.step * k

    def exit_part_name(self, k: int) -> str:
        return f"exit {k + 1} (layer {self.exit_layer(k)})"

    def explain_layer(self, k: int) -> nn.Module:
        return self.net.classifiers[k].features[0]  # 4×4 at the coarsest scale: the finest map an exit owns

    def grid_records(self, answered: int, box: Box, memo: Memo) -> tuple[NodeRecord, ...]:
        return tuple(
            NodeRecord(
                layer=node.layer,
                scale=node.scale,
                resolution=CIFAR_SIZE >> node.scale,
                block=node.block,
                computed=node.block <= answered,
                flops=self.module_flops[node.module],
            )
            for node in self.net.nodes
        )


register_model(MSDNetClassifier.name, emits=(ExitRecord, NodeRecord), tiny=dataclasses.asdict(MSDNetConfig.tiny()))(
    MSDNetClassifier.build
)

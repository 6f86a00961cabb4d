"""RANet-style resolution adaptation (after Yang et al., Resolution adaptive networks, CVPR 2020).

Survey §4.3 (spatial-wise dynamic networks: resolution level), with early exits (§3.1).

"RANet-style" because pieces of the paper's network are left out on purpose, to keep one
method on one screen and train it with the shared CIFAR recipe: each sub-network here reads
its own down-sampled copy of the image (the paper: one shared first layer whose strided
convolutions feed every sub-network), its stages are residual blocks (the paper: dense
blocks), a later sub-network adds the earlier one's features by a convolution at each
shared scale (the paper: convolution, bilinear up-sampling and concatenation at every
layer), and each sub-network has one exit (the paper: two, each after two strided
convolutions).

MSDNet keeps every input at full resolution from the first layer on. RANet
starts from the observation that many images are recognised from a thumbnail:
it runs a chain of sub-networks on the same image at *increasing* resolutions
r_1 < r_2 < … (8², 16² and 32² on CIFAR), each ending in an exit classifier.
The low-resolution sub-network runs first; an image whose calibrated
confidence passes the exit's threshold τ_s stops there, having paid only for
the thumbnail. Otherwise the next sub-network looks at the image at twice the
resolution and *reuses* what the previous one computed: each of its stages adds
the previous sub-network's features at the same scale (up-sampled where the
previous one never reached that scale):

    h_s^ρ ← h_s^ρ + W_s^ρ ∗ up(h_{s−1}^{min(ρ, r_{s−1})}),

so a hard image pays for every resolution, but no sub-network starts from
nothing. Within a sub-network the features go down from its resolution to the
coarsest (8²) in residual stages, as in a CIFAR ResNet; the exit classifier
reads the coarsest. Exits and thresholds are trained and calibrated exactly as
MSDNet's (:mod:`dynviz.train.multi_exit`), and a trace says which resolution's
classifier answered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import About
from dynviz.models.multi_exit import ENSEMBLE_STAGE_PAPER, ENSEMBLE_TAUGHT_DATA, CalibratedExits, every_exit
from dynviz.models.resnet_cifar import BasicBlock
from dynviz.trace import ExitRecord
from dynviz.zoo import register_model

ABOUT = About(
    title="RANet-style resolution adaptive network with 3 exits (CIFAR-10)",
    family="spatial-wise · resolution adaptation, with early exits (survey §4.3)",
    summary=(
        "Three sub-networks look at the image at 8×8, 16×16 and 32×32 pixels, in that order, each with an exit. "
        "An image stops at the first exit whose calibrated confidence reaches its threshold, so easy images are "
        "classified from a thumbnail. A higher-resolution sub-network reuses the features of the one before it "
        "at every scale they share."
    ),
    papers=(
        "Yang et al., Resolution adaptive networks for efficient inference, CVPR 2020",
        ENSEMBLE_STAGE_PAPER,
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §4.3",
    ),
    license="Weights: trained by this project (same license as the code)",
    data=ENSEMBLE_TAUGHT_DATA,
)


@dataclass(frozen=True)
class RANetConfig:
    """The CIFAR layout used here; ``tiny()`` is a fast one for tests."""

    resolutions: tuple[int, ...] = (8, 16, 32)
    """Input side of each sub-network, lowest first; the first is also the coarsest feature scale."""
    widths: tuple[int, ...] = (64, 32, 16)
    """Channels at feature sides r_1, 2·r_1, 4·r_1 …"""
    blocks_per_stage: int = 2
    classes: int = 10

    @property
    def exits(self) -> int:
        return len(self.resolutions)

    def width(self, side: int) -> int:
        return self.widths[(side // self.resolutions[0]).bit_length() - 1]

    @classmethod
    def tiny(cls) -> RANetConfig:
        return cls(widths=(8, 4, 4), blocks_per_stage=1)


SubnetFeatures = dict[int, torch.Tensor]
"""A sub-network's features by the side of their map (one per stage)."""


class Stage(nn.Module):
    """One scale of a sub-network: an entry (the stem, or a strided block), the previous sub-network's
    features at this scale added through a 1×1 convolution, then residual blocks."""

    def __init__(self, entry: nn.Module, width: int, width_reused: int | None, blocks: int):
        super().__init__()
        self.entry = entry
        self.reuse = (
            nn.Sequential(nn.Conv2d(width_reused, width, 1, bias=False), nn.BatchNorm2d(width))
            if width_reused
            else None
        )
        self.blocks = nn.Sequential(*(BasicBlock(width, width, 1) for _ in range(blocks)))

    def forward(self, h: torch.Tensor, reused: torch.Tensor | None) -> torch.Tensor:
        h = self.entry(h)
        if self.reuse is not None:
            h = h + self.reuse(F.interpolate(reused, size=h.shape[-2:], mode="nearest"))
        return self.blocks(h)


class SubNetwork(nn.Module):
    """The sub-network for input side ``resolution``: stages from that side down to the coarsest."""

    def __init__(self, config: RANetConfig, index: int):
        super().__init__()
        self.resolution = config.resolutions[index]
        previous = config.resolutions[index - 1] if index else None
        self.sides = [self.resolution >> i for i in range((self.resolution // config.resolutions[0]).bit_length())]
        stages = []
        for j, side in enumerate(self.sides):
            width = config.width(side)
            if j == 0:
                entry = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            else:
                entry = BasicBlock(config.width(self.sides[j - 1]), width, 2)
            reused = config.width(min(side, previous)) if previous else None
            stages.append(Stage(entry, width, reused, config.blocks_per_stage - (j > 0)))
        self.stages = nn.ModuleList(stages)
        self.previous = previous

    def forward(self, state: tuple[torch.Tensor, SubnetFeatures]) -> tuple[torch.Tensor, SubnetFeatures]:
        image, reused = state
        h = F.avg_pool2d(image, image.shape[-1] // self.resolution) if image.shape[-1] > self.resolution else image
        features = {}
        for side, stage in zip(self.sides, self.stages):
            h = stage(h, reused[min(side, self.previous)] if self.previous else None)
            features[side] = h
        return image, features


class Classifier(nn.Module):
    def __init__(self, width: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(width, classes)

    def forward(self, coarsest: torch.Tensor) -> torch.Tensor:
        return self.linear(coarsest.mean((2, 3)))


class RANet(nn.Module):
    def __init__(self, config: RANetConfig = RANetConfig()):
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(SubNetwork(config, s) for s in range(config.exits))
        self.classifiers = nn.ModuleList(Classifier(config.widths[0], config.classes) for _ in range(config.exits))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def start(x: torch.Tensor) -> tuple[torch.Tensor, SubnetFeatures]:
        """The state before the first sub-network: the image, nothing to reuse."""
        return x, {}

    def exit_features(self, state: tuple[torch.Tensor, SubnetFeatures]) -> torch.Tensor:
        return state[1][self.config.resolutions[0]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return every_exit(self, x)


class RANetClassifier(CalibratedExits):
    """RANet behind the zoo's interface: calibrated exits, each at its resolution."""

    name = "ranet_cifar"
    about = ABOUT
    network = RANet
    config = RANetConfig

    def exit_part_name(self, k: int) -> str:
        side = self.net.config.resolutions[k]
        return f"exit {k + 1} ({side}×{side} px)"

    def exit_resolution(self, k: int) -> int:
        return self.net.config.resolutions[k]

    def explain_layer(self, k: int) -> nn.Module:
        return self.net.blocks[k].stages[-1]  # the coarsest scale of the sub-network that answered


register_model(RANetClassifier.name, emits=(ExitRecord,), tiny=dataclasses.asdict(RANetConfig.tiny()))(
    RANetClassifier.build
)

"""CIFAR ResNets (He et al., CVPR 2016, §4.2): the static baselines of the CIFAR models.

Three stages of n basic blocks at 16, 32 and 64 channels on 32², 16² and 8²
feature maps; depth 6n + 2 (ResNet-20, 32, 56 for n = 3, 5, 9, from the paper's
table; ResNet-8 and 14, n = 1 and 2, extend the static curve below ResNet-20,
where the dynamic models' cheaper operating points lie). A block computes

    y = relu(x' + BN(conv(relu(BN(conv(x)))))),

with the parameter-free shortcut of the paper's option A: x' = x, or x
subsampled by 2 and zero-padded to the new width where the stage changes.
Every input pays the same cost: the dynamic CIFAR models are measured against
them, trained with the same recipe and epochs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cards import About
from dynviz.cost import module_macs, stopwatch
from dynviz.fused import build_at_load, inference_path
from dynviz.inputs import InputImage
from dynviz.models.base import StaticClassifier, StaticOutput
from dynviz.models.cifar import CIFAR_SIZE, Cifar10Classifier, about_cifar, cifar_view
from dynviz.zoo import load_weights, register_model

DEPTHS = (8, 14, 20, 32, 56)
WIDTHS = (16, 32, 64)


def resnet_name(depth: int) -> str:
    """The zoo's name for the static ResNet of that depth, e.g. ``resnet32_cifar``."""
    return f"resnet{depth}_cifar"


class BasicBlock(nn.Module):
    def __init__(self, width_in: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.channels_in = width_in
        self.extra_channels = width - width_in
        self.stride = stride
        self.identity_shortcut = stride == 1 and not self.extra_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity_shortcut:
            return x
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.shortcut(x) + self.bn2(self.conv2(y)))


class ResNetCifar(nn.Module):
    def __init__(self, depth: int, classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2, not {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]), nn.ReLU())
        blocks, width_in = [], WIDTHS[0]
        for stage, width in enumerate(WIDTHS):
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(width_in, width, 2 if stage > 0 and i == 0 else 1))
                width_in = width
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(WIDTHS[-1], classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output."""
        return self.classifier(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.blocks(self.stem(x)))


def block_layers(net: ResNetCifar, kind: type) -> dict[nn.Module, str]:
    """The layers of ``kind`` inside ``net``'s residual blocks (the ones a dynamic variant swapped in), each
    with its name, e.g. "block 8.conv1"."""
    return {
        layer: f"block {b + 1}.{name}"
        for b, block in enumerate(net.blocks)
        for name, layer in block.named_children()
        if isinstance(layer, kind)
    }


@functools.cache
def resnet_flops() -> dict[str, int]:
    """The static CIFAR ResNets' costs ("ResNet-20" → multiply–accumulates): every CIFAR model's yardstick."""
    return {f"ResNet-{depth}": module_macs(ResNetCifar(depth), (1, 3, CIFAR_SIZE, CIFAR_SIZE)) for depth in DEPTHS}


def about(depth: int) -> About:
    return about_cifar(
        f"ResNet-{depth} for CIFAR-10 (static)",
        "static reference network",
        f"The {depth}-layer CIFAR ResNet of He et al.: every image pays the same cost. It is trained here with "
        "the same recipe and epochs as the dynamic CIFAR models, so that the trade-off explorer compares like with like.",
        ("He et al., Deep residual learning for image recognition, CVPR 2016, §4.2",),
    )


class StaticResNetCifar(Cifar10Classifier, StaticClassifier, nn.Module):
    def __init__(self, depth: int, net: ResNetCifar | None = None):
        super().__init__()
        self.name = resnet_name(depth)
        self.about = about(depth)
        self.net = self.served(net or ResNetCifar(depth))
        self.flops = module_macs(self.net, (1, 3, CIFAR_SIZE, CIFAR_SIZE))  # measured before any request
        build_at_load(self.net, (1, 3, CIFAR_SIZE, CIFAR_SIZE))

    @classmethod
    def build(cls, registered_depth: int, /, pretrained: bool = True, **config) -> StaticResNetCifar:
        """``config``: ResNetCifar's (e.g. a shallower ``depth`` for a tiny untrained one)."""
        depth = config.pop("depth", registered_depth)
        net = ResNetCifar(depth, **config)
        if pretrained:
            net.load_state_dict(load_weights(resnet_name(depth))[0])
        return cls(depth, net)

    def run(self, image: InputImage, settings: dict[str, float]) -> StaticOutput:
        view = cifar_view(image)
        x = view.tensor()
        path = inference_path(self.net, x.shape)
        with stopwatch() as watch:
            logits = path(x)[0]
        return StaticOutput(logits, self.flops, watch.ms, self.name, (view.note,) if view.note else ())


for _depth in DEPTHS:
    register_model(resnet_name(_depth), tiny={"depth": 8})(functools.partial(StaticResNetCifar.build, _depth))

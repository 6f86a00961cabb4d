"""Conditionally parameterised convolutions: CondConv (Yang et al., NeurIPS 2019).

Survey §3.3.1 (dynamic parameters: weight adjustment by soft attention over kernels).

A CondConv layer holds K expert kernels W_1 … W_K and mixes them into one kernel
for every input, with routing weights computed from that input:

    r(x) = σ(FC(GAP(x))),    y = (Σ_k r_k(x) · W_k) ∗ x.

Mixing the kernels first costs K multiply–adds per kernel weight, far less than
K convolutions: the layer has K times the capacity for a few percent more
compute (the paper's argument). The routing weights are sigmoids, not a softmax:
experts are not forced to compete, several can be fully on.

Here every 3×3 convolution in the residual blocks of a CIFAR ResNet-20 is a
CondConv layer with :data:`EXPERTS` experts; the stem stays static. A batch runs
as one grouped convolution, one group per image, each with its own kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cost import output_sides
from dynviz.explain import ExplainTarget, output_of
from dynviz.inputs import InputImage
from dynviz.models.base import decided
from dynviz.models.cifar import CIFAR_SIZE, DecidingNetwork, about_cifar, cifar_view
from dynviz.models.resnet_cifar import ResNetCifar, block_layers
from dynviz.trace import Box, RoutingRecord, rounded
from dynviz.zoo import register_model

EXPERTS = 8
"""K: the paper's choice for its mobile networks; with 4 the layer gained 0.3 points over the static one."""
DEPTH = 20


class CondConv2d(nn.Module):
    """K expert kernels mixed per input by ``routing`` (pooled input → one sigmoid per expert)."""

    channels_last = False
    """The batch regrouped by image is a copy out of channels-last: the training loop keeps these networks in
    the standard layout (:func:`dynviz.train.loop.training_layout`)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int = 1, experts: int = EXPERTS, kernel: int = 3):
        super().__init__()
        self.stride, self.padding = stride, kernel // 2
        self.kernel_shape = (channels_out, channels_in, kernel, kernel)
        experts_kernels = torch.empty(experts, *self.kernel_shape)
        for expert in experts_kernels:
            nn.init.kaiming_normal_(expert, mode="fan_out", nonlinearity="relu")
        self.weight = nn.Parameter(experts_kernels.flatten(1))
        """[K, every weight of one kernel]: flat, so that mixing is one matrix product."""
        self.routing = nn.Linear(channels_in, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = x.shape
        weights = self.routing(x.mean((2, 3))).sigmoid()
        decided(self, weights)
        out_channels, *kernel = self.kernel_shape
        kernels = (weights @ self.weight).view(n * out_channels, *kernel)
        y = F.conv2d(x.reshape(1, n * channels, height, width), kernels, None, self.stride, self.padding, groups=n)
        return y.view(n, out_channels, *y.shape[-2:])


def condconv_resnet(depth: int = DEPTH, experts: int = EXPERTS) -> ResNetCifar:
    """The CIFAR ResNet with every convolution of its residual blocks a CondConv layer."""
    net = ResNetCifar(depth)
    for block in net.blocks:
        block.conv1 = CondConv2d(block.conv1.in_channels, block.conv1.out_channels, block.stride, experts)
        block.conv2 = CondConv2d(block.conv2.in_channels, block.conv2.out_channels, 1, experts)
    return net


ABOUT = about_cifar(
    "CondConv ResNet-20 for CIFAR-10",
    "sample-wise dynamic parameters: kernels mixed per input (survey §3.3.1)",
    f"Every 3×3 convolution in the residual blocks of ResNet-20 holds {EXPERTS} expert kernels and mixes them "
    "into one kernel for each image, with routing weights computed from that image: eight times the capacity for "
    "a few percent more compute. The Dynamic parameters page shows the routing weights of your photo, layer by "
    "layer, and how they differ by class.",
    ("Yang et al., CondConv: conditionally parameterized convolutions for efficient inference, NeurIPS 2019",),
)


class CondConvResNetCifar(DecidingNetwork):
    name = "condconv_resnet_cifar"
    about = ABOUT
    default_point = "routed"
    baselines = ("resnet20_cifar",)
    network = staticmethod(condconv_resnet)

    def __init__(self, net: ResNetCifar):
        super().__init__(net, ResNetCifar(2 * len(net.blocks) + 2))
        names = block_layers(self.net, CondConv2d)
        with torch.inference_mode():
            sides = output_sides(list(names), lambda: self.net(torch.zeros(1, 3, CIFAR_SIZE, CIFAR_SIZE)))
        self.layers = {m: (name, side) for (m, name), side in zip(names.items(), sides)}
        """Each CondConv layer's name and the side of its output map."""
        routing = sum(self.part_flops[f"{name}.routing"] for name in self.named(CondConv2d))
        mixing = sum(m.weight.numel() for m in self.layers)  # one multiply–add per expert weight
        self.breakdown = {
            "convolutions and classifier": self.flops - routing - mixing,
            "kernel mixing": mixing,
            "routing": routing,
        }

    def records(self, decisions: list[tuple[nn.Module, torch.Tensor]], box: Box) -> tuple[RoutingRecord, ...]:
        return tuple(
            RoutingRecord(i, *self.layers[module], rounded(weights[0].tolist(), 4))
            for i, (module, weights) in enumerate(decisions)
        )

    def explain_routing(self, image: InputImage, layer: int, expert: int) -> ExplainTarget:
        """What captum needs to attribute routing layer ``layer``'s logit of ``expert``: which pixels raised this
        expert's weight for this image."""
        view = cifar_view(image)
        routing = list(self.layers)[layer].routing

        def routing_logits(x: torch.Tensor) -> torch.Tensor:
            return output_of(routing, lambda: self.net(x))

        return ExplainTarget(self.net, routing_logits, None, view.tensor(), expert, view.box)


register_model(CondConvResNetCifar.name, emits=(RoutingRecord,), tiny={"depth": 8, "experts": 2})(
    CondConvResNetCifar.build
)

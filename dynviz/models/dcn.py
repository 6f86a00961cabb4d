"""Modulated deformable convolution: DCNv2 (Zhu et al., CVPR 2019), after DCN (Dai et al., ICCV 2017).

Survey §3.3.2 (dynamic parameters: adjusting the sampling points of convolution).

A 3×3 convolution reads its input on a fixed grid R = {(−1, −1), …, (1, 1)} of
taps p_k around each output position p₀:

    y(p₀) = Σ_k w_k · x(p₀ + p_k).

A deformable convolution moves every tap by a learned offset Δp_k, and DCNv2
weighs every sample by a learned modulation Δm_k ∈ [0, 1]:

    y(p₀) = Σ_k w_k · x(p₀ + p_k + Δp_k) · Δm_k,

with x(·) read by bilinear interpolation at fractional positions (zero outside
the map). Offsets and modulations depend on the input: a 3×3 convolution on the
same input predicts them, 2K offset channels (Δy, Δx per tap, in the order of
torchvision's ``deform_conv2d``) and K modulation logits (Δm = σ), initialised
at zero (Δp = 0, Δm = ½) so that training starts from the regular grid. Every
output position thus decides where to look; stacked layers compound it (the
paper's Fig. 1: three layers, up to 9³ = 729 sampling points per position).

Here the four 3×3 convolutions of the last two blocks of a CIFAR ResNet-20
(8×8 maps, the stage where objects span the grid; the strided first block of
the stage stays regular) are deformable. As DCN and DCNv2 add deformable
layers to a trained backbone and fine-tune it, the bundled network is the
trained ResNet-20 made deformable (:func:`make_deformable`, starting as that
network) and fine-tuned. The sampling is pure torch:
``grid_sample`` gathers the K samples of every position, one matrix product
applies the kernel. Cost: the offset predictors, the kernel and
:data:`dynviz.cost.BILINEAR_MACS` per channel per sample, the same for every
input; the twin is the static ResNet-20 of the same recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.models.base import decided
from dynviz.models.cifar import DecidingNetwork, about_cifar, grid_to_input
from dynviz.models.resnet_cifar import ResNetCifar, block_layers
from dynviz.trace import Box, SamplingRecord, rounded
from dynviz.zoo import register_model

DEPTH = 20
DEFORMABLE_BLOCKS = 2
"""The last blocks of the network whose convolutions are deformable."""
OFFSET_LR_SCALE = 0.1
"""The offset predictors learn at a tenth of the network's rate, as DCN and DCNv2 train them (their configs'
``lr_mult``): a large early step on an offset moves every sample of a position at once."""


def sampling_points(offsets: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Where each tap of each output position reads its input: p₀ + p_k + Δp_k as (x, y) [N, K, H', W', 2], in the
    input map's index coordinates. ``offsets`` [N, 2K, H', W'] holds (Δy, Δx) per tap."""
    n, _, rows, columns = offsets.shape
    taps = torch.arange(kernel, dtype=offsets.dtype, device=offsets.device) - padding
    tap_y, tap_x = torch.meshgrid(taps, taps, indexing="ij")
    centre_y = torch.arange(rows, dtype=offsets.dtype, device=offsets.device) * stride
    centre_x = torch.arange(columns, dtype=offsets.dtype, device=offsets.device) * stride
    x = centre_x.view(1, 1, 1, -1) + tap_x.reshape(1, -1, 1, 1) + offsets[:, 1::2]
    y = centre_y.view(1, 1, -1, 1) + tap_y.reshape(1, -1, 1, 1) + offsets[:, 0::2]
    return torch.stack((x, y), -1)


def convolve_at(x: torch.Tensor, points: torch.Tensor, modulation: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Σ_k w_k · x(p_k) · Δm_k at every output position: ``points`` from :func:`sampling_points`, ``modulation``
    [N, K, H', W'], ``weight`` [C_out, C, k, k]. One ``grid_sample`` gathers every sample, one product applies
    the kernel."""
    n, channels, height, width = x.shape
    taps, rows, columns = points.shape[1:4]
    # grid_sample with align_corners=True reads index i at −1 + 2i / (side − 1); outside the map it reads 0.
    scale = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], dtype=x.dtype, device=x.device)
    grid = (points * scale - 1).view(n, taps * rows, columns, 2)
    samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    samples = samples.view(n, channels, taps, rows, columns) * modulation.unsqueeze(1)
    return torch.einsum("nckhw,ock->nohw", samples, weight.reshape(weight.shape[0], channels, taps))


def deform_conv2d(
    x: torch.Tensor,
    offsets: torch.Tensor,
    modulation: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 1,
    padding: int = 1,
) -> torch.Tensor:
    """y(p₀) = Σ_k w_k · x(p₀ + p_k + Δp_k) · Δm_k: ``offsets`` [N, 2K, H', W'] (Δy, Δx per tap). With zero
    offsets and unit modulation it is ``F.conv2d(x, weight, stride=stride, padding=padding)``."""
    return convolve_at(x, sampling_points(offsets, weight.shape[-1], stride, padding), modulation, weight)


@dataclass(frozen=True)
class Sampling:
    """What one deformable layer decided for one input: its sampling points and modulation."""

    points: torch.Tensor
    """[K, H', W', 2] (x, y) in its input map's index coordinates."""
    modulation: torch.Tensor
    """[K, H', W']"""
    input_side: int


class DeformableConv2d(nn.Conv2d):
    """A k×k convolution (its ``weight`` as in ``nn.Conv2d``) whose taps move and weigh themselves: ``offset``
    predicts 2K offsets and K modulation logits per output position from the same input."""

    channels_last = False
    """Sampling at points copies out of channels-last: the training loop keeps these networks in the standard
    layout (:func:`dynviz.train.loop.training_layout`)."""

    def __init__(self, channels_in: int, channels_out: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__(channels_in, channels_out, kernel, stride, padding, bias=False)
        self.offset = nn.Conv2d(channels_in, 3 * kernel * kernel, kernel, stride, padding)
        self.offset.lr_scale = OFFSET_LR_SCALE  # read by the training loop's parameter groups
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = self.kernel_size[0] * self.kernel_size[1]
        predicted = self.offset(x)
        offsets, modulation = predicted[:, : 2 * taps], predicted[:, 2 * taps :].sigmoid()
        points = sampling_points(offsets, self.kernel_size[0], self.stride[0], self.padding[0])
        decided(self, Sampling(points[0], modulation[0], x.shape[-1]))
        return convolve_at(x, points, modulation, self.weight)


def make_deformable(net: ResNetCifar, deformable_blocks: int = DEFORMABLE_BLOCKS) -> ResNetCifar:
    """``net`` with both convolutions of its last ``deformable_blocks`` blocks deformable, each computing what the
    convolution it replaces computed: zero offsets, and the kernel doubled against the modulation's initial ½."""
    for block in net.blocks[len(net.blocks) - deformable_blocks :]:
        if block.stride != 1:
            raise ValueError("a strided block stays regular: ask for fewer deformable blocks")
        for name in ("conv1", "conv2"):
            conv = getattr(block, name)
            deformable = DeformableConv2d(conv.in_channels, conv.out_channels)
            with torch.no_grad():
                deformable.weight.copy_(2 * conv.weight)
            setattr(block, name, deformable)
    return net


def deformable_resnet(depth: int = DEPTH, deformable_blocks: int = DEFORMABLE_BLOCKS) -> ResNetCifar:
    """A fresh CIFAR ResNet made deformable (:func:`make_deformable`); the recipe makes the trained twin
    deformable instead."""
    return make_deformable(ResNetCifar(depth), deformable_blocks)


ABOUT = about_cifar(
    "Deformable ResNet-20 for CIFAR-10 (DCNv2)",
    "sample-wise dynamic parameters: deformable convolution (survey §3.3.2)",
    "The four 3×3 convolutions of the last two blocks of ResNet-20 read their input at points that every "
    "output position chooses for this image: learned offsets move each of the nine taps, and a learned "
    "modulation weighs each sample. The Deformable page draws where they moved on your photo.",
    (
        "Zhu et al., Deformable ConvNets v2: more deformable, better results, CVPR 2019",
        "Dai et al., Deformable convolutional networks, ICCV 2017",
    ),
)


class DeformableResNetCifar(DecidingNetwork):
    """The zoo's DCNv2 model: one operating point (the offsets are the input's), measured against its twin."""

    name = "dcn_resnet_cifar"
    about = ABOUT
    default_point = "deformable"
    baselines = ("resnet20_cifar",)
    network = staticmethod(deformable_resnet)

    def __init__(self, net: ResNetCifar):
        super().__init__(net, ResNetCifar(2 * len(net.blocks) + 2))
        self.breakdown = self.offset_breakdown(DeformableConv2d, "regular layers", "deformable kernels and sampling")
        self.layer_names = block_layers(self.net, DeformableConv2d)

    def record(self, layer: int, module: nn.Module, sampling: Sampling, box: Box) -> SamplingRecord:
        taps, side = sampling.modulation.shape[0], sampling.modulation.shape[-1]
        kernel = module.kernel_size[0]
        regular = sampling_points(torch.zeros(1, 2 * taps, side, side), kernel, module.stride[0], module.padding[0])[0]

        def in_pixels(points: torch.Tensor) -> tuple[float, ...]:  # [K, H', W', 2] → position by position, tap by tap
            pixels = grid_to_input(points.permute(1, 2, 0, 3).float(), sampling.input_side, box)
            return rounded(pixels.flatten().tolist(), 2)

        return SamplingRecord(
            layer=layer,
            name=self.layer_names[module],
            resolution=side,
            box=box,
            kernel=kernel,
            grid=in_pixels(regular),
            points=in_pixels(sampling.points),
            modulation=rounded(sampling.modulation.permute(1, 2, 0).flatten().tolist(), 3),
        )

    def records(self, decisions: list[tuple[nn.Module, Sampling]], box: Box) -> tuple[SamplingRecord, ...]:
        return tuple(self.record(i, module, sampling, box) for i, (module, sampling) in enumerate(decisions))


register_model(DeformableResNetCifar.name, emits=(SamplingRecord,), tiny={"depth": 14, "deformable_blocks": 1})(
    DeformableResNetCifar.build
)

"""Channel skipping: dynamic channel selection by per-block gates (Herrmann et al., Channel selection using
Gumbel softmax, ECCV 2020), in the manner of FBS (Gao et al., ICLR 2019) without its saliency boosting.

Survey §3.2.2 (sample-wise dynamic width: channel skipping). Not to be confused with "Channel gating"
(Hua et al., NeurIPS 2019), which gates each output position from a partial sum over a base group of
channels: the decisions here are per channel and per input, from the pooled block input.

Inside a residual block x ↦ x + F(x), the convolution that opens the block
produces C channels that the next convolution reads. A gate looks at the
block's input and switches each of those channels on or off for this input:

    h = g(x) ⊙ ReLU(BN(W₁ ∗ x)),   F(x) = BN(W₂ ∗ h),   g(x) ∈ {0, 1}^C.

A channel that is off costs nothing: W₁ computes only the rows of the channels
that are on, W₂ reads only their columns. With k of C channels on, both
convolutions cost k/C of their dense price. The gates are those of
:mod:`dynviz.models.gates` (hard straight-through decisions in training, a target rate
of active channels per gate); at inference a channel runs when p ≥ θ.

In an MBConv block (EfficientNet) the gated channels are the expansion's: the
1×1 expansion, the depthwise convolution and the 1×1 projection each cost k/C
of their dense price (FBS's "channel saliency" on the expanded features). A
channel that is off holds its mean μ over training images rather than 0
(mean replacement, Evci et al. 2018): the depthwise convolution's BatchNorm
shift keeps its outputs far from 0, and a network whose filters stay as
trained cannot lose that offset. As the projection is 1×1, the means of the
channels that are off fold into its bias, b + W₂[:, off] μ[off], at the price
of one matrix–vector product. Such gates need no training of the network: each
learns to predict which channels matter for this input, the channels whose
contribution

    s_c(x) = mean over positions |h_c − μ_c| · ‖W₂[:, c]‖

is at least :data:`SALIENT_SHARE` of the block's mean contribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz import native
from dynviz.cards import About
from dynviz.cost import stopwatch
from dynviz.fused import folded, inference_path, padding_of
from dynviz.inputs import InputImage
from dynviz.models.base import Memo
from dynviz.models.cifar import CIFAR_LICENSE
from dynviz.models.efficientnet_lite import (
    MBConv,
)
from dynviz.models.gates import (
    CIFAR_DATA,
    DEFAULT_THRESHOLD,
    GATE_WIDTH,
    LITE0_CAVEATS,
    LITE0_LICENSE,
    LITE0_PHOTOS_DATA,
    Gate,
    GatedModel,
    GatedOutput,
    Lite0Backbone,
    ResNet32Backbone,
    decisions,
    identity,
    unit_input,
)
from dynviz.models.resnet_cifar import BasicBlock
from dynviz.trace import ChannelRecord, Trace, rounded
from dynviz.zoo import register_model

TARGET_RATE = 0.45
"""Each gate's share of active channels in training (CIFAR)."""
MBCONV_GATE_WIDTH = 64
"""An MBConv block's gate predicts up to 1152 expanded channels: wider than a ResNet block's (16 units)."""
LITE_TARGET_RATE = 0.65
"""Lite0's gates: the share of expanded channels on, in training. The gated parts are 89% of Lite0's FLOPs, so
this is about 0.7× of them."""
SALIENT_SHARE = 0.3
"""A channel matters for an input when its contribution is at least this share of its block's mean (Lite0)."""

SCALED_PARTS = {BasicBlock: ("conv1", "conv2"), MBConv: ("expand", "depthwise", "project")}
"""The parts of a block whose cost scales with its active channels."""


def gated_channels(block: nn.Module) -> int:
    """How many channels a gate switches inside ``block`` (0: nothing to gate, an MBConv without expansion)."""
    if isinstance(block, BasicBlock):
        return block.conv1.out_channels
    return 0 if isinstance(block.expand, nn.Identity) else block.spec.expanded


def masked_block(block: nn.Module, x: torch.Tensor, g: torch.Tensor, fill: torch.Tensor | None) -> torch.Tensor:
    """The block with its gated channels multiplied by ``g`` [N, C], those that are off holding ``fill``
    (the dense path of training)."""
    g = g[:, :, None, None]
    if isinstance(block, BasicBlock):
        h = F.relu(block.bn1(block.conv1(x))) * g
        return F.relu(block.shortcut(x) + block.bn2(block.conv2(h)))
    y = block.project(expanded_features(block, x) * g + fill[:, None, None] * (1 - g))
    return x + y if block.identity_shortcut else y


def expanded_features(block: MBConv, x: torch.Tensor) -> torch.Tensor:
    """What an MBConv block's projection reads: its gated channels, all on."""
    return block.depthwise(block.expand(x))


def block_inputs(backbone: nn.Module, x: torch.Tensor) -> Iterator[tuple[int, nn.Module, torch.Tensor]]:
    """Each block of ``backbone`` with its input, as the static network (every channel on) runs ``x``."""
    x = backbone.stem(x)
    for i, block in enumerate(backbone.blocks):
        yield i, block, x
        x = block(x)


def contributions(block: MBConv, x: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """s_c(x) = mean |h_c − μ_c| · ‖W₂[:, c]‖ [N, C]: how far switching channel c off moves the block's output."""
    projection, _ = folded(block.project[0], block.project[1])
    deviation = (expanded_features(block, x) - fill[:, None, None]).abs().mean((2, 3))
    return deviation * projection.flatten(1).norm(dim=0)


def salient(contribution: torch.Tensor) -> torch.Tensor:
    """The channels that matter for each input (0/1 [N, C]): what a Lite0 channel gate learns to predict."""
    return (contribution >= SALIENT_SHARE * contribution.mean(1, keepdim=True)).float()


@dataclass(frozen=True)
class SlicedConv:
    """One convolution of a gated block at inference, its BatchNorm folded in, as the executed path
    slices it: the rows of the active output channels, or the columns of the active input channels."""

    weight: torch.Tensor
    """[out, kh, kw, in]: the channels-last order, in which a slice of either dimension is a channels-last
    weight without a copy (a convolution on channels-last inputs would copy a contiguous one at every call)."""
    bias: torch.Tensor
    stride: int
    padding: int
    same: Callable[[torch.Tensor], torch.Tensor] | None
    """TF "same" padding (Lite) where it is asymmetric, applied to the input; None: ``padding`` is the
    convolution's own (:func:`dynviz.fused.padding_of`)."""
    activation: Callable[[torch.Tensor], torch.Tensor]
    by_input: torch.Tensor | None
    """A 1×1 convolution's weight as [in, out], in which its columns are rows; None for any other. A 1×1
    convolution runs as one matrix product over the pixels: oneDNN would build a new convolution for every
    number of active channels, that is for nearly every input (79 ms per photo for Lite0's 50 ms)."""
    fill: torch.Tensor | None
    """What an input channel that is off holds (1×1 convolutions only): its columns then add W[:, c] μ_c to
    the bias. None: it holds 0."""

    @classmethod
    def of(
        cls, conv: nn.Conv2d, norm: nn.BatchNorm2d, activation: Callable = identity, fill: torch.Tensor | None = None
    ) -> SlicedConv:
        weight, bias = folded(conv, norm)
        same, padding = padding_of(conv)
        channels_last = weight.permute(0, 2, 3, 1).contiguous()
        # A 1×1 convolution with stride 1 pads nothing, "same" or not.
        pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
        by_input = weight.flatten(1).t().contiguous() if pointwise else None
        if fill is not None:  # every channel off: b + W μ; a channel on takes its W[:, c] μ_c back out
            if by_input is None:
                raise ValueError("a fill folds into the bias of a 1×1 convolution only")
            bias = torch.addmv(bias, weight.flatten(1), fill)
        return cls(channels_last, bias, conv.stride[0], padding, same, activation, by_input, fill)

    def convolve(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> torch.Tensor:
        x = self.same(x) if self.same else x
        return self.activation(F.conv2d(x, weight, bias, self.stride, self.padding, 1, groups))

    # index_select, not weight[on]: at batch 1 the slicing is overhead, and Python indexing costs 2–4× more.
    def rows(self, x: torch.Tensor, on: torch.Tensor, depthwise: bool = False) -> torch.Tensor:
        """Only the output channels ``on`` (a depthwise convolution reads only those inputs)."""
        weight, bias = self.weight.index_select(0, on), self.bias.index_select(0, on)
        if self.by_input is not None:
            return self.activation(pixel_product(x, weight.view(len(on), -1).t(), bias))
        return self.convolve(x, weight.permute(0, 3, 1, 2), bias, len(on) if depthwise else 1)

    def columns(self, h: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Reading only the input channels ``on``, the others holding their fill."""
        if self.by_input is None:
            return self.convolve(h, self.weight.index_select(3, on).permute(0, 3, 1, 2), self.bias)
        weight = self.by_input.index_select(0, on)
        bias = self.bias
        if self.fill is not None:
            bias = torch.addmv(bias, weight.t(), self.fill.index_select(0, on), alpha=-1)
        return self.activation(pixel_product(h, weight, bias))

    def fill_flops(self, active: int) -> int:
        """What folding the fill of ``active`` channels into the bias costs."""
        return 0 if self.fill is None else len(self.weight) * active

    def constant(self, side: int) -> torch.Tensor:
        """The output when no input channel is on: the folded bias at every position, activated."""
        return self.activation(self.bias[None, :, None, None].expand(1, -1, side, side))


def pixel_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution of a channels-last x [1, C, H, W] with ``weight`` [C, out]: one matrix product."""
    _, _, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(height * width, -1)
    return torch.addmm(bias, pixels, weight).view(1, height, width, -1).permute(0, 3, 1, 2)


def sliced_parts(block: nn.Module, fill: torch.Tensor | None) -> tuple[SlicedConv, ...]:
    if isinstance(block, BasicBlock):
        return SlicedConv.of(block.conv1, block.bn1, F.relu), SlicedConv.of(block.conv2, block.bn2)
    return (
        SlicedConv.of(block.expand[0], block.expand[1], F.relu6),
        SlicedConv.of(block.depthwise[0], block.depthwise[1], F.relu6),
        SlicedConv.of(block.project[0], block.project[1], fill=fill),
    )


def sliced_block(
    block: nn.Module, parts: tuple[SlicedConv, ...], x: torch.Tensor, on: torch.Tensor, side: int
) -> torch.Tensor:
    """The block computing only its active channels ``on`` (batch of one): what skipping really costs."""
    *opening, closing = parts
    if len(on):
        h = opening[0].rows(x, on)
        if len(opening) > 1:  # MBConv: the depthwise convolution on the active expanded channels
            h = opening[1].rows(h, on, depthwise=True)
        inner = closing.columns(h, on)
    else:
        inner = closing.constant(side)
    if isinstance(block, BasicBlock):
        return F.relu(block.shortcut(x) + inner)
    return x + inner if block.identity_shortcut else inner


class ChannelGatedNetwork(nn.Module):
    """A backbone (``stem``, ``blocks``, ``classify``) whose blocks each gate the channels inside them."""

    def __init__(self, backbone: nn.Module, noise: bool = True):
        super().__init__()
        self.backbone = backbone
        self.noise = noise
        """Gumbel noise on the decisions in training; without it they are made as at inference."""
        self.units_shape_features = True
        """Whether the units' losses reach the backbone (:func:`~dynviz.models.gates.unit_input`)."""
        self.gates = nn.ModuleDict(
            {
                str(i): Gate(
                    b.channels_in, gated_channels(b), GATE_WIDTH if isinstance(b, BasicBlock) else MBCONV_GATE_WIDTH
                )
                for i, b in enumerate(backbone.blocks)
                if gated_channels(b)
            }
        )
        self.fills = nn.Module()
        """What the channels of each gated MBConv block hold when off: their means, set by training."""
        for i, b in enumerate(backbone.blocks):
            if isinstance(b, MBConv) and gated_channels(b):
                self.fills.register_buffer(str(i), torch.zeros(gated_channels(b)))

    def fill(self, block: int) -> torch.Tensor | None:
        return getattr(self.fills, str(block), None)

    def set_fills_to_means(self, batches: Iterable[torch.Tensor]) -> None:
        """Each gated MBConv block's fill: its expanded channels' means over ``batches``, as the backbone with
        every channel on runs them."""
        sums, images = {}, 0
        for x in batches:
            images += len(x)
            for i, block, block_input in block_inputs(self.backbone, x):
                if self.fill(i) is not None:
                    sums[i] = sums.get(i, 0) + expanded_features(block, block_input).mean((2, 3)).sum(0)
        for i, total in sums.items():
            self.fill(i).copy_(total / images)

    def forward(self, x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> GatedOutput:
        """The masked dense path (training, batches): channels that are off hold their fill (0 or μ)."""
        x = self.backbone.stem(x)
        gates = []
        for i, block in enumerate(self.backbone.blocks):
            if str(i) in self.gates:
                g = decisions(
                    self.gates[str(i)](unit_input(x, self.units_shape_features)), self.training, threshold, self.noise
                )
                gates.append(g)
                x = masked_block(block, x, g, self.fill(i))
            else:
                x = block(x)
        return GatedOutput(self.backbone.classify(x), gates)


@dataclass(frozen=True)
class GatedLayer:
    """A block's gated channels as built: the dense price of the parts they scale."""

    block: int
    name: str
    resolution: int
    channels: int
    flops: int
    """The scaled parts' cost with every channel on, and folding their fills; k channels cost k/C of it."""
    parts: tuple[SlicedConv, ...]
    """The convolutions the executed path slices."""
    kernels: tuple[torch.Tensor, ...] | None
    """A basic block's folded convolutions as its C++ operator reads them (:mod:`dynviz.native`): conv1's
    weight [C_mid, C_in, 3, 3] and bias, conv2's; None where PyTorch's operations run the block."""


def scaled_flops(block: nn.Module, index: int, module_flops: dict[str, int]) -> int:
    """The dense price of the parts of block ``index`` whose cost scales with its active channels."""
    return sum(module_flops[f"backbone.blocks.{index}.{part}"] for part in SCALED_PARTS[type(block)])


class ChannelSkipping(GatedModel, nn.Module):
    """A zoo model around a :class:`ChannelGatedNetwork`: the threshold knob and traces of the channels that
    ran. Subclasses give ``name``, ``about`` and a backbone mixin."""

    unit = "channel"
    network = ChannelGatedNetwork

    def __init__(self, net: ChannelGatedNetwork | None = None):
        super().__init__(net)
        self.layers = []
        dense = 0
        for i in map(int, self.net.gates):
            block = self.net.backbone.blocks[i]
            parts, channels = sliced_parts(block, self.net.fill(i)), gated_channels(block)
            flops = scaled_flops(block, i, self.module_flops)
            dense += flops
            flops += parts[-1].fill_flops(channels)
            kernels = None
            if isinstance(block, BasicBlock):  # in the layout the operator reads: it would copy them at every call
                kernels = tuple(
                    t.contiguous() for t in (*folded(block.conv1, block.bn1), *folded(block.conv2, block.bn2))
                )
            self.layers.append(GatedLayer(i, f"block {i + 1}", self.sides[i], channels, flops, parts, kernels))
        self.fixed_flops = self.module_flops[""] - dense
        """Stem, head, ungated blocks and every gate: paid whatever the gates decide."""

    def gated_block(
        self, block: nn.Module, layer: GatedLayer, x: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``layer.block`` on a batch of one, computing only the channels its gate switches on: its output
        and the gate's probabilities. A basic block runs as one C++ operator where it is built: oneDNN computes
        16 output channels at once, so a convolution with a few of CIFAR's 16–64 channels on costs nearly what
        the dense one does, and as PyTorch operations the block is a dozen calls of a few µs each."""
        gate = self.net.gates[str(layer.block)]
        if layer.kernels is not None and native.ready() and not torch.is_grad_enabled():
            return torch.ops.dynviz.channel_gated_basic_block(x, *gate.weights, threshold, *layer.kernels, block.stride)
        probabilities = gate.logits_of_one(x).sigmoid()
        on = (probabilities >= threshold).nonzero().flatten()
        return sliced_block(block, layer.parts, x, on, layer.resolution), probabilities

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        threshold = self.threshold(settings)
        seen = self.network_input(image)
        probabilities = {}
        layers = {layer.block: layer for layer in self.layers}
        backbone = inference_path(self.net.backbone, seen.tensor.shape)  # the ungated parts
        with stopwatch() as watch:
            x = backbone.stem(seen.tensor)
            for i, block in enumerate(self.net.backbone.blocks):
                if i not in layers:
                    x = backbone.blocks[i](x)
                    continue
                x, probabilities[i] = self.gated_block(block, layers[i], x, threshold)
            logits = backbone.classify(x)[0]
        active = {i: p >= threshold for i, p in probabilities.items()}  # as the blocks decided: for the trace
        records = tuple(
            ChannelRecord(
                layer.block,
                layer.name,
                layer.resolution,
                rounded(probabilities[layer.block].tolist(), 4),
                tuple(active[layer.block].tolist()),
                layer.flops * int(active[layer.block].sum()) // layer.channels,
                layer.flops,
            )
            for layer in self.layers
        )
        spent = ("channels computed", sum(r.flops for r in records))
        return self.gated_trace(image, seen, logits, records, spent, watch.ms, threshold)


ABOUT = About(
    title="ResNet-32 with dynamic channel selection (per-block gates), CIFAR-10",
    family="sample-wise dynamic width: channel skipping (survey §3.2.2)",
    summary=(
        "In every residual block a small gate (pooling, then a 16-unit MLP) reads the block's input and switches "
        "each of the channels between the block's two convolutions on or off. Channels that are off are not "
        "computed by the first convolution nor read by the second. Trained with hard decisions sampled with "
        f"Gumbel noise (straight-through gradients) and a target of {TARGET_RATE:.0%} active channels per gate, "
        "fine-tuned from resnet32_cifar."
    ),
    papers=(
        "Herrmann et al., Channel selection using Gumbel softmax, ECCV 2020",
        "Gao et al., Dynamic channel pruning: feature boosting and suppression, ICLR 2019",
    ),
    license=CIFAR_LICENSE,
    data=CIFAR_DATA,
)


class ChannelGateResNetCifar(ResNet32Backbone, ChannelSkipping):
    name = "channel_gate_resnet_cifar"
    about = ABOUT


LITE_ABOUT = About(
    title="EfficientNet-Lite0 with dynamic channel selection on its expansion layers",
    family="sample-wise dynamic width: channel skipping (survey §3.2.2)",
    summary=(
        "Each MBConv block with an expansion layer (15 of 16) has a small gate that reads the block's input and "
        "switches each expanded channel on or off: a channel that is off is not expanded, not filtered by the "
        "depthwise convolution and not read by the projection; it holds its mean over training images instead "
        "(folded into the projection's bias). Each gate learns to predict, from the "
        "block's input, which channels matter for it: those whose contribution to the block's output, measured "
        f"on Lite0 itself, is at least {SALIENT_SHARE:.0%} of the block's mean contribution."
    ),
    papers=(*ABOUT.papers, "Evci et al., Mean replacement pruning, 2018"),
    license=LITE0_LICENSE,
    data=LITE0_PHOTOS_DATA,
    caveats=LITE0_CAVEATS,
)


class Lite0Channels(Lite0Backbone, ChannelSkipping):
    name = "lite0_channels"
    about = LITE_ABOUT


register_model(ChannelGateResNetCifar.name, emits=(ChannelRecord,), tiny={"depth": 14})(ChannelGateResNetCifar.build)
register_model(Lite0Channels.name, emits=(ChannelRecord,))(Lite0Channels.build)

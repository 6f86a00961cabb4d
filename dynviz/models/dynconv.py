"""Pixel-level dynamic convolution: DynConv (Verelst & Tuytelaars, CVPR 2020).

Survey §4.1 (spatial-wise dynamic networks: pixel-level dynamic networks).

A residual block x ↦ x + F(x) spends the same work at every position of its
feature map, whether it shows the object or the sky behind it. DynConv puts a
*mask unit* in front of the block: a 3×3 convolution (with the block's stride)
that reads the block's input around each output position p, plus a term from
the whole image's pooled features, gives p a logit s_p (:class:`MaskUnit`).
The residual is computed only where the mask is on:

    y_p = x_p + m_p · F(x)_p,     m_p = 1[σ(s_p) ≥ θ].

A k×k convolution at a masked position reads its neighbours, so each
convolution of the block is computed on the mask dilated by the kernels after
it: in a basic block the first 3×3 on m⁺ = maxpool₃(m) and the second on m; in
an MBConv block the 1×1 expansion on maxpool_k(m), the depthwise k×k and the
projection on m. At batch size one the executed path *gathers* the k×k
patches around the chosen positions from a channels-last map, multiplies them
with the weights (BatchNorm folded in) as one matrix product, or one depthwise
convolution, and scatters the results back (:class:`FoldedConv`): a position
that is off is never computed, and FlopCounterMode sees exactly the work done.
Where C++ can be built, each masked block is one operator that does the same
(:mod:`dynviz.native`, priced by :data:`dynviz.cost.FORMULAS`).

Training runs the masked dense path (every position computed, then multiplied
by its mask) with the masks sampled with Gumbel noise as DynConv does, and the
straight-through gradient of σ(s) (:mod:`dynviz.models.gates`). Without the
noise (``noise=False``, the Lite0 recipe) they are decided as at inference,
m = 1[σ(s) ≥ ½]: fine-tuned from a 10-epoch twin, sampled masks had kept their
logits near 0, where the noise, not the network, decides (17% validation
accuracy after one epoch). The loss adds DynConv's sparsity criterion on the
share of each block's convolution FLOPs that its masks spend,

    f_l = Σ_j c_j · mean(m_j) / Σ_j c_j     (c_j: layer j's cost per position):

the network's share pulled to a target t, each block's kept within bounds that
open over the first third of training (:func:`dynviz.train.losses.sparsity_criterion`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dynviz import native
from dynviz.cards import About
from dynviz.cost import stopwatch
from dynviz.fused import FusedNetwork, folded, inference_path, padding_of
from dynviz.inputs import InputImage
from dynviz.models.base import Memo
from dynviz.models.cifar import CIFAR_LICENSE
from dynviz.models.efficientnet_lite import MBConv
from dynviz.models.gates import (
    CIFAR_DATA,
    DEFAULT_THRESHOLD,
    FUNCTION_MATCHING,
    LITE0_CAVEATS,
    LITE0_LICENSE,
    LITE0_PHOTOS_DATA,
    GatedModel,
    GatedOutput,
    Lite0Backbone,
    ResNet32Backbone,
    decisions,
    identity,
    unit_input,
)
from dynviz.models.resnet_cifar import BasicBlock
from dynviz.trace import MaskRecord, Trace, rounded
from dynviz.zoo import register_model

TARGET_RATE = 0.4
"""Each block's share of its convolution FLOPs in training (CIFAR)."""
LITE_TARGET_RATE = 0.5
MASK_INITIAL_LOGIT = 2.0
"""Masks start mostly on (p ≈ 0.88): the network is initialised from a trained twin."""


@dataclass(frozen=True)
class ConvLayer:
    """One convolution of a residual branch, with its BatchNorm and activation."""

    name: str
    """The convolution's name inside its block."""
    conv: nn.Conv2d
    norm: nn.BatchNorm2d
    activation: Callable[[torch.Tensor], torch.Tensor]


def branch(block: nn.Module) -> list[ConvLayer]:
    """The convolutions of ``block``'s residual branch F, in order."""
    if isinstance(block, BasicBlock):
        return [
            ConvLayer("conv1", block.conv1, block.bn1, F.relu),
            ConvLayer("conv2", block.conv2, block.bn2, identity),
        ]
    expand = (
        []
        if isinstance(block.expand, nn.Identity)
        else [ConvLayer("expand.0", block.expand[0], block.expand[1], F.relu6)]
    )
    return [
        *expand,
        ConvLayer("depthwise.0", block.depthwise[0], block.depthwise[1], F.relu6),
        ConvLayer("project.0", block.project[0], block.project[1], identity),
    ]


def maskable(block: nn.Module) -> bool:
    """A block can leave a position to its shortcut: a basic block's (identity or option A), an MBConv's identity."""
    return isinstance(block, BasicBlock) or (isinstance(block, MBConv) and block.identity_shortcut)


def shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the block passes on where its residual branch is not computed."""
    return block.shortcut(x) if isinstance(block, BasicBlock) else x


def finish(block: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The activation after the sum: a basic block's ReLU, none in MBConv."""
    return F.relu(y) if isinstance(block, BasicBlock) else y


def dilation_radii(layers: list[ConvLayer]) -> list[int]:
    """How far each layer's positions reach beyond the mask: the half-kernels of the layers after it."""
    radii, reach = [], 0
    for layer in reversed(layers):
        radii.append(reach)
        reach += layer.conv.kernel_size[0] // 2
    return radii[::-1]


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """``mask`` [N, 1, H, W] grown by ``radius`` positions (the straight-through gradient flows through it)."""
    return F.max_pool2d(mask, 2 * radius + 1, 1, radius) if radius else mask


class MaskUnit(nn.Module):
    """A block's input → one logit per position of its output grid: DynConv's mask unit (``Squeeze`` in its
    official code), a 3×3 convolution with the block's stride, so that a position sees its neighbours, plus one
    term for the whole image from its globally pooled features,

        s_p = w ⋆ x|_p + v · mean(x) + b,

    so that the same edge can be worth computing in one image and not in another."""

    def __init__(self, channels: int, stride: int, constant_start: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 3, stride, padding=1)
        self.context = nn.Linear(channels, 1, bias=False)  # the convolution's bias is b
        if constant_start:  # a pretrained network's activations are large: random weights would drop positions
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.context.weight)
        nn.init.constant_(self.conv.bias, MASK_INITIAL_LOGIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.context(x.mean((2, 3)))[:, :, None, None]


def block_stride(block: nn.Module) -> int:
    return block.stride if isinstance(block, BasicBlock) else block.spec.stride


class DynConvNetwork(nn.Module):
    """A backbone (``stem``, ``blocks``, ``classify``) with a mask unit on every block that has a shortcut."""

    def __init__(self, backbone: nn.Module, constant_start: bool = False, noise: bool = True):
        super().__init__()
        self.backbone = backbone
        self.noise = noise
        """Gumbel noise on the masks in training; without it they are decided as at inference."""
        self.units_shape_features = True
        """Whether the units' losses reach the backbone (:func:`~dynviz.models.gates.unit_input`)."""
        self.masks = nn.ModuleDict(
            {
                str(i): MaskUnit(b.channels_in, block_stride(b), constant_start)
                for i, b in enumerate(backbone.blocks)
                if maskable(b)
            }
        )
        # Cost per output position of each masked block's convolutions: weights of the sparsity criterion.
        self.position_costs = {
            i: [
                layer.conv.weight[0].numel() * layer.conv.out_channels for layer in branch(self.backbone.blocks[int(i)])
            ]
            for i in self.masks
        }

    def forward(self, x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> GatedOutput:
        """The masked dense path (training, batches). ``gates`` holds each masked block's FLOPs share f_l [N],
        ``costs`` each block's dense FLOPs."""
        x = self.backbone.stem(x)
        shares, block_costs = [], []
        for i, block in enumerate(self.backbone.blocks):
            if str(i) not in self.masks:
                x = block(x)
                continue
            mask = decisions(
                self.masks[str(i)](unit_input(x, self.units_shape_features)), self.training, threshold, self.noise
            )
            layers = branch(block)
            masks = [dilate(mask, r) for r in dilation_radii(layers)]
            costs = self.position_costs[str(i)]
            shares.append(sum(c * m.mean((1, 2, 3)) for c, m in zip(costs, masks)) / sum(costs))
            block_costs.append(sum(costs) * mask.shape[-2] * mask.shape[-1])
            h = x
            for layer, m in zip(layers, masks):
                h = layer.activation(layer.norm(layer.conv(h))) * m
            x = finish(block, shortcut(block, x) + h)
        return GatedOutput(self.backbone.classify(x), shares, block_costs)


@dataclass(frozen=True)
class FoldedConv:
    """One convolution of the branch at inference, its BatchNorm folded in (y = W'·x + b', with
    W' = γ/σ · W and b' = β − γ/σ · μ), laid out to multiply gathered patches."""

    weight: torch.Tensor
    """[k·k·C_in, C_out] for a dense convolution (rows in the order of a channels-last patch); the
    convolution's own [C, 1, k, k] for a depthwise one."""
    bias: torch.Tensor
    kernel: int
    stride: int
    padding: int
    depthwise: bool
    activation: Callable[[torch.Tensor], torch.Tensor]
    patch_indices: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, layer: ConvLayer) -> FoldedConv:
        conv = layer.conv
        weight, bias = folded(conv, layer.norm)
        depthwise = conv.groups > 1
        k = conv.kernel_size[0]
        same, padding = padding_of(conv)
        if same is not None:  # TF "same" at stride 2: Lite's downsampling blocks, never masked (no identity shortcut)
            raise ValueError("a masked block's convolutions pad symmetrically")
        return cls(
            weight if depthwise else weight.permute(2, 3, 1, 0).flatten(0, 2).contiguous(),
            bias,
            k,
            conv.stride[0],
            padding,
            depthwise,
            layer.activation,
        )

    @property
    def pointwise(self) -> bool:
        return self.kernel == 1 and self.stride == 1

    def patch_rows(self, side: int, width: int) -> torch.Tensor:
        """[side², k·k]: the rows of the flattened padded input (``width`` pixels wide) that each output
        position's k×k patch reads; built on first use for each geometry."""
        geometry = (side, width)
        if geometry not in self.patch_indices:
            k, stride = self.kernel, self.stride
            corners = torch.arange(side)[:, None] * (stride * width) + torch.arange(side) * stride
            offsets = torch.arange(k)[:, None] * width + torch.arange(k)
            self.patch_indices[geometry] = corners.flatten()[:, None] + offsets.flatten()
        return self.patch_indices[geometry]

    def at(self, padded: torch.Tensor, positions: torch.Tensor, side: int) -> torch.Tensor:
        """The convolution at ``positions`` (flat indices into its side × side output) only, from its
        zero-padded channels-last input [H + 2p, W + 2p, C_in]: → [M, C_out]. The k×k patches around the
        positions are gathered as one index over the flattened map (each pixel a contiguous run of
        channels) and multiplied with the weights, so no other position costs anything."""
        channels = padded.shape[2]
        rows = self.patch_rows(side, padded.shape[1]).index_select(0, positions).flatten()
        patches = padded.reshape(-1, channels).index_select(0, rows)
        return self.activation(self.apply(patches.view(len(positions), self.kernel**2 * channels)))

    def apply(self, patches: torch.Tensor) -> torch.Tensor:
        """[M, k·k·C_in] gathered patches → [M, C_out]."""
        if not self.depthwise:
            return torch.addmm(self.bias, patches, self.weight)
        if not len(patches):  # no position: a convolution would see an empty image
            return patches.new_zeros(0, len(self.bias))
        # A depthwise convolution's M dot products of length k·k per channel, as oneDNN's depthwise kernel
        # sliding k×k over a [M·k, k] image with stride k: a batched product would loop over channels.
        k, channels = self.kernel, self.weight.shape[0]
        image = patches.view(1, len(patches) * k, k, channels).permute(0, 3, 1, 2)
        return F.conv2d(image, self.weight, self.bias, stride=(k, 1), groups=channels)[0, :, :, 0].T


@functools.cache
def padded_rows(side: int, padding: int) -> torch.Tensor:
    """[side²]: the row of each position of a side × side map in the flattened map padded by ``padding``."""
    grid = torch.arange(side) + padding
    return (grid[:, None] * (side + 2 * padding) + grid).flatten()


def scattered(values: torch.Tensor, positions: torch.Tensor, side: int, padding: int) -> torch.Tensor:
    """[M, C] values at ``positions`` (flat, side × side) on a zero [side + 2p, side + 2p, C] map: the next
    convolution's input."""
    padded_side = side + 2 * padding
    target = values.new_zeros(padded_side * padded_side, values.shape[1])
    target.index_copy_(0, padded_rows(side, padding).index_select(0, positions), values)
    return target.view(padded_side, padded_side, -1)


def positions_on(probabilities: torch.Tensor, radius: int, threshold: float) -> torch.Tensor:
    """The flat positions of the mask p ≥ θ grown by ``radius``: a position is on when any probability
    around it reaches θ, so growing the probabilities grows the mask."""
    return (dilate(probabilities[None, None], radius) >= threshold).view(-1).nonzero().view(-1)


@dataclass(frozen=True)
class MaskedBlock:
    """A masked block as built: its mask unit, the dense price of each convolution per output position,
    and the convolutions as the sparse path runs them, each with how far its mask is grown."""

    block: int
    name: str
    resolution: int
    unit: MaskUnit
    position_flops: tuple[int, ...]
    convs: tuple[FoldedConv, ...]
    radii: tuple[int, ...]

    @functools.cached_property
    def unit_patch_weight(self) -> torch.Tensor:
        """The mask unit's 3×3 weights [9·C] in the order of a channels-last patch (the C++ operator's)."""
        return self.unit.conv.weight[0].permute(1, 2, 0).flatten().contiguous()

    @functools.cached_property
    def depthwise_taps(self) -> torch.Tensor:
        """An MBConv's depthwise weights as [k·k, E], each tap's weights for every channel in a row (the C++
        operator's)."""
        depthwise = self.convs[-2].weight
        return depthwise.flatten(1).T.contiguous()

    def run(self, block: nn.Module, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The block on a batch of one (channels-last memory), each convolution computed only where its
        (grown) mask p ≥ θ is on: its output, its mask probabilities and how many positions each convolution
        computed. A block runs as one C++ operator where it is built (:mod:`dynviz.native`): as PyTorch
        operations it is about 25 calls of a few µs each, as much time as the arithmetic they save, and the mask
        unit a convolution with one output channel, oneDNN's slowest case."""
        if native.ready() and not torch.is_grad_enabled():
            unit = (x, self.unit_patch_weight, self.unit.context.weight.view(-1), self.unit.conv.bias, threshold)
            if isinstance(block, BasicBlock):
                first, second = self.convs
                convs = (first.weight, first.bias, second.weight, second.bias, block.stride)
                out, probabilities, counts = torch.ops.dynviz.dynconv_basic_block(*unit, *convs)
            else:
                *expand, depthwise, project = self.convs
                expansion = (expand[0].weight, expand[0].bias) if expand else (x.new_empty(0), x.new_empty(0))
                convs = (*expansion, self.depthwise_taps, depthwise.bias, project.weight, project.bias)
                out, probabilities, counts = torch.ops.dynviz.dynconv_mbconv_block(*unit, *convs)
            return out, probabilities, counts.tolist()
        probabilities = self.unit(x)[0, 0].sigmoid()
        out, counts = sparse_block(block, self, x, probabilities, threshold)
        return out, probabilities, counts


def sparse_block(
    block: nn.Module, masked: MaskedBlock, x: torch.Tensor, probabilities: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, list[int]]:
    """:meth:`MaskedBlock.run` as PyTorch operations, given the mask's probabilities: the output and how many
    positions each convolution computed."""
    side, radii = masked.resolution, masked.radii
    grown = {r: positions_on(probabilities, r, threshold) for r in set(radii)}
    positions = [grown[r] for r in radii]
    values = x[0].permute(1, 2, 0)
    for i, conv in enumerate(masked.convs):
        if i and conv.pointwise and radii[i] == radii[i - 1]:  # a 1×1 on the positions just computed
            values = conv.activation(conv.apply(values))
            continue
        if i:
            values = scattered(values, positions[i - 1], side, conv.padding)
        elif conv.padding:
            values = F.pad(values, (0, 0) + (conv.padding,) * 4)
        values = conv.at(values, positions[i], side)
    # In place where the shortcut is x itself (channels-last, so the view is contiguous): x is not read again.
    out = shortcut(block, x)[0].permute(1, 2, 0).contiguous()
    out.view(-1, out.shape[-1]).index_add_(0, positions[-1], values)
    return finish(block, out.permute(2, 0, 1)[None]), [len(p) for p in positions]


class PixelMasking(GatedModel, nn.Module):
    """A zoo model around a :class:`DynConvNetwork`: the threshold knob and traces of the masks.
    Subclasses give ``name``, ``about`` and a backbone mixin."""

    unit = "position"
    action = "compute"
    done = "computed"
    network = DynConvNetwork

    def __init__(self, net: DynConvNetwork | None = None):
        super().__init__(net)
        flops, sides = self.module_flops, self.sides
        self.masked = [
            MaskedBlock(
                i,
                f"block {i + 1}",
                sides[i],
                self.net.masks[str(i)],
                tuple(flops[f"backbone.blocks.{i}.{layer.name}"] // sides[i] ** 2 for layer in branch(block)),
                tuple(FoldedConv.of(layer) for layer in branch(block)),
                tuple(dilation_radii(branch(block))),
            )
            for i, block in enumerate(self.net.backbone.blocks)
            if str(i) in self.net.masks
        ]
        self.masked_at = {b.block: b for b in self.masked}
        self.fixed_flops = flops[""] - sum(sum(b.position_flops) * b.resolution**2 for b in self.masked)
        """Stem, head, unmasked blocks and every mask unit: paid whatever the masks decide."""

    def executed(
        self, x: torch.Tensor, threshold: float, backbone: nn.Module | FusedNetwork
    ) -> tuple[torch.Tensor, dict, dict]:
        """The executed path on one input: logits, each masked block's probabilities and position counts.
        ``backbone``: the backbone's inference path, which runs the unmasked parts. Feature maps stay in
        channels-last memory, the layout the sparse blocks gather from."""
        probabilities, counts = {}, {}
        x = backbone.stem(x).contiguous(memory_format=torch.channels_last)
        for i, block in enumerate(self.net.backbone.blocks):
            masked = self.masked_at.get(i)
            if masked is None:
                x = backbone.blocks[i](x)
                continue
            x, probabilities[i], counts[i] = masked.run(block, x, threshold)
        return backbone.classify(x)[0], probabilities, counts

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        threshold = self.threshold(settings)
        seen = self.network_input(image)
        backbone = inference_path(self.net.backbone, seen.tensor.shape)
        with stopwatch() as watch:
            logits, probabilities, counts = self.executed(seen.tensor, threshold, backbone)
        records = []
        for b in self.masked:
            p = probabilities[b.block].flatten().tolist()  # one conversion: thousands of positions
            spent = sum(c * n for c, n in zip(b.position_flops, counts[b.block]))
            full = sum(b.position_flops) * b.resolution**2
            computed = tuple(v >= threshold for v in p)
            records.append(MaskRecord(b.block, b.name, b.resolution, seen.box, rounded(p, 3), computed, spent, full))
        spent = ("masked blocks, at the positions computed", sum(r.flops for r in records))
        return self.gated_trace(image, seen, logits, tuple(records), spent, watch.ms, threshold)


ABOUT = About(
    title="ResNet-32 with pixel masks (DynConv), CIFAR-10",
    family="spatial-wise dynamic network: pixel-level masks (survey §4.1)",
    summary=(
        "Every residual block has a mask unit (a 3×3 convolution plus a term from the whole image's pooled features) "
        "that reads the block's input and decides, for each position of its output, whether to compute the block "
        "there. Elsewhere the input passes through the "
        "shortcut. The executed path gathers only the chosen positions, computes them and scatters the results "
        "back. Initialised from resnet32_cifar and fine-tuned to match it, with hard masks sampled with Gumbel noise "
        "(straight-through gradients) and DynConv's criterion: the network's share of its maskable convolution "
        f"FLOPs pulled to {TARGET_RATE:.0%}, each block's within bounds that open during training."
    ),
    papers=(
        "Verelst & Tuytelaars, Dynamic convolutions: exploiting spatial sparsity for faster inference, CVPR 2020",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §4.1",
    ),
    license=CIFAR_LICENSE,
    data=CIFAR_DATA,
)


class DynConvResNetCifar(ResNet32Backbone, PixelMasking):
    name = "dynconv_resnet_cifar"
    about = ABOUT


LITE_ABOUT = About(
    title="EfficientNet-Lite0 with pixel masks (DynConv)",
    family="spatial-wise dynamic network: pixel-level masks (survey §4.1)",
    summary=(
        "Each of Lite0's MBConv blocks with an identity shortcut (9 of 16) has a mask unit that decides, for each "
        "position, whether to compute the block there: the 1×1 expansion runs on the mask grown by the depthwise "
        "kernel, the depthwise convolution and the projection on the mask itself. The mask units are trained by "
        "distillation from Lite0 itself, with a target of "
        f"{LITE_TARGET_RATE:.0%} of each masked block's FLOPs."
    ),
    papers=(*ABOUT.papers, FUNCTION_MATCHING),
    license=LITE0_LICENSE,
    data=LITE0_PHOTOS_DATA,
    caveats=LITE0_CAVEATS,
)


class Lite0DynConv(Lite0Backbone, PixelMasking):
    name = "lite0_dynconv"
    about = LITE_ABOUT


register_model(DynConvResNetCifar.name, emits=(MaskRecord,), tiny={"depth": 14})(DynConvResNetCifar.build)
register_model(Lite0DynConv.name, emits=(MaskRecord,))(Lite0DynConv.build)

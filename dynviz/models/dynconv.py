"""Pixel-level dynamic convolution: DynConv (Verelst & Tuytelaars, CVPR 2020).

Survey §4.1 (spatial-wise dynamic networks: pixel-level dynamic networks).

A residual block x ↦ x + F(x) spends the same work at every position of its
feature map, whether it shows the object or the sky behind it. DynConv puts a
*mask unit* in front of the block: a 1×1 convolution (with the block's stride)
that reads the block's input and gives every output position p a logit s_p.
The residual is computed only where the mask is on:

    y_p = x_p + m_p · F(x)_p,     m_p = 1[σ(s_p) ≥ θ].

A k×k convolution at a masked position reads its neighbours, so each
convolution of the block is computed on the mask dilated by the kernels after
it: in a basic block the first 3×3 on m⁺ = maxpool₃(m) and the second on m; in
an MBConv block the 1×1 expansion on maxpool_k(m), the depthwise k×k and the
projection on m. At batch size one the executed path *gathers* the k×k
patches around the chosen positions, multiplies them with the weights as one
matrix product and scatters the results back (:func:`conv_at`): a position that
is off is never computed, and FlopCounterMode sees exactly the work done.

Training runs the masked dense path (every position computed, then multiplied
by its mask) with the masks decided as at inference, m = 1[σ(s) ≥ ½], and the
straight-through gradient of σ(s) (:mod:`dynviz.models.gates`). DynConv samples
them with Gumbel noise; in a short fine-tune the logits then stay near 0, where
the noise, not the network, decides, and the deterministic masks at inference
drop almost every position (tried here: 17% validation accuracy after one
epoch). The loss adds DynConv's sparsity criterion: the share of each block's
convolution FLOPs that its masks spend,

    f_l = Σ_j c_j · mean(m_j) / Σ_j c_j     (c_j: layer j's cost per position),

is pulled towards a target t by (1/L) Σ_l (f_l − t)².
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cost import stopwatch
from dynviz.inputs import InputImage
from dynviz.models.base import Memo
from dynviz.models.efficientnet_lite import MBConv
from dynviz.models.gates import (
    CIFAR_LICENSE,
    DEFAULT_THRESHOLD,
    FUNCTION_MATCHING,
    LITE0_DATA,
    LITE0_LICENSE,
    GatedModel,
    GatedOutput,
    Lite0Backbone,
    ResNet32Backbone,
    decisions,
)
from dynviz.models.resnet_cifar import BasicBlock
from dynviz.runtime import inference_slot
from dynviz.trace import MaskRecord, Trace, rounded
from dynviz.zoo import About, register_model

TARGET_RATE = 0.45
"""Each block's share of its convolution FLOPs in training (CIFAR)."""
LITE_TARGET_RATE = 0.5
CIFAR_THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)
"""The CIFAR model's operating points: fine-tuned with masks decided at ½, its mask logits stay close to 0,
so θ far from ½ switches on or off positions in bulk that the network never learnt to do without."""
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


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


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


def merge(block: nn.Module, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The block's output from its input and its (masked) residual branch."""
    if isinstance(block, BasicBlock):
        return F.relu(block.shortcut(x) + residual)
    return x + residual


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
    """A block's input → one logit per position of its output grid."""

    def __init__(self, channels: int, stride: int, constant_start: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1, stride)
        if constant_start:  # a pretrained network's activations are large: random weights would drop positions
            nn.init.zeros_(self.conv.weight)
        nn.init.constant_(self.conv.bias, MASK_INITIAL_LOGIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def block_stride(block: nn.Module) -> int:
    return block.stride if isinstance(block, BasicBlock) else block.spec.stride


class DynConvNetwork(nn.Module):
    """A backbone (``stem``, ``blocks``, ``classify``) with a mask unit on every block that has a shortcut."""

    def __init__(self, backbone: nn.Module, constant_start: bool = False):
        super().__init__()
        self.backbone = backbone
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
        """The masked dense path (training, batches). ``gates`` holds each masked block's FLOPs share f_l [N]."""
        x = self.backbone.stem(x)
        shares = []
        for i, block in enumerate(self.backbone.blocks):
            if str(i) not in self.masks:
                x = block(x)
                continue
            mask = decisions(self.masks[str(i)](x), self.training, threshold, noise=False)
            layers = branch(block)
            masks = [dilate(mask, r) for r in dilation_radii(layers)]
            costs = self.position_costs[str(i)]
            shares.append(sum(c * m.mean((1, 2, 3)) for c, m in zip(costs, masks)) / sum(costs))
            h = x
            for layer, m in zip(layers, masks):
                h = layer.activation(layer.norm(layer.conv(h))) * m
            x = merge(block, x, h)
        return GatedOutput(self.backbone.classify(x), shares)


def conv_at(conv: nn.Conv2d, h: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """``conv`` computed at output positions (ys, xs) only: [H, W, C_in] → [M, C_out]. The k×k patches around
    the positions are gathered and multiplied with the weights in one matrix product (a batched one for a
    depthwise convolution), so no other position costs anything. Channels-last: each gathered pixel is one
    contiguous run of channels, which makes the gather cheap."""
    k, stride = conv.kernel_size[0], conv.stride[0]
    pad = (k - 1) // 2 if hasattr(conv, "pad") else conv.padding[0]  # TF "same" is symmetric at stride 1
    padded = F.pad(h, (0, 0, pad, pad, pad, pad)) if pad else h
    offsets = torch.arange(k)
    rows = ys[:, None, None] * stride + offsets[None, :, None]
    cols = xs[:, None, None] * stride + offsets[None, None, :]
    patches = padded[rows, cols].flatten(1, 2)  # [M, k·k, C_in]
    if conv.groups > 1:
        return torch.bmm(patches.permute(2, 0, 1), conv.weight.flatten(1)[:, :, None])[:, :, 0].T
    return patches.flatten(1) @ conv.weight.permute(2, 3, 1, 0).flatten(0, 2)


def norm_rows(norm: nn.BatchNorm2d, values: torch.Tensor) -> torch.Tensor:
    """Inference BatchNorm on [M, C] values."""
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    return (values - norm.running_mean) * scale + norm.bias


def sparse_block(block: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """The block on a batch of one, computing each convolution only where its (dilated) mask is on.
    Returns the output and how many positions each convolution computed."""
    layers = branch(block)
    side = mask.shape[-1]
    h, counts = x[0].permute(1, 2, 0), []
    for layer, radius in zip(layers, dilation_radii(layers)):
        ys, xs = dilate(mask[None, None].float(), radius)[0, 0].nonzero(as_tuple=True)
        values = layer.activation(norm_rows(layer.norm, conv_at(layer.conv, h, ys, xs)))
        h = values.new_zeros(side, side, values.shape[1])
        h[ys, xs] = values
        counts.append(len(ys))
    return merge(block, x, h.permute(2, 0, 1)[None]), counts


@dataclass(frozen=True)
class MaskedBlock:
    """A masked block as built: the dense price of each convolution per output position."""

    block: int
    name: str
    resolution: int
    position_flops: tuple[int, ...]


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
                tuple(flops[f"backbone.blocks.{i}.{layer.name}"] // sides[i] ** 2 for layer in branch(block)),
            )
            for i, block in enumerate(self.net.backbone.blocks)
            if str(i) in self.net.masks
        ]
        self.fixed_flops = flops[""] - sum(sum(b.position_flops) * b.resolution**2 for b in self.masked)
        """Stem, head, unmasked blocks and every mask unit: paid whatever the masks decide."""

    def executed(self, x: torch.Tensor, threshold: float) -> tuple[torch.Tensor, dict, dict]:
        """The executed path on one input: logits, each masked block's probabilities and position counts."""
        probabilities, counts = {}, {}
        x = self.net.backbone.stem(x)
        for i, block in enumerate(self.net.backbone.blocks):
            if str(i) not in self.net.masks:
                x = block(x)
                continue
            probabilities[i] = self.net.masks[str(i)](x).sigmoid()[0, 0]
            x, counts[i] = sparse_block(block, x, probabilities[i] >= threshold)
        return self.net.backbone.classify(x)[0], probabilities, counts

    def analyze(self, image: InputImage, settings: dict[str, float] | None = None, memo: Memo | None = None) -> Trace:
        threshold = self.threshold(settings)
        seen = self.network_input(image)
        with inference_slot(), stopwatch() as watch:
            logits, probabilities, counts = self.executed(seen.tensor, threshold)
        records = []
        for b in self.masked:
            p = probabilities[b.block].flatten().tolist()  # one conversion: thousands of positions
            spent = sum(c * n for c, n in zip(b.position_flops, counts[b.block]))
            full = sum(b.position_flops) * b.resolution**2
            computed = tuple(v >= threshold for v in p)
            records.append(MaskRecord(b.block, b.name, b.resolution, seen.box, rounded(p, 3), computed, spent, full))
        spent = ("masked blocks, at the positions computed", sum(r.flops for r in records))
        return self.gated_trace(image, seen, logits, tuple(records), spent, watch.ms, threshold)

    def measure_speed(self, image: InputImage, threshold: float, repeats: int = 5) -> Speed:
        """Latency of the sparse executed path against the dense twin (the backbone without its mask
        units) on this input: the best of ``repeats`` runs each, as timing noise only ever adds."""
        x = self.network_input(image).tensor
        sparse, dense = [], []
        with inference_slot():
            for _ in range(repeats):
                with stopwatch() as watch:
                    self.executed(x, threshold)
                sparse.append(watch.ms)
                with stopwatch() as watch:
                    self.net.backbone(x)
                dense.append(watch.ms)
        return Speed(min(sparse), min(dense))


@dataclass(frozen=True)
class Speed:
    sparse_ms: float
    dense_ms: float

    @property
    def speedup(self) -> float:
        """Realised: how many times faster the sparse path ran than the dense one."""
        return self.dense_ms / self.sparse_ms


ABOUT = About(
    title="ResNet-32 with pixel masks (DynConv), CIFAR-10",
    family="spatial-wise dynamic network: pixel-level masks (survey §4.1)",
    summary=(
        "Every residual block has a mask unit (a 1×1 convolution) that reads the block's input and decides, for "
        "each position of its output, whether to compute the block there. Elsewhere the input passes through the "
        "shortcut. The executed path gathers only the chosen positions, computes them and scatters the results "
        "back. Initialised from resnet32_cifar and fine-tuned with Gumbel masks and a target of "
        f"{TARGET_RATE:.0%} of each block's convolution FLOPs."
    ),
    papers=(
        "Verelst & Tuytelaars, Dynamic convolutions: exploiting spatial sparsity for faster inference, CVPR 2020",
        "Han et al., Dynamic Neural Networks: A Survey, TPAMI 2021, §4.1",
    ),
    license=CIFAR_LICENSE,
    data="CIFAR-10 train split less 5,000 validation images, from resnet32_cifar's weights; measured on the 10,000 test images",
)


class DynConvResNetCifar(ResNet32Backbone, PixelMasking):
    name = "dynconv_resnet_cifar"
    about = ABOUT
    thresholds = CIFAR_THRESHOLDS


LITE_ABOUT = About(
    title="EfficientNet-Lite0 with pixel masks (DynConv)",
    family="spatial-wise dynamic network: pixel-level masks (survey §4.1)",
    summary=(
        "Each of Lite0's MBConv blocks with an identity shortcut (9 of 16) has a mask unit that decides, for each "
        "position, whether to compute the block there: the 1×1 expansion runs on the mask grown by the depthwise "
        "kernel, the depthwise convolution and the projection on the mask itself. Fine-tuned from Lite0's "
        f"ImageNet weights by distillation from Lite0 itself, with a target of {LITE_TARGET_RATE:.0%} of each "
        "masked block's FLOPs."
    ),
    papers=(*ABOUT.papers, FUNCTION_MATCHING),
    license=LITE0_LICENSE,
    data=LITE0_DATA,
)


class Lite0DynConv(Lite0Backbone, PixelMasking):
    name = "lite0_dynconv"
    about = LITE_ABOUT


register_model(DynConvResNetCifar.name, emits=(MaskRecord,))(DynConvResNetCifar.pretrained)
register_model(Lite0DynConv.name, emits=(MaskRecord,))(Lite0DynConv.pretrained)

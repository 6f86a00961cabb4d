"""Deformable attention: DAT, the vision transformer with deformable attention (Xia et al., CVPR 2022).

Survey §3.3.2 (dynamic parameters: adjusting the sampling points, here of attention's keys).

Plain self-attention lets every query read every token. Deformable attention
lets the queries choose where keys and values come from. A uniform grid of
reference points p (here one per token: the 8×8 grid of the tokens' centres) is
shifted by offsets an offset network θ_offset predicts from the queries, one set
per group of heads:

    q = x W_q,    Δp = s · tanh(θ_offset(q)),    x̃ = φ(x; p + Δp),
    k̃ = x̃ W_k,   ṽ = x̃ W_v,    z = softmax(q k̃ᵀ / √d) ṽ,

where φ is bilinear sampling of the token map and s bounds the offsets
(:data:`OFFSET_RANGE` reference cells). θ_offset is DAT's: a depthwise k×k
convolution of stride r (which places one output on each reference point),
LayerNorm over the channels, GELU and a 1×1 convolution to (Δx, Δy). That last
convolution starts at zero, so a new layer starts as plain attention over the
tokens themselves, and θ_offset learns at a tenth of the network's rate, as DCN
and Deformable DETR train their offset predictors: a large early step moves every
key of a group at once. The class token's key and value join the sampled ones, so
the class token stays readable. Every query attends to (H/r)·(W/r) + 1 keys; DAT
puts the layer in the last stages, here the last half of the layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.models.base import decided
from dynviz.models.cifar import DecidingNetwork, about_cifar, grid_to_input
from dynviz.models.dcn import OFFSET_LR_SCALE
from dynviz.models.vit import (
    DEPTH,
    HEADS,
    TINY,
    VIT_PAPER,
    WIDTH,
    Attention,
    VisionTransformer,
)
from dynviz.trace import Box, DeformableAttentionRecord, rounded
from dynviz.zoo import register_model

GROUPS = 2
"""Groups of heads sharing one set of sampling points."""
REFERENCE_STRIDE = 1
"""One reference point per r × r tokens: r = 1 samples as many keys as plain attention reads, so the layer
differs from it only in where they come from."""
OFFSET_KERNEL = 5
OFFSET_RANGE = 2.0
"""s: the largest offset, in reference cells (r tokens each)."""


def reference_points(side: int, stride: int) -> torch.Tensor:
    """The uniform grid of reference points, (x, y) [side/stride, side/stride, 2] in token index coordinates:
    the centre of each stride × stride cell."""
    centres = torch.arange(side // stride, dtype=torch.float32) * stride + (stride - 1) / 2
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack((x, y), -1)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a map [N, C, H, W] (DAT's offset network normalises there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class DeformedKeys:
    """What one deformable attention layer decided for one input."""

    points: torch.Tensor
    """[groups, keys, 2] (x, y) in token index coordinates."""
    attention: torch.Tensor
    """[heads, queries, keys]: the image tokens' attention over the sampled keys."""


class DeformableAttention(nn.Module):
    def __init__(self, dim: int, heads: int, groups: int = GROUPS, stride: int = REFERENCE_STRIDE):
        super().__init__()
        self.heads, self.groups, self.stride = heads, groups, stride
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        group_dim = dim // groups
        self.offset = nn.Sequential(
            nn.Conv2d(group_dim, group_dim, OFFSET_KERNEL, stride, OFFSET_KERNEL // 2, groups=group_dim),
            ChannelNorm(group_dim),
            nn.GELU(),
            nn.Conv2d(group_dim, 2, 1, bias=False),
        )
        nn.init.zeros_(self.offset[-1].weight)
        self.offset.lr_scale = OFFSET_LR_SCALE  # read by the training loop's parameter groups

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        n, tokens, dim = x.shape
        head_dim, group_dim = dim // self.heads, dim // self.groups
        q = self.q(x)
        # θ_offset reads each group's queries as a map: [N·G, C/G, H, W] → (Δx, Δy) [N·G, 2, H/r, W/r]
        query_map = q[:, 1:].transpose(1, 2).reshape(n * self.groups, group_dim, side, side)
        offsets = OFFSET_RANGE * self.stride * self.offset(query_map).tanh()
        references = reference_points(side, self.stride).to(x)
        points = references + offsets.permute(0, 2, 3, 1)  # [N·G, H/r, W/r, 2]
        # φ: bilinear sampling of the token map, read at index coordinates (align_corners=True), 0 outside.
        token_map = x[:, 1:].transpose(1, 2).reshape(n * self.groups, group_dim, side, side)
        sampled = F.grid_sample(token_map, points * (2 / (side - 1)) - 1, align_corners=True)
        sampled = sampled.view(n, dim, -1).transpose(1, 2)  # [N, keys, C]
        keys = torch.cat((x[:, :1], sampled), 1)
        k, v = self.kv(keys).view(n, -1, 2, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q = q.view(n, tokens, self.heads, head_dim).transpose(1, 2)
        weights = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(-1)
        decided(self, DeformedKeys(points.view(n, self.groups, -1, 2)[0], weights[0, :, 1:, 1:]))
        return self.proj((weights @ v).transpose(1, 2).reshape(n, tokens, dim))


def deformable_layers(depth: int) -> list[int]:
    """The last half of the layers, as DAT's last stages."""
    return list(range(depth // 2, depth))


class DeformableVisionTransformer(VisionTransformer):
    def __init__(self, groups: int = GROUPS, **config):
        width, heads = config.get("width", WIDTH), config.get("heads", HEADS)
        deformable = set(deformable_layers(config.get("depth", DEPTH)))
        super().__init__(
            **config,
            attention=lambda i: (
                DeformableAttention(width, heads, groups) if i in deformable else Attention(width, heads)
            ),
        )


ABOUT = about_cifar(
    "Deformable-attention vision transformer for CIFAR-10 (DAT)",
    "sample-wise dynamic parameters: deformable attention (survey §3.3.2)",
    "The CIFAR vision transformer whose last three layers attend to 64 keys sampled where the queries point: "
    "a grid of reference points moved by learned offsets, one set per group of heads, instead of the 64 tokens. "
    "The Deformable page draws the reference points, where they moved and how much each head attends to them.",
    ("Xia et al., Vision transformer with deformable attention, CVPR 2022", VIT_PAPER),
)


class DATCifar(DecidingNetwork):
    name = "dat_cifar"
    about = ABOUT
    default_point = "deformable"
    baselines = ("vit_cifar",)
    network = DeformableVisionTransformer

    def __init__(self, net: DeformableVisionTransformer):
        super().__init__(net, VisionTransformer(**net.config))
        self.breakdown = self.offset_breakdown(
            DeformableAttention, "plain layers, MLPs, embedding", "deformable attention and sampling"
        )
        self.layers = {layer.attention: i for i, layer in enumerate(self.net.layers)}

    def record(self, module: DeformableAttention, keys: DeformedKeys, box: Box) -> DeformableAttentionRecord:
        side = self.net.side
        references = reference_points(side, module.stride).view(-1, 2)
        layer = self.layers[module]
        return DeformableAttentionRecord(
            layer=layer,
            name=f"layer {layer + 1}",
            resolution=side,
            box=box,
            heads=module.heads,
            groups=module.groups,
            references=rounded(grid_to_input(references, side, box).flatten().tolist(), 2),
            points=rounded(grid_to_input(keys.points.float(), side, box).flatten().tolist(), 2),
            attention=rounded(keys.attention.flatten().tolist(), 4),
        )

    def records(self, decisions: list[tuple[nn.Module, DeformedKeys]], box: Box) -> tuple:
        return tuple(self.record(module, keys, box) for module, keys in decisions)


register_model(DATCifar.name, emits=(DeformableAttentionRecord,), tiny=TINY)(DATCifar.build)

"""Dynamic Vision Transformer: DVT (Wang et al., "Not all images are worth 16x16 words", NeurIPS 2021).

Survey §3.1 (early exiting in a cascade) with §4.3's resolution adaptation: the number of tokens is chosen
per image.

A cascade of transformers sees the image as ever finer grids of tokens (here
4×4, 6×6 and 8×8 patches of 4×4 pixels: the image resized to 16, 24 and 32
pixels). Each has its classifier; an image leaves at the first stage whose
calibrated confidence reaches its threshold, so easy images are answered from
16 tokens and only hard ones pay for 64. A later stage does not start over:

- feature reuse: the previous stage's final tokens z, mapped by f (LayerNorm and
  a linear layer to a narrow context) and upsampled to the new grid, join the
  input of every MLP of the new stage, MLP([x, f(z)]);
- relationship reuse: the previous stage's attention logits A, all layers and
  heads stacked as channels, mapped by r_l (a linear layer per new layer) and
  upsampled to the new grid of queries and keys (U r_l(A) Uᵀ, U the bilinear
  resize as a matrix), are added to the new logits, softmax(Q Kᵀ / √d + U r_l(A) Uᵀ).

``reuse=False`` gives the plain cascade (each stage alone), the ablation that
shows what reuse buys. The twin is the densest transformer alone (``vit_cifar``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cost import module_macs
from dynviz.models.base import Memo, decided
from dynviz.models.cifar import CIFAR_SIZE, about_cifar
from dynviz.models.multi_exit import CalibratedExits, every_exit
from dynviz.models.vit import (
    VIT_PAPER,
    Attention,
    Layer,
    Mlp,
    VisionTransformer,
)
from dynviz.trace import Box, ExitRecord, TokenGridRecord, rounded
from dynviz.zoo import register_model


@dataclass(frozen=True)
class DVTConfig:
    grids: tuple[int, ...] = (4, 6, 8)
    """Each stage's tokens per side."""
    width: int = 128
    depth: int = 6
    heads: int = 4
    mlp_ratio: int = 2
    patch: int = 4
    reuse: bool = True
    context: int = 32
    """Width of the reused features f(z)."""
    classes: int = 10

    @property
    def exits(self) -> int:
        return len(self.grids)

    @classmethod
    def tiny(cls) -> DVTConfig:
        return cls(grids=(2, 4), width=32, depth=2, heads=2, context=8)


@dataclass
class CascadeState:
    """What the cascade hands from one stage to the next."""

    image: torch.Tensor
    tokens: torch.Tensor | None = None
    """The last stage's final tokens, class token first [N, 1 + g², D]."""
    logits: list[torch.Tensor] = dataclasses.field(default_factory=list)
    """The last stage's attention logits, layer by layer [N, heads, 1 + g², 1 + g²]."""
    grid: int = 0


def resize_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """[B, g², C] patch tokens on a g × g grid → [B, side², C], bilinearly."""
    batch, count, channels = tokens.shape
    grid = int(count**0.5)
    maps = tokens.transpose(1, 2).reshape(batch, channels, grid, grid)
    resized = F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
    return resized.flatten(2).transpose(1, 2)


def upsampling(grid: int, side: int) -> torch.Tensor:
    """The bilinear resize of a ``grid`` × ``grid`` token view to ``side`` × ``side`` as a matrix U
    [1 + side², 1 + grid²], the class token first and kept as it is. Resizing is linear, so tokens are resized
    as U z and attention logits, over queries and keys at once, as U A Uᵀ: two small products where
    interpolating every layer's maps row by row and column by column cost more than the attention itself."""
    patches = resize_tokens(torch.eye(grid * grid).unsqueeze(0), side)[0]
    return torch.block_diag(torch.ones(1, 1), patches)


@dataclass(frozen=True)
class StageView:
    """What a stage shows of its decision: its last layer's attention logits, and the reused relationships it
    was handed (None for a stage that reuses nothing)."""

    last_logits: torch.Tensor
    handed_over: list[torch.Tensor] | None

    def class_attention(self) -> list[float]:
        """The class token's attention to each patch (first image, mean of the heads)."""
        return self.last_logits[0, :, 0].softmax(-1)[:, 1:].mean(0).tolist()

    def class_hint(self) -> list[float]:
        """The reused bias on the class token's logits for each patch (first image, mean of layers and heads)."""
        return torch.stack([bias[0, :, 0, 1:] for bias in self.handed_over]).mean((0, 1)).tolist()


class Stage(nn.Module):
    """One transformer of the cascade over a ``grid`` × ``grid`` token view of the image; given the ``previous``
    stage's grid, it reuses that stage's features and relationships."""

    def __init__(self, config: DVTConfig, grid: int, previous: int | None):
        super().__init__()
        width, hidden = config.width, config.width * config.mlp_ratio
        self.grid, self.side = grid, grid * config.patch
        self.heads = config.heads
        self.embed = nn.Conv2d(3, width, config.patch, config.patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 1 + grid * grid, width) * 0.02)
        reuse = previous is not None
        context = config.context if reuse else 0
        self.layers = nn.ModuleList(
            Layer(width, Attention(width, config.heads), Mlp(width, hidden, context)) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(width)
        self.features = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, context)) if reuse else None
        """f: the previous stage's tokens → the context every MLP reads."""
        relations = config.depth * config.heads
        self.relations = nn.Linear(relations, relations) if reuse else None
        """r: the previous stage's attention logits (layers × heads) → this stage's; its outputs in blocks of
        ``heads``, one block per layer, are the r_l."""
        if reuse:
            self.register_buffer("upsample", upsampling(previous, grid), persistent=False)

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] != self.side:
            image = F.interpolate(image, size=(self.side, self.side), mode="bilinear", antialias=True)
        patches = self.embed(image).flatten(2).transpose(1, 2)
        return torch.cat((self.class_token.expand(len(image), -1, -1), patches), 1) + self.position

    def reused_features(self, state: CascadeState) -> torch.Tensor:
        return self.upsample @ self.features(state.tokens)

    def reused_relations(self, state: CascadeState) -> list[torch.Tensor]:
        stacked = torch.cat(state.logits, 1).permute(0, 2, 3, 1)  # [N, T, T, layers · heads]
        mapped = self.relations(stacked).permute(0, 3, 1, 2)
        return list((self.upsample @ mapped @ self.upsample.T).split(self.heads, 1))

    def forward(self, state: CascadeState) -> CascadeState:
        reuse = self.features is not None and state.tokens is not None
        context = self.reused_features(state) if reuse else None
        biases = self.reused_relations(state) if reuse else [None] * len(self.layers)
        tokens, logits = self.tokens(state.image), []
        for layer, bias in zip(self.layers, biases):
            attended, layer_logits = layer.attention.attend(layer.norm1(tokens), bias)
            tokens = tokens + attended
            normed = layer.norm2(tokens)
            tokens = tokens + layer.mlp(normed if context is None else torch.cat((normed, context), -1))
            logits.append(layer_logits)
        decided(self, StageView(logits[-1], biases if reuse else None))
        return CascadeState(state.image, self.norm(tokens), logits, self.grid)


class DVT(nn.Module):
    """The cascade as a multi-exit network (``start``, ``blocks``, ``exit_features``, ``classifiers``)."""

    def __init__(self, config: DVTConfig):
        super().__init__()
        self.config = config
        previous = (None, *config.grids[:-1]) if config.reuse else (None,) * config.exits
        self.blocks = nn.ModuleList(Stage(config, g, p) for g, p in zip(config.grids, previous))
        self.classifiers = nn.ModuleList(nn.Linear(config.width, config.classes) for _ in config.grids)

    @staticmethod
    def start(x: torch.Tensor) -> CascadeState:
        return CascadeState(x)

    @staticmethod
    def exit_features(state: CascadeState) -> torch.Tensor:
        return state.tokens[:, 0]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return every_exit(self, x)


def about(reuse: bool):
    what = (
        "with feature and relationship reuse: each stage reads the previous one's tokens and attention maps"
        if reuse
        else "without reuse (the plain cascade, DVT's ablation): each stage starts over"
    )
    return about_cifar(
        f"Dynamic Vision Transformer (DVT) for CIFAR-10, {'with' if reuse else 'without'} reuse",
        "sample-wise early exiting over token grids (survey §3.1, with §4.3's resolution adaptation)",
        "A cascade of three transformers over 4×4, 6×6 and 8×8 tokens of the image, each with a calibrated exit: "
        f"easy images are answered from 16 tokens, only hard ones pay for 64; {what}.",
        ("Wang et al., Not all images are worth 16x16 words: dynamic transformers, NeurIPS 2021", VIT_PAPER),
    )


class DVTClassifier(CalibratedExits):
    name = "dvt_cifar"
    about = about(True)
    network = DVT
    config = DVTConfig
    baselines = ("vit_cifar", "dvt_plain_cifar")

    def __init__(self, net: DVT, *args, **kwargs):
        super().__init__(net, *args, **kwargs)
        c = net.config
        twin = VisionTransformer(c.width, c.depth, c.heads, c.mlp_ratio, c.patch, c.classes)
        self.twin_flops = module_macs(twin, (1, 3, CIFAR_SIZE, CIFAR_SIZE))
        self.baseline_flops = {"ViT": self.twin_flops}

    @property
    def flops_full(self) -> float:
        """The densest transformer alone: what every image would cost without the cascade."""
        return self.twin_flops

    def grid_records(self, answered: int, box: Box, memo: Memo) -> tuple[TokenGridRecord, ...]:
        records = []
        for k in range(answered + 1):
            (_, view), grid = memo[k].decisions[0], self.net.config.grids[k]
            hint = rounded(view.class_hint(), 4) if view.handed_over is not None else ()
            records.append(TokenGridRecord(k, grid, box, rounded(view.class_attention(), 4), hint))
        return tuple(records)

    def exit_part_name(self, k: int) -> str:
        grid = self.net.config.grids[k]
        return f"{grid}×{grid} tokens"

    def exit_resolution(self, k: int) -> int:
        return self.net.blocks[k].side

    def explain_layer(self, k: int) -> nn.Module:
        return self.net.blocks[k].embed


@dataclass(frozen=True)
class PlainCascadeConfig(DVTConfig):
    reuse: bool = False


class PlainCascadeClassifier(DVTClassifier):
    name = "dvt_plain_cifar"
    about = about(False)
    config = PlainCascadeConfig
    baselines = ("vit_cifar",)


for _classifier in (DVTClassifier, PlainCascadeClassifier):
    register_model(
        _classifier.name, emits=(ExitRecord, TokenGridRecord), tiny=dataclasses.asdict(_classifier.config.tiny())
    )(_classifier.build)

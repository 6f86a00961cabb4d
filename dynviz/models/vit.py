"""A small vision transformer for CIFAR-10 (Dosovitskiy et al., ICLR 2021): the static twin of the
deformable-attention and mixture-of-experts transformers, which swap one part of its layers.

The 32×32 image is cut into 4×4 patches, an 8×8 grid of tokens, each embedded
linearly with a learned position embedding, behind a class token. A layer is
pre-norm (Xiong et al., 2020):

    x ← x + Attention(LN(x)),    x ← x + MLP(LN(x)),

with multi-head self-attention softmax(Q Kᵀ / √d_h) V written out as matrix
products (so FlopCounterMode prices it, and the weights can be shown), and a
two-layer GELU MLP. The class token's last state gives the logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dynviz.cost import module_macs, stopwatch
from dynviz.inputs import InputImage
from dynviz.models.base import StaticClassifier, StaticOutput
from dynviz.models.cifar import CIFAR_SIZE, TrainedOnCifar, about_cifar, cifar_view
from dynviz.zoo import register_model

PATCH = 4
WIDTH = 128
DEPTH = 6
HEADS = 4
MLP_RATIO = 2


class Attention(nn.Module):
    """Multi-head self-attention over every token."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def attend(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The output, and the attention logits Q Kᵀ / √d_h (+ ``bias``) [N, heads, tokens, tokens]."""
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(n, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if bias is not None:
            logits = logits + bias
        return self.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(n, tokens, dim)), logits

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        return self.attend(x)[0]


class Mlp(nn.Module):
    """Two GELU layers back to ``dim``; ``context`` extra input features ride along (DVT's feature reuse)."""

    def __init__(self, dim: int, hidden: int, context: int = 0):
        super().__init__()
        self.fc1 = nn.Linear(dim + context, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, dim: int, attention: nn.Module, mlp: nn.Module):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = mlp

    def forward(self, x: torch.Tensor, side: int, *mlp_options) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), side)
        return x + self.mlp(self.norm2(x), *mlp_options)


PartFactory = Callable[[int], nn.Module]
"""Layer index → the attention (or MLP) module of that layer."""


class VisionTransformer(nn.Module):
    """``attention`` and ``mlp`` build each layer's parts (default: the plain ones): the dynamic transformers
    are this one with some parts swapped."""

    def __init__(
        self,
        width: int = WIDTH,
        depth: int = DEPTH,
        heads: int = HEADS,
        mlp_ratio: int = MLP_RATIO,
        patch: int = PATCH,
        classes: int = 10,
        attention: PartFactory | None = None,
        mlp: PartFactory | None = None,
    ):
        super().__init__()
        self.config = {"width": width, "depth": depth, "heads": heads, "mlp_ratio": mlp_ratio, "patch": patch}
        """What builds its static twin."""
        self.side = CIFAR_SIZE // patch
        self.embed = nn.Conv2d(3, width, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 1 + self.side**2, width) * 0.02)
        attention = attention or (lambda _: Attention(width, heads))
        mlp = mlp or (lambda _: Mlp(width, width * mlp_ratio))
        self.layers = nn.ModuleList(Layer(width, attention(i), mlp(i)) for i in range(depth))
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        return torch.cat((self.class_token.expand(len(x), -1, -1), patches), 1) + self.position

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(tokens[:, 0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens(x)
        for layer in self.layers:
            x = layer(x, self.side)
        return self.classify(x)


VIT_PAPER = "Dosovitskiy et al., An image is worth 16x16 words, ICLR 2021"


ABOUT = about_cifar(
    "Vision transformer for CIFAR-10 (static)",
    "static reference network",
    f"A {DEPTH}-layer vision transformer of width {WIDTH} over 8×8 patches of 4×4 pixels: every token attends to "
    "every token in every layer, and every image pays the same. The twin of the deformable-attention and "
    "mixture-of-experts transformers, trained with the same recipe.",
    (VIT_PAPER,),
)


class StaticViTCifar(TrainedOnCifar, StaticClassifier, nn.Module):
    name = "vit_cifar"
    about = ABOUT
    network = VisionTransformer

    def __init__(self, net: VisionTransformer):
        super().__init__()
        self.net = self.served(net)
        self.flops = module_macs(self.net, (1, 3, CIFAR_SIZE, CIFAR_SIZE))

    def run(self, image: InputImage, settings: dict[str, float]) -> StaticOutput:
        view = cifar_view(image)
        with stopwatch() as watch:
            logits = self.net(view.tensor())[0]
        return StaticOutput(logits, self.flops, watch.ms, self.name, (view.note,) if view.note else ())


TINY = {"width": 32, "depth": 2, "heads": 2}

register_model(StaticViTCifar.name, tiny=TINY)(StaticViTCifar.build)

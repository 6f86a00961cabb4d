"""Fused inference paths: a backbone's layers as oneDNN's fused convolution kernels, built when a model loads.

At batch size one on a CPU, eager PyTorch runs a CIFAR residual block as seven operations (convolution,
BatchNorm, ReLU, convolution, BatchNorm, add, ReLU), and picks its convolution kernel by shape: for the
16-channel 32×32 blocks a generic im2col + matrix product that takes twice as long per FLOP as the 64-channel
8×8 ones. Time then follows neither the FLOPs nor the decisions a dynamic network makes. A frozen graph
through torch.compile's CPU backend (inductor) is turned into oneDNN's fused kernels: BatchNorm folded into
the convolution's weights, the weights reordered once into oneDNN's blocked layout, the activation and the
residual add done by the convolution kernel itself. This module builds the same kernels directly, without a
compile step (per-block compiled graphs were tried: each call paid 11–15 µs of guards and wrappers, more than
a gate, and ran no faster): a block is two or three calls, each convolution's time follows its FLOPs, and it
is built in milliseconds when the model loads, so no visitor waits for a compiler.

The dense twins run the same kernels, so a dynamic network's realised speed-up is measured against a static
network that is as fast as it can be, not against slow eager code. ``DYNVIZ_COMPILE=0`` (or a torch build
without oneDNN) keeps the eager modules. The fused path computes what the modules compute (tests check the
answers and FlopCounterMode's count, which prices the fused kernels with :data:`dynviz.cost.FORMULAS`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from dynviz.runtime import INFERENCE_THREADS, compiled_paths_wanted


def fusing_enabled() -> bool:
    """Whether inference runs the fused kernels: oneDNN is there and :func:`compiled_paths_wanted`."""
    return compiled_paths_wanted() and torch.backends.mkldnn.is_available()


ACTIVATIONS: dict[type, tuple[str, list[float | None]]] = {
    nn.ReLU: ("relu", [None]),
    nn.ReLU6: ("hardtanh", [0.0, 6.0]),
    type(None): ("none", [None]),
}
"""oneDNN's name and parameters for each activation a convolution is followed by."""


@torch.no_grad()
def folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution and the inference BatchNorm after it as one convolution's weight and bias:
    W' = γ/σ · W and b' = β − γ/σ · μ. The executed paths slice and gather these, not the two layers."""
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    return conv.weight * scale[:, None, None, None], norm.bias - norm.running_mean * scale


def padding_of(conv: nn.Conv2d) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, int]:
    """How ``conv`` pads its input: TF "same" padding (Lite) where it is asymmetric (stride 2), as a function
    applied to the input before a convolution that pads nothing; else the convolution's own padding on every
    side (TF "same" at stride 1 pads (k − 1)/2 on every side, which the kernel does itself, without a copy)."""
    tf_same = hasattr(conv, "pad")
    if tf_same and conv.stride != (1, 1):
        return conv.pad, 0
    return None, (conv.kernel_size[0] - 1) // 2 if tf_same else conv.padding[0]


InputSizes = dict[nn.Conv2d, torch.Size]
"""The size of each convolution's input, for one input size of the network."""


def input_sizes(net: nn.Module, input_shape: tuple[int, ...]) -> InputSizes:
    """What each convolution of ``net`` receives when ``net`` runs an input of ``input_shape``."""
    sizes: InputSizes = {}

    def record(conv: nn.Conv2d, inputs: tuple[torch.Tensor, ...]) -> None:  # a hook's return value replaces inputs
        sizes.setdefault(conv, inputs[0].shape)

    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:  # neither these runs nor the first one of the built path are seen by a FlopCounterMode that is
        # counting the inference the path is built for
        with torch.inference_mode(), _disable_current_modes():
            net(torch.zeros(input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


@dataclass(frozen=True)
class FusedConv:
    """A convolution with its BatchNorm folded in (:func:`folded`) and the activation after it,
    as one oneDNN kernel on channels-last tensors; optionally adding a residual before the activation."""

    weight: torch.Tensor
    """Reordered into oneDNN's blocked layout, once, for the input size it will see: reordered for an unknown
    size, some shapes (Lite1's 1×1 convolutions on 8×8 maps) ran 20–80 times slower."""
    bias: torch.Tensor
    padding: list[int]
    stride: list[int]
    groups: int
    activation: str
    scalars: list[float | None]
    same: Callable[[torch.Tensor], torch.Tensor] | None
    """TF "same" padding (Lite) where it is asymmetric (stride 2), applied to the input; None otherwise."""

    @classmethod
    def of(
        cls, sizes: InputSizes, conv: nn.Conv2d, norm: nn.BatchNorm2d, activation: nn.Module | None = None
    ) -> FusedConv:
        """``conv`` and what follows it, for the input size ``sizes`` recorded for it."""
        weight, bias = folded(conv, norm)
        weight = weight.contiguous(memory_format=torch.channels_last)
        stride, groups = list(conv.stride), conv.groups
        same, side = padding_of(conv)
        padding = [side] * 2
        size = sizes[conv] if same is None else same(torch.zeros(sizes[conv])).shape
        weight = torch.ops.mkldnn._reorder_convolution_weight(weight, padding, stride, [1, 1], groups, list(size))
        name, scalars = ACTIVATIONS[type(activation)]
        return cls(weight, bias.contiguous(), padding, stride, groups, name, scalars, same)

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = self.same(x) if self.same else x
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups,
                self.activation, self.scalars, "",
            )  # fmt: skip
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups,
            "add", 1.0, None if self.activation == "none" else self.activation, self.scalars, "",
        )  # fmt: skip


class FusedBasicBlock:
    """A ResNet basic block, y = ReLU(shortcut(x) + BN(conv₂(ReLU(BN(conv₁ x))))), as two kernels."""

    def __init__(self, block: nn.Module, sizes: InputSizes):
        self.shortcut = block.shortcut
        self.first = FusedConv.of(sizes, block.conv1, block.bn1, nn.ReLU())
        self.second = FusedConv.of(sizes, block.conv2, block.bn2, nn.ReLU())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x).contiguous(memory_format=torch.channels_last)
        return self.second(self.first(x), residual=shortcut)


class FusedMBConv:
    """An MBConv block: expansion, depthwise and projection (adding the identity shortcut) as three kernels."""

    def __init__(self, block: nn.Module, sizes: InputSizes):
        self.expand = None if isinstance(block.expand, nn.Identity) else FusedConv.of(sizes, *block.expand)
        self.depthwise = FusedConv.of(sizes, *block.depthwise)
        self.project = FusedConv.of(sizes, *block.project)
        self.identity_shortcut = block.identity_shortcut

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(self.expand(x) if self.expand else x)
        return self.project(h, residual=x if self.identity_shortcut else None)


def fused_kind(block: nn.Module) -> type | None:
    """How a block fuses, from its parts: a basic block of plain convolutions (not one whose convolution a
    dynamic variant replaced), an MBConv block, or not at all."""
    if type(getattr(block, "conv1", None)) is nn.Conv2d and type(getattr(block, "conv2", None)) is nn.Conv2d:
        return FusedBasicBlock
    if all(hasattr(block, part) for part in ("expand", "depthwise", "project")):
        return FusedMBConv
    return None


class FusedNetwork:
    """A backbone's inference with fused kernels, with the backbone's interface: ``stem``, ``blocks``,
    ``classify`` and the whole network as a call. Feature maps are channels-last throughout.

    The backbones it knows: a convolution–BatchNorm–activation ``stem``, fusable ``blocks``, an optional 1×1
    ``head`` of the same kind (EfficientNet), global average pooling and a linear ``classifier``."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...]):
        sizes = input_sizes(net, input_shape)
        stem = FusedConv.of(sizes, *net.stem)
        self.blocks = [fused_kind(block)(block, sizes) for block in net.blocks]
        head = FusedConv.of(sizes, *net.head) if hasattr(net, "head") else None
        classifier = net.classifier  # not ``net``: the cache of built paths holds this, and must not hold it alive
        self.stem = lambda x: stem(x.contiguous(memory_format=torch.channels_last))
        self.last_map = lambda x: head(x) if head else x
        self.classify = lambda x: classifier(self.last_map(x).mean((2, 3)))
        with torch.inference_mode(), _disable_current_modes():
            self(torch.zeros(input_shape))  # oneDNN creates its kernels at their first call (37 ms for Lite0's 13)

    @staticmethod
    def fits(net: nn.Module) -> bool:
        parts = ("stem", "blocks", "classifier")
        return all(hasattr(net, part) for part in parts) and all(fused_kind(block) for block in net.blocks)

    def through_blocks(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling (EfficientNet's ``features``)."""
        return self.last_map(self.through_blocks(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.through_blocks(x))


@dataclass(frozen=True)
class Built:
    """A network's fused paths, one per input shape and number of threads, and the weights they were built
    from, with their versions then."""

    paths: dict[tuple[tuple[int, ...], int], FusedNetwork]
    weights: tuple[torch.Tensor, ...]
    """The ones that can change: inference tensors have no version counter, and cannot be trained."""
    version: int


_built: weakref.WeakKeyDictionary[nn.Module, Built] = weakref.WeakKeyDictionary()
_building = threading.Lock()


def weights_version(weights: tuple[torch.Tensor, ...]) -> int:
    """Changes whenever one of ``weights`` is written in place (an optimiser step, loading weights): the sum of
    their version counters."""
    return sum(t._version for t in weights)


def inference_path(net: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | FusedNetwork:
    """What inference on ``net`` runs for inputs of ``input_shape``: its fused kernels where
    :func:`fusing_enabled` and ``net`` is a backbone this module knows (:meth:`FusedNetwork.fits`), else ``net``
    itself. Built once per input shape and number of torch threads (a few milliseconds), and again if the
    network's weights have changed: oneDNN lays the weights out for the threads a kernel may use, and a path
    built for two threads and run on one reordered its weights at every call (Lite1: 112 ms against 23)."""
    if not fusing_enabled():
        return net
    key = (tuple(input_shape), torch.get_num_threads())
    built = _built.get(net)
    if built is not None and key in built.paths and weights_version(built.weights) == built.version:
        return built.paths[key]
    if not FusedNetwork.fits(net):
        return net
    with _building:
        weights = tuple(t for t in (*net.parameters(), *net.buffers()) if not t.is_inference())
        version = weights_version(weights)
        if built is None or built.version != version:
            _built[net] = built = Built({}, weights, version)
        path = built.paths[key] = FusedNetwork(net, key[0])
    return path


def build_at_load(net: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Build ``net``'s fused path for ``input_shape`` as its model loads, for the threads inference runs on
    (:data:`dynviz.runtime.INFERENCE_THREADS`, whatever the loading thread uses), so that the first request
    finds it built."""
    threads = torch.get_num_threads()
    torch.set_num_threads(INFERENCE_THREADS)
    try:
        inference_path(net, input_shape)
    finally:
        torch.set_num_threads(threads)

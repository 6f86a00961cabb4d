"""Shared fixtures: generated images only (no ../shared), and one model per session."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynviz.data import LabelledFile
from dynviz.inputs import InputImage, load_image
from dynviz.models.dynconv import DynConvNetwork, DynConvResNetCifar
from dynviz.models.efficientnet_lite import BlockSpec, EfficientNetLite
from dynviz.zoo import create_model, ready_to_serve, tiny_config

# The apps under test load the models they need; the server's background warm-up of every model would only
# compete with them for the two cores.
os.environ["DYNVIZ_WARM_UP"] = "0"

SLOW_MODULES = {"test_app", "test_browser", "test_cli", "test_cascade"}
"""Modules that run the app, the CLI or the bundled networks on every test."""
REAL_WEIGHT_FIXTURES = {"cascade"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as slow every test that loads bundled weights or runs the app: ``pytest -m "not slow"`` runs the
    rest (tiny untrained networks, generated inputs) in under a minute; plain ``pytest tests`` runs all."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.module.__name__ in SLOW_MODULES or fixtures & REAL_WEIGHT_FIXTURES:
            item.add_marker(pytest.mark.slow)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def tiny_lite(classes: int = 10) -> EfficientNetLite:
    """An untrained three-block EfficientNet-Lite: an MBConv without expansion, a strided one, a 5×5 one."""
    specs = [BlockSpec(8, 8, 8, 3, 1), BlockSpec(8, 12, 48, 3, 2), BlockSpec(12, 12, 72, 5, 1)]
    return EfficientNetLite(specs, stem=8, head=32, num_classes=classes).eval()


def tiny_dynconv(backbone: torch.nn.Module, seed: int = 1) -> DynConvResNetCifar:
    """DynConv on a tiny untrained backbone, served on CIFAR's input, with mask units and norms given weights
    (untrained, they are nearly uniform) so that masks and values vary."""
    net = DynConvNetwork(backbone)
    torch.manual_seed(seed)
    for unit in net.masks.values():
        torch.nn.init.normal_(unit.conv.weight, std=2.0 / 3)  # nine taps
        torch.nn.init.normal_(unit.conv.bias, std=1.0)
        torch.nn.init.normal_(unit.context.weight, std=1.0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_()
            module.bias.data.normal_()
    return ready_to_serve(DynConvResNetCifar(net))


def tiny(name: str):
    """The zoo's model ``name`` in its tiny configuration, untrained."""
    return create_model(name, pretrained=False, **tiny_config(name))


def pattern(width: int = 96, height: int = 72, seed: int = 0) -> Image.Image:
    """A small deterministic colour image with some structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = rng.integers(0, 255, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def labelled_patterns(folder: Path, labels: Sequence[int]) -> list[LabelledFile]:
    """32×32 PNG patterns written to ``folder``, one per label, as an evaluation set."""
    files = []
    for i, label in enumerate(labels):
        path = folder / f"{i}.png"
        path.write_bytes(encode(pattern(32, 32, seed=i), "PNG"))
        files.append(LabelledFile(path, label))
    return files


@pytest.fixture(scope="session")
def photo() -> InputImage:
    return load_image(encode(pattern(), "JPEG"), "pattern.jpg")


@pytest.fixture(scope="session")
def cascade():
    return create_model("lite_cascade")

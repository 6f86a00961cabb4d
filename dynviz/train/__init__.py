"""Recipes that produce the bundled weights: ``python -m dynviz train NAME``."""

import functools

from dynviz.train import distill, gated, lite_cascade, msdnet, resnet_cifar
from dynviz.train.loop import TrainOptions

RECIPES = {
    "lite_cascade": lite_cascade.calibrate,
    "msdnet_cifar": msdnet.train,
    "skip_resnet_cifar": gated.train_skip,
    "channel_gate_resnet_cifar": gated.train_channel_gate,
    "lite0_skip": distill.train_lite0_skip,
    "lite0_channels": distill.train_lite0_channels,
    **{f"resnet{d}_cifar": functools.partial(resnet_cifar.train, d) for d in (20, 32, 56)},
}

__all__ = ["RECIPES", "TrainOptions"]

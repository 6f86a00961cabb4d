"""Recipes that produce the bundled weights: ``python -m dynviz train NAME``."""

import functools

from dynviz.models.msdnet import MSDNetClassifier
from dynviz.models.ranet import RANetClassifier
from dynviz.train import distill, gated, gfnet, lite_cascade, multi_exit, resnet_cifar
from dynviz.train.loop import TrainOptions

RECIPES = {
    "lite_cascade": lite_cascade.calibrate,
    "msdnet_cifar": functools.partial(multi_exit.train, MSDNetClassifier),
    "ranet_cifar": functools.partial(multi_exit.train, RANetClassifier),
    "skip_resnet_cifar": gated.train_skip,
    "channel_gate_resnet_cifar": gated.train_channel_gate,
    "dynconv_resnet_cifar": gated.train_dynconv,
    "lite0_skip": distill.train_lite0_skip,
    "lite0_dynconv": distill.train_lite0_dynconv,
    "gfnet_lite0": gfnet.train,
    "lite0_channels": distill.train_lite0_channels,
    **{f"resnet{d}_cifar": functools.partial(resnet_cifar.train, d) for d in (20, 32, 56)},
}

__all__ = ["RECIPES", "TrainOptions"]

"""Recipes for the CIFAR-10 networks trained from scratch with the shared schedule: the static ResNets and
vision transformer, and the dynamic-parameter networks measured against them (deformable convolution,
CondConv, deformable attention, mixture of experts)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from PIL import Image
from torch import nn

from dynviz.cards import ModelCard
from dynviz.inputs import InputImage
from dynviz.models.base import DynamicModel
from dynviz.models.cifar import CIFAR_SIZE
from dynviz.models.condconv import CondConvResNetCifar, condconv_resnet
from dynviz.models.dat import DATCifar, DeformableVisionTransformer
from dynviz.models.dcn import DeformableResNetCifar, deformable_resnet
from dynviz.models.moe import MoEVisionTransformer, MoEViTCifar, balance_regularizer
from dynviz.models.resnet_cifar import ResNetCifar, StaticResNetCifar
from dynviz.models.vit import StaticViTCifar, VisionTransformer
from dynviz.train.cifar import save_weights, train_on_cifar, validation_metadata
from dynviz.train.loop import Regularizer, TrainOptions
from dynviz.train.losses import exit_losses

BLANK = InputImage("blank", Image.new("RGB", (CIFAR_SIZE, CIFAR_SIZE)), "blank")


def train_network(
    name: str,
    net: nn.Module,
    serve: Callable[[nn.Module], DynamicModel],
    options: TrainOptions,
    regularizer: Regularizer | None = None,
) -> ModelCard:
    """Train ``net`` by the shared CIFAR recipe and save its weights and the head of its card; ``serve`` makes
    the zoo's model of it, which says what it is and what its static counterpart costs."""
    history, _ = train_on_cifar(name, net, exit_losses, options, regularizer)
    model = serve(net)
    with torch.inference_mode():
        flops_full = model.analyze(BLANK).cost.flops_full
    return save_weights(
        name, net.state_dict(), model.about, flops_full, model.default_point, validation_metadata(history)
    )


def recipe(name: str, network: Callable[[], nn.Module], serve: Callable, regularizer: Regularizer | None = None):
    """``python -m dynviz train name``: a fresh ``network()``, trained and served by ``serve``."""
    return lambda options: train_network(name, network(), serve, options, regularizer)


RECIPES = {
    **{
        f"resnet{d}_cifar": recipe(
            f"resnet{d}_cifar", functools.partial(ResNetCifar, d), functools.partial(StaticResNetCifar, d)
        )
        for d in (20, 32, 56)
    },
    "vit_cifar": recipe("vit_cifar", VisionTransformer, StaticViTCifar),
    "dcn_resnet_cifar": recipe("dcn_resnet_cifar", deformable_resnet, DeformableResNetCifar),
    "condconv_resnet_cifar": recipe("condconv_resnet_cifar", condconv_resnet, CondConvResNetCifar),
    "dat_cifar": recipe("dat_cifar", DeformableVisionTransformer, DATCifar),
    "moe_vit_cifar": recipe("moe_vit_cifar", MoEVisionTransformer, MoEViTCifar, balance_regularizer),
}

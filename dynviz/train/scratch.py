"""Recipes for the CIFAR-10 networks trained with the shared schedule: the static ResNets and vision
transformer from scratch, and the dynamic-parameter networks measured against them: CondConv, deformable
attention from scratch; deformable convolution and the mixture of experts from their trained twins, as DCN
and DCNv2 add deformable layers to a trained network and fine-tune it, and Sparse Upcycling turns a trained
dense transformer into a mixture of experts."""

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
from dynviz.models.dcn import DEPTH as DCN_DEPTH
from dynviz.models.dcn import DeformableResNetCifar, make_deformable
from dynviz.models.moe import MoEViTCifar, balance_regularizer, upcycle
from dynviz.models.resnet_cifar import DEPTHS, ResNetCifar, StaticResNetCifar, resnet_name
from dynviz.models.vit import StaticViTCifar, VisionTransformer
from dynviz.train.cifar import fine_tune_schedule, save_weights, train_on_cifar, trained, validation_metadata
from dynviz.train.loop import Regularizer, Schedule, TrainOptions
from dynviz.train.losses import exit_losses

FINE_TUNE_EPOCHS = 10
"""Of a network that starts from its trained twin (DCN, the mixture of experts)."""
BLANK = InputImage("blank", Image.new("RGB", (CIFAR_SIZE, CIFAR_SIZE)), "blank")


def train_network(
    name: str,
    net: nn.Module,
    serve: Callable[[nn.Module], DynamicModel],
    options: TrainOptions,
    regularizer: Regularizer | None = None,
    fine_tune: Schedule | None = None,
) -> ModelCard:
    """Train ``net`` by the shared CIFAR recipe (or the ``fine_tune`` schedule, for a network that starts from
    a trained one) and save its weights and the head of its card; ``serve`` makes the zoo's model of it, which
    says what it is and what its static counterpart costs."""
    history, _ = train_on_cifar(name, net, exit_losses, options, regularizer, fine_tune)
    model = serve(net)
    with torch.inference_mode():
        flops_full = model.analyze(BLANK).cost.flops_full
    return save_weights(
        name, net.state_dict(), model.about, flops_full, model.default_point, validation_metadata(history)
    )


def recipe(name: str, network: Callable[[], nn.Module], serve: Callable):
    """``python -m dynviz train name``: a fresh ``network()``, trained and served by ``serve``."""
    return lambda options: train_network(name, network(), serve, options)


def train_dcn(options: TrainOptions) -> ModelCard:
    """The trained ResNet-20 made deformable (starting as itself), fine-tuned on the labels."""
    net = make_deformable(trained("resnet20_cifar", ResNetCifar(DCN_DEPTH)))
    schedule = fine_tune_schedule(options, FINE_TUNE_EPOCHS)
    return train_network(DeformableResNetCifar.name, net, DeformableResNetCifar, options, fine_tune=schedule)


def train_moe(options: TrainOptions) -> ModelCard:
    """The trained vision transformer upcycled to a mixture of experts (starting as itself), fine-tuned on the
    labels with the load-balancing loss."""
    net = upcycle(trained("vit_cifar", VisionTransformer()))
    schedule = fine_tune_schedule(options, FINE_TUNE_EPOCHS)
    return train_network(MoEViTCifar.name, net, MoEViTCifar, options, balance_regularizer, schedule)


RECIPES = {
    **{
        resnet_name(d): recipe(
            resnet_name(d), functools.partial(ResNetCifar, d), functools.partial(StaticResNetCifar, d)
        )
        for d in DEPTHS
    },
    "vit_cifar": recipe("vit_cifar", VisionTransformer, StaticViTCifar),
    "dcn_resnet_cifar": train_dcn,
    "condconv_resnet_cifar": recipe("condconv_resnet_cifar", condconv_resnet, CondConvResNetCifar),
    "dat_cifar": recipe("dat_cifar", DeformableVisionTransformer, DATCifar),
    "moe_vit_cifar": train_moe,
}

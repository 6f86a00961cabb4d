"""Recipe for the static CIFAR ResNets: the shared CIFAR schedule on one exit's cross-entropy."""

from __future__ import annotations

from dynviz.models.resnet_cifar import ResNetCifar, StaticResNetCifar, about
from dynviz.train.cifar import (
    checkpoint_path,
    load_train_split,
    prepare,
    save_weights,
    schedule,
)
from dynviz.train.loop import TrainOptions, fit
from dynviz.train.losses import exit_losses
from dynviz.zoo import ModelCard


def train(depth: int, options: TrainOptions) -> ModelCard:
    name = f"resnet{depth}_cifar"
    train_set, validation = load_train_split(options)
    net = ResNetCifar(depth)
    (accuracy,) = fit(
        net,
        exit_losses,
        train_set,
        validation,
        prepare,
        schedule(options),
        checkpoint_path(name),
        options.device,
        options.resume,
    )
    flops = StaticResNetCifar(depth, net).flops
    metadata = {"validation_accuracy": f"{accuracy:.4f}"}
    return save_weights(name, net.state_dict(), about(depth), flops, "static", metadata)

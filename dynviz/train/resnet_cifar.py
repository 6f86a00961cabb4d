"""Recipe for the static CIFAR ResNets: the shared CIFAR schedule on one exit's cross-entropy."""

from __future__ import annotations

from dynviz.cards import ModelCard
from dynviz.models.resnet_cifar import ResNetCifar, StaticResNetCifar, about
from dynviz.train.cifar import save_weights, train_on_cifar, validation_metadata
from dynviz.train.loop import TrainOptions
from dynviz.train.losses import exit_losses


def train(depth: int, options: TrainOptions) -> ModelCard:
    name = f"resnet{depth}_cifar"
    net = ResNetCifar(depth)
    history, _ = train_on_cifar(name, net, exit_losses, options)
    flops = StaticResNetCifar(depth, net).flops
    metadata = validation_metadata(history)
    return save_weights(name, net.state_dict(), about(depth), flops, "static", metadata)

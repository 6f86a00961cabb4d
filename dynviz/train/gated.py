"""Recipes for the gated CIFAR models: the shared CIFAR schedule, from scratch, on

    L = CE(z, y) + λ · L_rate(g; t)

(:func:`dynviz.train.losses.execution_rate_loss`), with λ = 2 and each model's
target rate t. The gates make hard Gumbel decisions in training, so the
network learns to work with blocks or channels really switched off.
"""

from __future__ import annotations

from torch import nn

from dynviz.models import channel_gating, skip
from dynviz.models.gates import DEFAULT_POINT
from dynviz.train.cifar import save_weights, train_on_cifar
from dynviz.train.loop import Regularizer, TrainOptions
from dynviz.train.losses import execution_rate_loss, exit_losses
from dynviz.zoo import ModelCard

RATE_WEIGHT = 2.0


def rate_penalty(target: float) -> Regularizer:
    return lambda output: RATE_WEIGHT * execution_rate_loss(output.gates, target)


def save_gated(net: nn.Module, model: type, metadata: dict[str, str]) -> ModelCard:
    """The gated network's weights and its card's head, with the static twin's FLOPs."""
    built = model(net)
    return save_weights(model.name, net.state_dict(), built.about, built.flops_full, DEFAULT_POINT, metadata)


def train_gated(name: str, net: nn.Module, target: float, options: TrainOptions, model: type) -> ModelCard:
    (accuracy,), _ = train_on_cifar(name, net, exit_losses, options, rate_penalty(target))
    return save_gated(net, model, {"validation_accuracy": f"{accuracy:.4f}", "target_rate": str(target)})


def train_skip(options: TrainOptions) -> ModelCard:
    net = skip.SkipNetwork(skip.SkipResNetCifar.backbone())
    return train_gated(skip.SkipResNetCifar.name, net, skip.TARGET_RATE, options, skip.SkipResNetCifar)


def train_channel_gate(options: TrainOptions) -> ModelCard:
    name = channel_gating.ChannelGateResNetCifar.name
    net = channel_gating.ChannelGatedNetwork(channel_gating.ChannelGateResNetCifar.backbone())
    return train_gated(name, net, channel_gating.TARGET_RATE, options, channel_gating.ChannelGateResNetCifar)

"""Recipes for the gated CIFAR models, on

    L = CE(z, y) + λ · L_rate(g; t)

(:func:`dynviz.train.losses.execution_rate_loss`) with each model's target rate
t. The gates make hard Gumbel decisions in training, so the network learns to
work with blocks, channels or positions really switched off.

- Layer skipping and channel gating: the shared CIFAR schedule, from scratch, λ = 2.
- Pixel masks (DynConv): initialised from the trained resnet32_cifar and
  fine-tuned for :data:`FINE_TUNE_EPOCHS` at a lower learning rate, with
  λ = 5 on each block's share of its FLOPs (DynConv's sparsity criterion). A
  trained network resists losing work, so the pull must be stronger.
"""

from __future__ import annotations

from torch import nn

from dynviz.models import channel_gating, dynconv, skip
from dynviz.models.gates import DEFAULT_POINT
from dynviz.models.resnet_cifar import ResNetCifar
from dynviz.train.cifar import save_weights, train_on_cifar
from dynviz.train.loop import Regularizer, Schedule, TrainOptions
from dynviz.train.losses import execution_rate_loss, exit_losses
from dynviz.zoo import ModelCard, load_weights

RATE_WEIGHT = 2.0
SPARSITY_WEIGHT = 5.0
FINE_TUNE_EPOCHS = 12
FINE_TUNE_LR = 0.05


def rate_penalty(target: float, weight: float = RATE_WEIGHT) -> Regularizer:
    return lambda output: weight * execution_rate_loss(output.gates, target)


def save_gated(net: nn.Module, model: type, metadata: dict[str, str]) -> ModelCard:
    """The gated network's weights and its card's head, with the static twin's FLOPs."""
    built = model(net)
    return save_weights(model.name, net.state_dict(), built.about, built.flops_full, DEFAULT_POINT, metadata)


def train_gated(
    name: str,
    net: nn.Module,
    target: float,
    options: TrainOptions,
    model: type,
    weight: float = RATE_WEIGHT,
    fine_tune: Schedule | None = None,
) -> ModelCard:
    (accuracy,), _ = train_on_cifar(name, net, exit_losses, options, rate_penalty(target, weight), fine_tune)
    return save_gated(net, model, {"validation_accuracy": f"{accuracy:.4f}", "target_rate": str(target)})


def train_skip(options: TrainOptions) -> ModelCard:
    net = skip.SkipNetwork(skip.SkipResNetCifar.backbone())
    return train_gated(skip.SkipResNetCifar.name, net, skip.TARGET_RATE, options, skip.SkipResNetCifar)


def train_channel_gate(options: TrainOptions) -> ModelCard:
    name = channel_gating.ChannelGateResNetCifar.name
    net = channel_gating.ChannelGatedNetwork(channel_gating.ChannelGateResNetCifar.backbone())
    return train_gated(name, net, channel_gating.TARGET_RATE, options, channel_gating.ChannelGateResNetCifar)


def train_dynconv(options: TrainOptions) -> ModelCard:
    backbone = ResNetCifar(32)
    backbone.load_state_dict(load_weights("resnet32_cifar")[0])
    model = dynconv.DynConvResNetCifar
    fine_tune = Schedule(epochs=options.epochs or FINE_TUNE_EPOCHS, peak_lr=FINE_TUNE_LR)
    net = dynconv.DynConvNetwork(backbone)
    return train_gated(model.name, net, dynconv.TARGET_RATE, options, model, SPARSITY_WEIGHT, fine_tune)
